// A small CPU training run for trainer tests: gptj-tiny on the synthetic corpus, outputs in DIR/run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "launch/config.h"

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

}  // namespace zt::testing
