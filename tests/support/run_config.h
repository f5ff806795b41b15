// A small CPU training run for trainer tests: gptj-tiny on the synthetic corpus, outputs in DIR/run;
// and a hook that stops a run midway, as a crash would.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "launch/config.h"
#include "launch/trainer.h"

namespace zt::testing {

inline launch::RunConfig tiny_run_config(const std::string& dir, int64_t steps) {
  launch::RunConfig c = launch::parse_config("", "test", {});
  c.train.steps = steps;
  c.train.out_dir = (std::filesystem::path(dir) / "run").string();
  c.train.log_every = 1000;
  c.train.micro_batch_size = 2;
  c.train.seq_len = 16;
  c.train.device = "cpu";
  c.optimizer.warmup_steps = 3;
  return c;
}

// Thrown by interrupt_at's hook.
struct Interrupted {};

// Makes the run of `options` throw Interrupted in step `step`, before its optimizer update (after
// that step's forward and backward); step <= 0 leaves the run uninterrupted.
inline void interrupt_at(launch::TrainOptions& options, int64_t step) {
  if (step > 0)
    options.before_optimizer_step = [step](int64_t s, zero::Engine&) {
      if (s == step) throw Interrupted{};
    };
}

}  // namespace zt::testing
