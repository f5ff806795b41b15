// Checkpoints of a training run: where train.checkpoint_dir keeps them, the settings an exact
// resume must not change, and finding the checkpoint a run resumes from.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "datasets/sampler.h"
#include "launch/config.h"

namespace zt::launch {

// Note "trainer checkpoints": train.checkpoint_dir holds step-NNNNNNNN folders (engine
// checkpoints, zero/checkpoint.h) and `latest`, a text file naming the newest complete one, moved
// (latest.tmp + rename) only after its save completed. Beside the engine state, meta.extra holds
// what an exact resume needs: the HDF5 sampler state ("data.*"), a fingerprint of the settings
// that must not change ("fingerprint.*"; the model shape and precision are checked by
// zero::check_resumable) and the optimizer settings a resume warns about changing ("setting.*").

// Where a run continues from.
struct ResumePoint {
  std::string dir;
  int64_t step = 0;
  std::optional<datasets::SamplerState> data_state;  // HDF5 data
};

// The settings a resume must not change, as meta.extra entries ("fingerprint.*").
std::map<std::string, std::string> checkpoint_fingerprint(const RunConfig& c, int world);

// The settings a resume may change but should say it does: every [optimizer] and [fp16] key, as
// meta.extra entries ("setting.optimizer.lr" = "0.0003"). find_resume_point warns about each one
// that differs (a new learning rate, schedule or clipping makes it another run from there on).
std::map<std::string, std::string> checkpoint_settings(const RunConfig& c);

// "step-NNNNNNNN", the folder of the checkpoint saved after `step`.
std::string step_dir_name(int64_t step);

// The complete checkpoint that checkpoint_dir/latest names, or "" when there is no `latest`.
// Throws zt::UserError (starting with `what`) when `latest` names no complete checkpoint.
std::string latest_checkpoint(const std::string& checkpoint_dir, const std::string& what);

// Where a run continues from (nullopt: it starts fresh). Reads the checkpoint's manifest only, so
// every problem shows before anything is written: a missing or incomplete checkpoint, one at or
// past train.steps, a changed fingerprint. Throws zt::UserError.
std::optional<ResumePoint> find_resume_point(const RunConfig& config, int world);

// Writes DIR/latest naming `name`: latest.tmp first (synced), then a rename, so `latest` always
// names a complete checkpoint.
void publish_latest(const std::filesystem::path& dir, const std::string& name);

// Deletes the step folders beyond the newest `keep_last` at or before `step`, never `keep`
// (the one `latest` names). Later steps (left by a run this one resumed from an earlier point)
// are left for this run's own saves to replace.
void prune_checkpoints(const std::filesystem::path& dir, int64_t keep_last, int64_t step,
                       const std::string& keep);

}  // namespace zt::launch
