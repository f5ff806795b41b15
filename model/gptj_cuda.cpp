// The CUDA GPT-J: the layer walk of gptj_graph.h over a backend that queues the ops of
// ops_cuda.h on one CudaContext's stream.
//
// Storage: activations, parameters and gradients are in the compute dtype dt (bf16 or fp16) on
// the device; LayerNorm statistics and the attention log-sum-exp lse [B, H, T] are fp32; the
// cross-entropy runs fused and in place over the dt logits [N, V] and writes fp32 per-token
// losses [N]. One workspace per call comes from the stream-ordered pool (a stream-ordered Buffer, accounted
// as activations) and is freed in stream order when the call returns.
//
// Host traffic per call: token ids (and targets) are checked on the host, staged in pinned
// memory and copied on the stream; the per-token losses come back the same way and are summed on
// the host. Each call takes a host slot (pinned staging and losses, and an event) that it keeps
// until its loss is read, so queue_forward_backward can queue several micro-batches without a
// host wait; collect waits on the slot's event, recorded after the call's backward.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <vector>

#include "model/gptj.h"
#include "model/gptj_graph.h"
#include "model/ops_cpu.h"
#include "model/ops_cuda.h"
#include "model/params.h"
#include "runtime/cuda/nccl_comm.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"
#include "runtime/memory.h"

namespace zt::model {
namespace {

// Largest head dim of the CUDA attention (ops_cuda.h: "Dh up to 256", multiples of 8).
constexpr int64_t kCudaMaxHeadDim = 256;

// Page-locked host memory (runtime/memory.h), so that copies queued on the stream run
// asynchronously. Grows on demand and never shrinks: a training run's batches have one shape, so
// it is allocated once (cudaFreeHost may synchronise the device; it runs only when a larger batch
// arrives).
void reserve_pinned(Buffer& buffer, size_t bytes, const char* what) {
  if (bytes > buffer.bytes()) buffer = Buffer::allocate_pinned(bytes, MemCategory::kBuffers, what);
}

// Elem is the host-side 16-bit type (zt::bf16 or zt::f16); the ops take void* and dt.
template <class Elem>
class CudaBackend {
 public:
  using T = Elem;
  using Stat = float;       // LayerNorm mean/rstd [N]
  using AttnState = float;  // lse [B, H, T]
  using Memory = Buffer;  // stream-ordered (runtime/memory.h)
  struct Tokens {
    int32_t* ids = nullptr;      // device [N]
    int32_t* targets = nullptr;  // device [N]; nullptr when the call has none (logits())
    float* losses = nullptr;     // device [N] fp32 per-token losses
    int64_t count = 0;           // targets != -100, counted on the host
    size_t slot = 0;             // the call's host slot (load_tokens)
  };
  struct LossPending {
    int64_t n = 0;
    int64_t count = 0;
    size_t slot = 0;  // holds the per-token losses on the host
  };

  static constexpr DType kDt = dtype_of<T>();
  // 256 bytes: the attention kernels need 16-byte aligned rows, and cuBLASLt plans depend on
  // pointer alignment (capped at 16 bytes), so a recompute lands on the same GEMM kernels.
  static constexpr size_t kWorkspaceAlign = 256;

  CudaBackend(const CudaContext& ctx, int64_t vocab) : ctx_(ctx), vocab_(vocab) {}
  ~CudaBackend() {
    // Queued or thrown-away calls may still copy to or from the slots' pinned memory.
    (void)cudaStreamSynchronize(ctx_.stream());
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // A layer's parameters / gradients: the provider's device tensors themselves (the ops read and
  // add into them directly; nothing to convert or flush).
  class LayerParams {
   public:
    LayerParams(CudaBackend&, std::span<const Tensor> ts) {
      for (const Tensor& t : ts) ptrs_.push_back(static_cast<const T*>(t.data));
    }
    const T* operator[](int i) const { return ptrs_[size_t(i)]; }

   private:
    std::vector<const T*> ptrs_;
  };
  class LayerGrads {
   public:
    LayerGrads(CudaBackend&, std::span<const Tensor> ts) {
      for (const Tensor& t : ts) ptrs_.push_back(static_cast<T*>(t.data));
    }
    T* operator[](int i) const { return ptrs_[size_t(i)]; }
    void flush() {}

   private:
    std::vector<T*> ptrs_;
  };

  void check_tensor(const Tensor& t, const ParamSpec& spec, const char* what) const {
    const Device device = Device::cuda(ctx_.device());
    ZT_CHECK(t.device == device && t.dtype == kDt, what, " of ", spec.name, " are ",
             dtype_name(t.dtype), " on ", t.device.str(), "; the CUDA model needs ",
             dtype_name(kDt), " tensors (its compute dtype) on ", device.str(),
             " (its CudaContext's device)");
  }

  // The checks the CPU ops make (same messages), here on the host before any device work: the
  // CUDA kernels do not check ids, and a bad target would only show as a NaN loss.
  void check_tokens(const Batch& b, bool need_targets) const {
    const int64_t n = b.tokens();
    for (int64_t i = 0; i < n; ++i)
      ZT_CHECK(b.inputs[i] >= 0 && b.inputs[i] < vocab_, "embedding_forward: token id ",
               b.inputs[i], " at position ", i, " is outside the vocabulary [0, ", vocab_, ")");
    if (!need_targets) return;
    for (int64_t i = 0; i < n; ++i)
      ZT_CHECK(b.targets[i] == cpu::kIgnoreIndex || (b.targets[i] >= 0 && b.targets[i] < vocab_),
               "cross_entropy_forward: target ", b.targets[i], " at position ", i,
               " is neither ", cpu::kIgnoreIndex, " nor in [0, ", vocab_, ")");
  }

  int64_t attention_state_count(int64_t batch, int64_t seq, int64_t heads) const {
    return batch * heads * seq;
  }
  Buffer allocate_workspace(size_t bytes) const {
    ZT_CUDA_CHECK(cudaSetDevice(ctx_.device()));
    return Buffer::allocate(Device::cuda(ctx_.device()), bytes, MemCategory::kActivations,
                            "activations", ctx_.stream());
  }
  Tokens take_tokens(WorkspaceCarver& a, const Batch& b, bool need_targets) const {
    Tokens tk;
    tk.ids = a.take<int32_t>(b.tokens());
    if (need_targets) {
      tk.targets = a.take<int32_t>(b.tokens());
      tk.losses = a.take<float>(b.tokens());
    }
    return tk;
  }
  // Takes a free host slot, stages ids (and targets) in it and queues their copies to the device.
  void load_tokens(const Batch& b, bool need_targets, Tokens& tk) {
    const size_t n = size_t(b.tokens());
    tk.slot = free_slot();
    HostSlot& slot = slots_[tk.slot];
    // The slot's earlier copies must be done before it is rewritten: at once unless the call
    // that used it last threw before its loss was read.
    NcclComm::watched_event_sync(slot.done);  // the stream may wait on collectives
    reserve_pinned(slot.pinned, 3 * n * sizeof(int32_t), "token ids, targets and losses");
    int32_t* ids = static_cast<int32_t*>(slot.pinned.data());
    std::memcpy(ids, b.inputs, n * sizeof(int32_t));
    ZT_CUDA_CHECK(cudaMemcpyAsync(tk.ids, ids, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                  ctx_.stream()));
    tk.count = 0;
    if (need_targets) {
      int32_t* targets = ids + n;
      std::memcpy(targets, b.targets, n * sizeof(int32_t));
      for (size_t i = 0; i < n; ++i) tk.count += targets[i] != cpu::kIgnoreIndex;
      ZT_CUDA_CHECK(cudaMemcpyAsync(tk.targets, targets, n * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, ctx_.stream()));
    }
    ZT_CUDA_CHECK(cudaEventRecord(slot.done, ctx_.stream()));
  }

  // ---- ops (ops_cuda.h) ----
  void embedding_forward(const int32_t* ids, const T* wte, T* out, int64_t n, int64_t d,
                         int64_t /*vocab: checked on the host*/) const {
    cuda::embedding_forward(ctx_, ids, wte, out, n, d, kDt);
  }
  void embedding_backward(const int32_t* ids, const T* dout, T* dwte, int64_t n, int64_t d,
                          int64_t vocab) const {
    cuda::embedding_backward(ctx_, ids, dout, dwte, n, d, vocab, kDt);
  }
  void layernorm_forward(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd,
                         int64_t n, int64_t d, double eps) const {
    cuda::layernorm_forward(ctx_, x, w, b, y, mean, rstd, n, d, eps, kDt);
  }
  void layernorm_backward(const T* dy, const T* x, const T* w, const float* mean,
                          const float* rstd, T* dx, T* dw, T* db, int64_t n, int64_t d) const {
    cuda::layernorm_backward(ctx_, dy, x, w, mean, rstd, dx, dw, db, n, d, kDt);
  }
  void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in,
                      int64_t out) const {
    cuda::linear_forward(ctx_, x, w, b, y, n, in, out, kDt);
  }
  void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int64_t n,
                       int64_t in, int64_t out, bool accumulate_dx) const {
    cuda::linear_backward(ctx_, dy, x, w, dx, dw, db, n, in, out, kDt, accumulate_dx);
  }
  void rotary_forward(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                      int64_t rotary_dim) const {
    cuda::rotary_forward(ctx_, x, batch, seq, heads, head_dim, rotary_dim, kDt);
  }
  void rotary_backward(T* dx, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                       int64_t rotary_dim) const {
    cuda::rotary_backward(ctx_, dx, batch, seq, heads, head_dim, rotary_dim, kDt);
  }
  void attention_forward(const T* q, const T* k, const T* v, T* out, float* lse, int64_t batch,
                         int64_t seq, int64_t heads, int64_t head_dim) const {
    cuda::attention_forward(ctx_, q, k, v, out, lse, batch, seq, heads, head_dim, kDt);
  }
  void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                          const float* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                          int64_t heads, int64_t head_dim) const {
    cuda::attention_backward(ctx_, dout, q, k, v, out, lse, dq, dk, dv, batch, seq, heads,
                             head_dim, kDt);
  }
  void gelu_forward(const T* x, T* y, int64_t n) const { cuda::gelu_forward(ctx_, x, y, n, kDt); }
  void gelu_backward(const T* x, const T* dy, T* dx, int64_t n) const {
    cuda::gelu_backward(ctx_, x, dy, dx, n, kDt);
  }
  void add3(const T* a, const T* b, const T* c, T* out, int64_t n) const {
    cuda::add3(ctx_, a, b, c, out, n, kDt);
  }
  void zero(T* p, int64_t n) const {
    ZT_CUDA_CHECK(cudaMemsetAsync(p, 0, size_t(n) * sizeof(T), ctx_.stream()));
  }

  // Queues the fused cross-entropy and the copy of its per-token losses to the host.
  LossPending cross_entropy(T* logits, const Tokens& tk, int64_t n, int64_t v, bool want_grad,
                            double grad_scale) {
    // As the CPU model: d(grad_scale * mean loss)/d(logits), 0 when no token is counted.
    const float dloss = want_grad && tk.count > 0 ? float(grad_scale / double(tk.count)) : 0.0f;
    cuda::cross_entropy(ctx_, logits, tk.targets, tk.losses, n, v, dloss, kDt);
    // The kernel leaves the logits alone when dloss == 0, but backward reads them as dlogits.
    if (want_grad && dloss == 0.0f)
      ZT_CUDA_CHECK(cudaMemsetAsync(logits, 0, size_t(n * v) * sizeof(T), ctx_.stream()));
    ZT_CUDA_CHECK(cudaMemcpyAsync(host_losses(slots_[tk.slot], n), tk.losses,
                                  size_t(n) * sizeof(float), cudaMemcpyDeviceToHost,
                                  ctx_.stream()));
    // Covers the copy into the slot should the call throw before loss_queued.
    ZT_CUDA_CHECK(cudaEventRecord(slots_[tk.slot].done, ctx_.stream()));
    return LossPending{n, tk.count, tk.slot};
  }
  // Marks the end of the call's queued work (in forward_backward, the backward too); the slot is
  // kept until finish_loss.
  void loss_queued(LossPending& pending) {
    HostSlot& slot = slots_[pending.slot];
    ZT_CUDA_CHECK(cudaEventRecord(slot.done, ctx_.stream()));
    slot.holds_loss = true;
  }
  // The call's one wait, for everything it queued, then the sum in index order in double.
  LossSum finish_loss(const LossPending& pending) {
    HostSlot& slot = slots_[pending.slot];
    NcclComm::watched_event_sync(slot.done);  // the stream may wait on collectives
    LossSum loss;
    loss.count = pending.count;
    const float* losses = host_losses(slot, pending.n);
    for (int64_t i = 0; i < pending.n; ++i) loss.sum += double(losses[i]);  // index order
    slot.holds_loss = false;
    return loss;
  }

  void logits_to_host(const T* logits, int64_t count, float* out) const {
    std::vector<T> host(static_cast<size_t>(count));
    // The stream may wait on collectives (stage 3 gathers).
    NcclComm::watched_pageable_copy(host.data(), logits, size_t(count) * sizeof(T),
                                    cudaMemcpyDeviceToHost, ctx_.stream());
    convert_cpu(host.data(), kDt, out, DType::kF32, size_t(count));
  }

 private:
  // Pinned memory of one call; as many as calls whose loss is not read yet, plus one.
  struct HostSlot {
    HostSlot() { ZT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming)); }
    ~HostSlot() {
      if (done != nullptr) (void)cudaEventDestroy(done);
    }
    HostSlot(const HostSlot&) = delete;
    HostSlot& operator=(const HostSlot&) = delete;

    Buffer pinned;               // ids [N], targets [N] (int32), then losses [N] (fp32)
    cudaEvent_t done = nullptr;  // recorded after the slot's last queued use
    bool holds_loss = false;     // from loss_queued until finish_loss
  };

  static float* host_losses(HostSlot& slot, int64_t n) {
    return reinterpret_cast<float*>(static_cast<char*>(slot.pinned.data()) +
                                    2 * size_t(n) * sizeof(int32_t));
  }
  size_t free_slot() {
    for (size_t i = 0; i < slots_.size(); ++i)
      if (!slots_[i].holds_loss) return i;
    slots_.emplace_back();
    return slots_.size() - 1;
  }

  const CudaContext& ctx_;
  int64_t vocab_;
  std::deque<HostSlot> slots_;  // a deque: slots never move
};

}  // namespace

std::unique_ptr<GptjModel> make_cuda_gptj(const GptjConfig& config, const ModelOptions& options,
                                          const CudaContext& ctx) {
  config.validate();
  const int64_t hd = config.head_dim();
  if (hd % 8 != 0 || hd > kCudaMaxHeadDim)
    throw_user_error("model: head_dim = d_model / n_head = ", config.d_model, " / ",
                     config.n_head, " = ", hd, "; the CUDA attention needs a multiple of 8 up to ",
                     kCudaMaxHeadDim);
  switch (options.compute_dtype) {
    case DType::kBF16:
      return std::make_unique<GptjGraph<CudaBackend<bf16>>>(config, options, ctx,
                                                            config.vocab_size);
    case DType::kF16:
      return std::make_unique<GptjGraph<CudaBackend<f16>>>(config, options, ctx,
                                                           config.vocab_size);
    default:
      ZT_FAIL("the CUDA model computes in bf16 or fp16, not ", dtype_name(options.compute_dtype));
  }
}

}  // namespace zt::model
