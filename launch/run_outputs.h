// What a run writes to train.out_dir: config.toml (the resolved config) and metrics.jsonl (one
// line per step). A run never overwrites another run's outputs unless train.overwrite is set,
// with one exception: a run that resumes from its own checkpoints continues its outputs. "Its
// own" means train.resume is set and out_dir's config.toml names the same train.checkpoint_dir,
// so relaunching an interrupted (or preempted) job with the same command and
// train.resume = "auto" just works. The continued metrics.jsonl keeps its lines up to the
// checkpoint's step, drops those of the steps after it (they run again) and gets the new steps
// appended; their elapsed_s counts from the relaunch. With no checkpoint yet (stopped before its
// first save) the run starts over: every line goes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "launch/config.h"
#include "launch/metrics.h"

namespace zt::launch {

// Throws zt::UserError (nothing written) when out_dir already holds a run that this one may
// neither replace (train.overwrite) nor continue (see above), or is a file. Rank 0 calls it
// before training starts, and open_run_outputs checks again.
void check_out_dir(const TrainSection& train);

// Rank 0, once the checkpoint the run resumes from is known (`resume_step`: its step, or none
// for a fresh start): checks out_dir again, creates it, writes config.toml (`resolved`), and
// opens metrics.jsonl, continued or new.
MetricsWriter open_run_outputs(const TrainSection& train, const std::string& resolved,
                               std::optional<int64_t> resume_step);

// Rewrites the metrics file at `path` (through a temporary file and a rename) without its lines
// of steps after `step` and without a last line cut short by a crash; lines it cannot read a
// step from are kept. Returns how many lines went.
int64_t drop_metrics_after(const std::string& path, int64_t step);

}  // namespace zt::launch
