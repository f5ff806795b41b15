// `zerotrain estimate`: per-GPU memory of a run for each ZeRO stage, and which options fit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/config.h"
#include "zero/memory_estimate.h"

namespace zt::launch {

struct EstimateArgs {
  zero::EstimateInput input;
  bool offload = false;  // also show stages 1-3 with the optimizer in host memory
};

// Sets what a training config decides in `input`: the model shape, micro-batch, sequence length,
// precision (16-bit only), activation checkpointing, kept blocks and bucket size.
void apply_run_config(const RunConfig& config, zero::EstimateInput& input);

// Parses the flags after `estimate`; throws zt::UserError naming a bad flag or value.
EstimateArgs parse_estimate_args(const std::vector<std::string>& args);
std::string estimate_usage_text();
// The report `zerotrain estimate` prints.
std::string run_estimate(const EstimateArgs& args);

// "80GiB", "512 GB", "1.5TiB", "1000000" (bytes); throws zt::UserError naming `flag`.
int64_t parse_byte_size(const std::string& flag, const std::string& text);

}  // namespace zt::launch
