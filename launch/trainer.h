// The training loop: builds model, engine and data from a RunConfig and runs the steps.
#pragma once

#include <cstdint>
#include <vector>

#include "launch/config.h"
#include "launch/metrics.h"

namespace zt::launch {

struct TrainSummary {
  std::vector<StepMetrics> steps;  // every step, in order
  int64_t num_params = 0;
  double loss_floor = 0.0;         // the synthetic corpus's entropy rate (nats/token)
};

// Runs the job: prints the resolved config, writes <out_dir>/config.toml and
// <out_dir>/metrics.jsonl, logs every train.log_every steps (and the last), returns the metrics.
// Refuses (zt::UserError, nothing written) when out_dir already holds a run and
// train.overwrite is false.
TrainSummary train(const RunConfig& config);

}  // namespace zt::launch
