// Per-rank memory estimate of a run for each ZeRO stage (and optimizer offload), from the same
// flat layout the engine uses, so the model-state figures equal what a run reports.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/dtype.h"

namespace zt::zero {

struct EstimateInput {
  model::GptjConfig model;
  int gpus = 1;                // ranks, one per GPU
  int gpus_per_node = 8;       // ranks sharing one host's memory
  DType precision = DType::kBF16;
  int64_t micro_batch = 1;
  int64_t seq_len = 2048;
  bool activation_checkpointing = true;
  int64_t keep_activations = 0;  // with checkpointing: the last N blocks keep their activations
  int64_t bucket_elements = 25'000'000;
  // Offload rows without offload_params: zero.delayed_update_from_step > 0 keeps a second host
  // gradient shard.
  bool delayed_update = false;
  int64_t gpu_bytes = int64_t(80) << 30;   // per GPU
  int64_t cpu_bytes = int64_t(512) << 30;  // per node
};

struct StageEstimate {
  int stage = 0;
  bool offload = false;         // fp32 master and Adam moments in host memory
  bool offload_params = false;  // stage 3: the 16-bit parameter shard in host memory too
  // Per GPU (rank):
  int64_t params = 0;       // the parameters the model reads (full or shard)
  int64_t grads = 0;        // kept gradients (full or shard)
  int64_t optimizer = 0;    // fp32 master + moments on the GPU (0 with offload)
  int64_t activations = 0;  // saved activations of one micro-batch, plus the logits
  int64_t buffers = 0;      // transient: gathered layers, layer gradients before reduction
  int64_t gpu_total() const { return params + grads + optimizer + activations + buffers; }
  // Per node: the offloaded optimizer state of the node's ranks, their host copy of the gradient
  // shard and (offload_params) their parameter shard (0 without offload).
  int64_t cpu_per_node = 0;
  bool fits_gpu = false;
  bool fits_cpu = false;
  // The most blocks model.keep_activations may keep, with activation checkpointing on, while the
  // GPU still fits (n_layer: every block, as with checkpointing off); -1 when it does not fit
  // even with every block recomputed.
  int64_t max_keep_activations = -1;
};

// Stages 0-3 without offload, then (when `with_offload`) stages 1-3 with the optimizer offloaded
// and stage 3 with the parameters offloaded as well.
// A GPU fits when its total stays under 95% of gpu_bytes (the rest is the CUDA context, NCCL
// buffers and allocator slack).
std::vector<StageEstimate> estimate_memory(const EstimateInput& input, bool with_offload);

// What each block of model.keep_activations adds to the activations: its saved tensors but the
// input, which checkpointing keeps anyway.
int64_t kept_block_bytes(const EstimateInput& input);

// From a run's measured peak (bytes per GPU, `keep` blocks kept of `n_layer`): the most blocks
// model.keep_activations could keep while the peak stays under the estimator's usable share of
// gpu_bytes, each adding `per_block`; `keep` when no more fit. Going from n_layer - 1 to n_layer
// costs nothing (the shared recompute area goes), so n_layer - 1 becomes n_layer.
int64_t max_keep_from_peak(int64_t peak, int64_t gpu_bytes, int64_t per_block, int64_t keep,
                           int64_t n_layer);

// Activation bytes of one micro-batch on one rank (the CUDA backend's layout: 16-bit activations,
// flash attention keeping only per-row softmax statistics, 16-bit logits that their gradient
// overwrites).
int64_t activation_bytes(const EstimateInput& input);

// The estimate as a text table (for `zerotrain estimate`) and as Markdown (docs/zero.md).
std::string format_estimate_table(const EstimateInput& input, const std::vector<StageEstimate>& rows);
std::string format_estimate_markdown(const EstimateInput& input, const std::vector<StageEstimate>& rows);

}  // namespace zt::zero
