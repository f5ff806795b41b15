// The GPT-J model interface: forward, forward+backward with optional activation recompute, and
// logits; parameters come from a ParamProvider (model/provider.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/config.h"
#include "model/provider.h"
#include "runtime/dtype.h"
#ifdef ZT_WITH_CUDA
#include "runtime/cuda/context.h"
#endif

namespace zt::model {

// Token ids of one micro-batch, row-major [batch_size, seq_len]. targets[b, t] is the token that
// should follow inputs[b, t] (already shifted, unlike Hugging Face's `labels`); -100 = ignore.
struct Batch {
  const int32_t* inputs = nullptr;
  const int32_t* targets = nullptr;
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  int64_t tokens() const { return batch_size * seq_len; }
};

// Sum of per-token cross-entropy losses and the number of tokens counted (targets != -100).
struct LossSum {
  double sum = 0.0;
  int64_t count = 0;
  double mean() const { return count > 0 ? sum / double(count) : 0.0; }
};

// A micro-batch queued by queue_forward_backward whose loss has not been read yet.
struct LossTicket {
  int64_t id = -1;
};

struct ModelOptions {
  // Keep only each block's input in forward and recompute the block in backward.
  bool activation_checkpointing = false;
  // Activations and arithmetic: kF32 for training; kF64 for the CPU reference in gradient checks.
  DType compute_dtype = DType::kF32;
  // With activation_checkpointing: the last keep_activations blocks keep their activations from
  // the forward and are not recomputed (0 <= keep_activations <= n_layer). The block before them
  // is not recomputed either (its activations are still in the shared recompute area), so
  // n_layer - keep_activations - 1 blocks are recomputed, and none from n_layer - 1 up. Trades
  // one block's activations of memory for one block's recompute each.
  int64_t keep_activations = 0;
};

// "off", "on", or "on, the last N blocks kept": for logs and `zerotrain estimate`.
inline std::string describe_checkpointing(bool activation_checkpointing, int64_t keep_activations) {
  if (!activation_checkpointing) return "off";
  if (keep_activations == 0) return "on";
  if (keep_activations == 1) return "on, the last block kept";
  return "on, the last " + std::to_string(keep_activations) + " blocks kept";
}

class GptjModel {
 public:
  virtual ~GptjModel() = default;
  virtual const GptjConfig& config() const = 0;

  // Forward only.
  LossSum forward(const Batch& batch, ParamProvider& params) {
    return collect(queue_forward(batch, params));
  }
  // forward without reading the loss (validation queues its batches; see
  // queue_forward_backward); collect(ticket) reads it.
  virtual LossTicket queue_forward(const Batch& batch, ParamProvider& params) = 0;
  // Forward and backward. Adds grad_scale * d(mean loss over this batch's counted tokens)/d(param)
  // into params.layer_grads(...), calling grad_ready(layer) as each layer finishes (head first,
  // embedding last). A batch with no counted token adds nothing.
  LossSum forward_backward(const Batch& batch, ParamProvider& params, double grad_scale) {
    return collect(queue_forward_backward(batch, params, grad_scale));
  }
  // forward_backward without reading the loss, so that the micro-batches of a step can be queued
  // back to back (CUDA: no host wait between them). The batch's host memory may be reused once
  // it returns. collect(ticket) reads the loss later: it waits for all of that call's work (its
  // backward too) and gives exactly what forward_backward would have. Each ticket is collected
  // once; until then it holds a small pinned loss buffer (CUDA).
  virtual LossTicket queue_forward_backward(const Batch& batch, ParamProvider& params,
                                            double grad_scale) = 0;
  virtual LossSum collect(LossTicket ticket) = 0;
  // Writes fp32 logits [batch_size, seq_len, vocab_size] to `out` (targets are not read).
  virtual void logits(const Batch& batch, ParamProvider& params, float* out) = 0;
};

// The CPU reference implementation (OpenMP; compute in fp32 or fp64; reads parameters of any
// storage dtype and adds into gradients of any storage dtype).
std::unique_ptr<GptjModel> make_cpu_gptj(const GptjConfig& config, const ModelOptions& options);

#ifdef ZT_WITH_CUDA
// The CUDA implementation: the same layer walk over the ops of ops_cuda.h, queued on
// ctx.stream(). options.compute_dtype (kBF16 or kF16) is the storage dtype of activations,
// parameters and gradients; the provider must hand tensors of that dtype on ctx.device(). Token
// ids arrive on the host, are checked there and copied over. forward, logits and collect wait
// for the call's queued work (to read the loss or the logits); queue_forward_backward does not
// wait. `ctx` must outlive the model.
std::unique_ptr<GptjModel> make_cuda_gptj(const GptjConfig& config, const ModelOptions& options,
                                          const CudaContext& ctx);
#endif

}  // namespace zt::model
