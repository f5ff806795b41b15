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
  // model.keep_activations = "auto" (--keep-activations auto): each row keeps its own `max keep`
  // blocks, as a run would, and the report says so.
  bool keep_auto = false;
};

// Sets what a training config decides in `input`: the model shape, micro-batch, sequence length,
// precision (16-bit only), activation checkpointing, kept blocks (0 for "auto") and bucket size.
void apply_run_config(const RunConfig& config, zero::EstimateInput& input);

// The estimate of a run of `config` on `world` ranks with GPUs of `gpu_bytes` each, from the row
// of its stage and offload (as `zerotrain estimate --gpu-mem gpu_bytes` prints it): the blocks
// that keep their activations (the config's count, or for model.keep_activations = "auto" the
// row's `max keep`, 0 when even recomputing every block does not fit or checkpointing is off),
// the estimated peak per GPU with them, and whether it stays under 95% of gpu_bytes.
struct RunMemory {
  int64_t keep = 0;
  int64_t gpu_total = 0;
  bool fits = false;
};
RunMemory estimate_run_memory(const RunConfig& config, int world, int64_t gpu_bytes);

// Parses the flags after `estimate`; throws zt::UserError naming a bad flag or value.
EstimateArgs parse_estimate_args(const std::vector<std::string>& args);
std::string estimate_usage_text();
// The report `zerotrain estimate` prints.
std::string run_estimate(const EstimateArgs& args);

// "80GiB", "512 GB", "1.5TiB", "1000000" (bytes); throws zt::UserError naming `flag`.
int64_t parse_byte_size(const std::string& flag, const std::string& text);

}  // namespace zt::launch
