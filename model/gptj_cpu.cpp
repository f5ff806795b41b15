// The CPU reference GPT-J: the layer walk of gptj_graph.h over a backend that calls the ops of
// ops_cpu.h, computing in fp32 or fp64 on host memory.
//
// Parameters of another storage dtype are converted to the compute dtype per layer; gradients of
// another storage dtype are accumulated in a zeroed compute-dtype scratch and added into the
// provider's tensors once per layer (one rounding). Attention saves its probabilities
// [B, H, T, T] for backward.
#include <algorithm>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "model/gptj.h"
#include "model/gptj_graph.h"
#include "model/ops_cpu.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/memory.h"

namespace zt::model {
namespace {

template <class Elem>
class CpuBackend {
 public:
  using T = Elem;
  using Stat = Elem;
  using AttnState = Elem;  // probs [B, H, T, T]
  using Memory = Buffer;
  struct Tokens {
    const int32_t* ids = nullptr;      // the caller's host memory
    const int32_t* targets = nullptr;
  };
  using LossPending = LossSum;

  // Pieces are packed back to back (every piece is whole T elements).
  static constexpr size_t kWorkspaceAlign = sizeof(T);

  // A layer's parameters as T pointers: the provider's memory when it is already T, otherwise a
  // converted copy.
  class LayerParams {
   public:
    LayerParams(CpuBackend&, std::span<const Tensor> ts) {
      int64_t convert = 0;
      for (const Tensor& t : ts)
        if (t.dtype != dtype_of<T>()) convert += t.numel();
      if (convert > 0)
        scratch_ = Buffer::allocate(Device::cpu(), size_t(convert) * sizeof(T), MemCategory::kBuffers,
                                    "parameters converted to the compute dtype");
      T* next = static_cast<T*>(scratch_.data());
      for (const Tensor& t : ts) {
        if (t.dtype == dtype_of<T>()) {
          ptrs_.push_back(static_cast<const T*>(t.data));
        } else {
          convert_cpu(t.data, t.dtype, next, dtype_of<T>(), size_t(t.numel()));
          ptrs_.push_back(next);
          next += t.numel();
        }
      }
    }
    const T* operator[](int i) const { return ptrs_[size_t(i)]; }

   private:
    std::vector<const T*> ptrs_;
    Buffer scratch_;
  };

  // A layer's gradient accumulators as T pointers: the provider's memory when it is T (the ops
  // add into it), otherwise a zeroed T scratch that flush() adds into the provider's dtype.
  class LayerGrads {
   public:
    LayerGrads(CpuBackend&, std::span<const Tensor> ts) : tensors_(ts) {
      int64_t convert = 0;
      for (const Tensor& t : tensors_)
        if (t.dtype != dtype_of<T>()) convert += t.numel();
      if (convert > 0) {
        scratch_ = Buffer::allocate(Device::cpu(), size_t(convert) * sizeof(T), MemCategory::kBuffers,
                                    "gradients in the compute dtype");
        scratch_.zero();
      }
      T* next = static_cast<T*>(scratch_.data());
      for (const Tensor& t : tensors_) {
        if (t.dtype == dtype_of<T>()) {
          ptrs_.push_back(static_cast<T*>(t.data));
        } else {
          ptrs_.push_back(next);
          next += t.numel();
        }
      }
    }
    T* operator[](int i) const { return ptrs_[size_t(i)]; }
    void flush() {
      for (size_t i = 0; i < tensors_.size(); ++i) {
        const Tensor& t = tensors_[i];
        if (t.dtype != dtype_of<T>())
          accumulate_cpu(ptrs_[i], dtype_of<T>(), t.data, t.dtype, size_t(t.numel()));
      }
    }

   private:
    std::span<const Tensor> tensors_;
    std::vector<T*> ptrs_;
    Buffer scratch_;
  };

  void check_tensor(const Tensor& t, const ParamSpec& spec, const char* what) const {
    ZT_CHECK(t.device.is_cpu(), what, " of ", spec.name, " are on ", t.device.str(),
             "; the CPU model needs host memory");
  }
  // Token ids and targets are checked by the ops (embedding, cross-entropy) that read them.
  void check_tokens(const Batch&, bool) const {}

  int64_t attention_state_count(int64_t batch, int64_t seq, int64_t heads) const {
    return batch * heads * seq * seq;
  }
  Buffer allocate_workspace(size_t bytes) const {
    return Buffer::allocate(Device::cpu(), bytes, MemCategory::kActivations, "activations");
  }
  Tokens take_tokens(WorkspaceCarver&, const Batch& b, bool) const {
    return Tokens{b.inputs, b.targets};
  }
  void load_tokens(const Batch&, bool, Tokens&) const {}

  // ---- ops (ops_cpu.h) ----
  void embedding_forward(const int32_t* ids, const T* wte, T* out, int64_t n, int64_t d,
                         int64_t vocab) const {
    cpu::embedding_forward<T>(ids, wte, out, n, d, vocab);
  }
  void embedding_backward(const int32_t* ids, const T* dout, T* dwte, int64_t n, int64_t d,
                          int64_t vocab) const {
    cpu::embedding_backward<T>(ids, dout, dwte, n, d, vocab);
  }
  void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t n,
                         int64_t d, double eps) const {
    cpu::layernorm_forward<T>(x, w, b, y, mean, rstd, n, d, eps);
  }
  void layernorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                          T* dw, T* db, int64_t n, int64_t d) const {
    cpu::layernorm_backward<T>(dy, x, w, mean, rstd, dx, dw, db, n, d);
  }
  void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in,
                      int64_t out) const {
    cpu::linear_forward<T>(x, w, b, y, n, in, out);
  }
  void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int64_t n,
                       int64_t in, int64_t out, bool accumulate_dx) const {
    cpu::linear_backward<T>(dy, x, w, dx, dw, db, n, in, out, accumulate_dx);
  }
  void rotary_forward(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                      int64_t rotary_dim) const {
    cpu::rotary_forward<T>(x, batch, seq, heads, head_dim, rotary_dim);
  }
  void rotary_backward(T* dx, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                       int64_t rotary_dim) const {
    cpu::rotary_backward<T>(dx, batch, seq, heads, head_dim, rotary_dim);
  }
  void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t batch,
                         int64_t seq, int64_t heads, int64_t head_dim) const {
    cpu::attention_forward<T>(q, k, v, out, probs, batch, seq, heads, head_dim);
  }
  // `out` is not needed: the saved probabilities carry everything.
  void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* /*out*/,
                          const T* probs, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                          int64_t heads, int64_t head_dim) const {
    cpu::attention_backward<T>(dout, q, k, v, probs, dq, dk, dv, batch, seq, heads, head_dim);
  }
  void gelu_forward(const T* x, T* y, int64_t n) const { cpu::gelu_forward<T>(x, y, n); }
  void gelu_backward(const T* x, const T* dy, T* dx, int64_t n) const {
    cpu::gelu_backward<T>(x, dy, dx, n);
  }
  void add3(const T* a, const T* b, const T* c, T* out, int64_t n) const {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i] + c[i];
  }
  void zero(T* p, int64_t n) const { std::fill(p, p + n, T(0)); }

  LossSum cross_entropy(T* logits, const Tokens& tk, int64_t n, int64_t v, bool want_grad,
                        double grad_scale) const {
    LossSum loss;
    loss.sum = cpu::cross_entropy_forward<T>(logits, tk.targets, n, v, &loss.count);
    if (want_grad) {
      const double dloss = loss.count > 0 ? grad_scale / double(loss.count) : 0.0;
      cpu::cross_entropy_backward<T>(logits, tk.targets, logits, n, v, dloss);
    }
    return loss;
  }
  // Computed at once: nothing to wait for.
  void loss_queued(LossSum&) const {}
  LossSum finish_loss(const LossSum& loss) const { return loss; }

  void logits_to_host(const T* logits, int64_t count, float* out) const {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(out, logits, size_t(count) * sizeof(float));
    } else {
      for (int64_t i = 0; i < count; ++i) out[i] = float(logits[i]);
    }
  }
};

}  // namespace

std::unique_ptr<GptjModel> make_cpu_gptj(const GptjConfig& config, const ModelOptions& options) {
  switch (options.compute_dtype) {
    case DType::kF32: return std::make_unique<GptjGraph<CpuBackend<float>>>(config, options);
    case DType::kF64: return std::make_unique<GptjGraph<CpuBackend<double>>>(config, options);
    default:
      ZT_FAIL("the CPU model computes in fp32 or fp64, not ", dtype_name(options.compute_dtype));
  }
}

}  // namespace zt::model
