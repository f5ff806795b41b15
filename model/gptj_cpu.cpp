// The CPU reference GPT-J: forward, backward and activation recompute over the ops of ops_cpu.h.
//
// Data flow per micro-batch (N = batch * seq tokens, D = d_model, F = d_ff, V = vocab):
//   x[0] = wte[inputs]                                   layer 0
//   x[i+1] = block_i(x[i]),  i = 0..n_layer-1            layers 1..n_layer
//   logits = lm_head(ln_f(x[n_layer])), loss = CE         layer n_layer+1 (head)
// Backward runs the layers in reverse with one running residual gradient dh [N, D]: each block's
// backward reads dh as d(output) and leaves d(input) in it (the parallel residual makes that an
// in-place update: dh += d(ln_1 path)). With activation checkpointing only x[i] is kept and a
// block's activations are recomputed into one shared area right before its backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "model/gptj.h"
#include "model/ops_cpu.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/memory.h"

namespace zt::model {
namespace {

// One block's saved activations; every pointer is [N, ...] row-major.
template <class T>
struct BlockActs {
  T* ln_out;   // [N, D]  ln_1(x)
  T* ln_mean;  // [N]
  T* ln_rstd;  // [N]
  T* q;        // [B, T, H, Dh] after rotary
  T* k;        // [B, T, H, Dh] after rotary
  T* v;        // [B, T, H, Dh]
  T* probs;    // [B, H, T, T] causal softmax
  T* ctx;      // [N, D] attention output before out_proj
  T* pre;      // [N, F] fc_in output before gelu
  T* act;      // [N, F] gelu output
};

// Carves typed pieces out of one tracked allocation.
template <class T>
class Arena {
 public:
  Arena(int64_t count, MemCategory category, const char* what)
      : buffer_(Buffer::allocate(Device::cpu(), size_t(count) * sizeof(T), category, what)),
        base_(static_cast<T*>(buffer_.data())),
        capacity_(count) {}
  T* take(int64_t count) {
    ZT_CHECK(used_ + count <= capacity_, "arena overflow: ", used_, " + ", count, " > ", capacity_);
    T* p = base_ + used_;
    used_ += count;
    return p;
  }

 private:
  Buffer buffer_;
  T* base_;
  int64_t capacity_;
  int64_t used_ = 0;
};

template <class T>
class CpuGptj final : public GptjModel {
 public:
  CpuGptj(const GptjConfig& config, const ModelOptions& options)
      : config_(config), options_(options) {
    config_.validate();
    ZT_CHECK(options.compute_dtype == dtype_of<T>(), "compute dtype mismatch");
    const std::vector<ParamSpec> specs = gptj_param_specs(config_);
    layer_specs_.resize(size_t(num_layers_total(config_)));
    for (const ParamSpec& s : specs) layer_specs_[size_t(s.layer)].push_back(s);
  }

  const GptjConfig& config() const override { return config_; }

  LossSum forward(const Batch& batch, ParamProvider& params) override {
    check_batch(batch, true);
    Workspace p(*this, batch, /*store_all=*/false);
    run_forward(batch, params, p);
    return head_forward(batch, params, p, /*want_grad=*/false, 0.0);
  }

  LossSum forward_backward(const Batch& batch, ParamProvider& params, double grad_scale) override {
    check_batch(batch, true);
    Workspace p(*this, batch, /*store_all=*/!options_.activation_checkpointing);
    run_forward(batch, params, p);
    const LossSum loss = head_forward(batch, params, p, /*want_grad=*/true, grad_scale);
    run_backward(batch, params, p);
    return loss;
  }

  void logits(const Batch& batch, ParamProvider& params, float* out) override {
    check_batch(batch, false);
    Workspace p(*this, batch, /*store_all=*/false);
    run_forward(batch, params, p);
    head_logits(params, p);
    const int64_t n = batch.tokens() * config_.vocab_size;
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(out, p.logits, size_t(n) * sizeof(float));
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = float(p.logits[i]);
    }
  }

 private:
  // Everything one forward(+backward) needs, allocated once per call and accounted as
  // activations.
  struct Workspace {
    Workspace(const CpuGptj& m, const Batch& batch, bool store_all)
        : n(batch.tokens()),
          arena(count(m.config_, batch, store_all), MemCategory::kActivations, "activations") {
      const GptjConfig& c = m.config_;
      const int64_t d = c.d_model;
      xs.resize(size_t(c.n_layer + 1));
      for (auto& x : xs) x = arena.take(n * d);
      const int64_t acts = store_all ? c.n_layer : 1;
      for (int64_t i = 0; i < acts; ++i) blocks.push_back(take_block(c, batch));
      tmp = arena.take(n * d);
      dh = arena.take(n * d);
      hf = arena.take(n * d);
      hf_mean = arena.take(n);
      hf_rstd = arena.take(n);
      logits = arena.take(n * c.vocab_size);
      d_ctx = arena.take(n * d);
      dq = arena.take(n * d);
      dk = arena.take(n * d);
      dv = arena.take(n * d);
      d_act = arena.take(n * c.d_ff);
      d_pre = arena.take(n * c.d_ff);
    }
    static int64_t block_size(const GptjConfig& c, const Batch& b) {
      const int64_t n = b.tokens();
      return n * (5 * c.d_model + 2 + 2 * c.d_ff) + b.batch_size * c.n_head * b.seq_len * b.seq_len;
    }
    static int64_t count(const GptjConfig& c, const Batch& b, bool store_all) {
      const int64_t n = b.tokens(), d = c.d_model;
      return (c.n_layer + 1) * n * d + (store_all ? c.n_layer : 1) * block_size(c, b) +
             n * (7 * d + 2 + c.vocab_size + 2 * c.d_ff);
    }
    BlockActs<T> take_block(const GptjConfig& c, const Batch& b) {
      const int64_t d = c.d_model, f = c.d_ff;
      BlockActs<T> a;
      a.ln_out = arena.take(n * d);
      a.ln_mean = arena.take(n);
      a.ln_rstd = arena.take(n);
      a.q = arena.take(n * d);
      a.k = arena.take(n * d);
      a.v = arena.take(n * d);
      a.probs = arena.take(b.batch_size * c.n_head * b.seq_len * b.seq_len);
      a.ctx = arena.take(n * d);
      a.pre = arena.take(n * f);
      a.act = arena.take(n * f);
      return a;
    }
    BlockActs<T>& acts(int64_t block) { return blocks.size() == 1 ? blocks[0] : blocks[size_t(block)]; }

    int64_t n;
    Arena<T> arena;
    std::vector<T*> xs;  // x[i]: input of block i; x[n_layer]: input of the head
    std::vector<BlockActs<T>> blocks;
    T* tmp;    // [N, D] scratch
    T* dh;     // [N, D] running residual gradient
    T* hf;     // [N, D] ln_f output
    T* hf_mean;
    T* hf_rstd;
    T* logits;  // [N, V]; overwritten by dlogits in backward
    T* d_ctx;   // [N, D]
    T* dq;
    T* dk;
    T* dv;
    T* d_act;  // [N, F]
    T* d_pre;  // [N, F]
  };

  // A layer's parameters as T pointers: the provider's memory when it is already T, otherwise a
  // converted copy.
  class LayerParams {
   public:
    LayerParams(const CpuGptj& m, ParamProvider& provider, int layer) {
      const std::span<const Tensor> ts = provider.layer_params(layer);
      const auto& specs = m.layer_specs_[size_t(layer)];
      check_layer_tensors(ts, specs, "parameters");
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
    LayerGrads(const CpuGptj& m, ParamProvider& provider, int layer)
        : tensors_(provider.layer_grads(layer)) {
      check_layer_tensors(tensors_, m.layer_specs_[size_t(layer)], "gradients");
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

  static void check_layer_tensors(std::span<const Tensor> ts, const std::vector<ParamSpec>& specs,
                                  const char* what) {
    ZT_CHECK(ts.size() == specs.size(), "provider gave ", ts.size(), " ", what, " for layer ",
             specs.front().layer, ", the model expects ", specs.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      ZT_CHECK(ts[i].device.is_cpu(), what, " of ", specs[i].name, " are on ", ts[i].device.str(),
               "; the CPU model needs host memory");
      ZT_CHECK(ts[i].numel() == specs[i].numel(), what, " of ", specs[i].name, ": got ",
               ts[i].shape.str(), ", expected ", specs[i].shape.str());
    }
  }

  void check_batch(const Batch& batch, bool need_targets) const {
    ZT_CHECK(batch.inputs != nullptr && (!need_targets || batch.targets != nullptr),
             "batch without token ids");
    ZT_CHECK(batch.batch_size >= 1 && batch.seq_len >= 1, "empty batch ", batch.batch_size, "x",
             batch.seq_len);
    ZT_CHECK(batch.seq_len <= config_.n_positions, "sequence length ", batch.seq_len,
             " exceeds model.n_positions = ", config_.n_positions);
  }

  // Block forward: x [N, D] -> y [N, D], filling `a`.
  void block_forward(const Batch& b, const LayerParams& w, const T* x, T* y, BlockActs<T>& a,
                     T* tmp) const {
    const GptjConfig& c = config_;
    const int64_t n = b.tokens(), d = c.d_model, f = c.d_ff, hd = c.head_dim();
    cpu::layernorm_forward(x, w[kLn1Weight], w[kLn1Bias], a.ln_out, a.ln_mean, a.ln_rstd, n, d,
                           c.layer_norm_eps);
    cpu::linear_forward<T>(a.ln_out, w[kQProj], nullptr, a.q, n, d, d);
    cpu::linear_forward<T>(a.ln_out, w[kKProj], nullptr, a.k, n, d, d);
    cpu::linear_forward<T>(a.ln_out, w[kVProj], nullptr, a.v, n, d, d);
    cpu::rotary_forward(a.q, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    cpu::rotary_forward(a.k, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    cpu::attention_forward<T>(a.q, a.k, a.v, a.ctx, a.probs, b.batch_size, b.seq_len, c.n_head, hd);
    cpu::linear_forward<T>(a.ln_out, w[kFcInWeight], w[kFcInBias], a.pre, n, d, f);
    cpu::gelu_forward<T>(a.pre, a.act, n * f);
    // Parallel residual: y = x + out_proj(ctx) + fc_out(gelu(fc_in(ln_1(x)))).
    cpu::linear_forward<T>(a.ctx, w[kOutProj], nullptr, y, n, d, d);
    cpu::linear_forward<T>(a.act, w[kFcOutWeight], w[kFcOutBias], tmp, n, f, d);
    add3(x, y, tmp, y, n * d);
  }

  // Block backward: dh [N, D] holds d(y) on entry and d(x) on exit.
  void block_backward(const Batch& b, const LayerParams& w, LayerGrads& g, const T* x,
                      const BlockActs<T>& a, Workspace& p) const {
    const GptjConfig& c = config_;
    const int64_t n = b.tokens(), d = c.d_model, f = c.d_ff, hd = c.head_dim();
    T* dh = p.dh;
    // MLP path: fc_out, gelu, fc_in; d(ln_out) lands in p.tmp.
    cpu::linear_backward<T>(dh, a.act, w[kFcOutWeight], p.d_act, g[kFcOutWeight], g[kFcOutBias], n,
                            f, d, false);
    cpu::gelu_backward<T>(a.pre, p.d_act, p.d_pre, n * f);
    cpu::linear_backward<T>(p.d_pre, a.ln_out, w[kFcInWeight], p.tmp, g[kFcInWeight], g[kFcInBias],
                            n, d, f, false);
    // Attention path: out_proj, attention, rotary, q/k/v; d(ln_out) added into p.tmp.
    cpu::linear_backward<T>(dh, a.ctx, w[kOutProj], p.d_ctx, g[kOutProj], nullptr, n, d, d, false);
    cpu::attention_backward<T>(p.d_ctx, a.q, a.k, a.v, a.probs, p.dq, p.dk, p.dv, b.batch_size,
                               b.seq_len, c.n_head, hd);
    cpu::rotary_backward(p.dq, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    cpu::rotary_backward(p.dk, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    cpu::linear_backward<T>(p.dq, a.ln_out, w[kQProj], p.tmp, g[kQProj], nullptr, n, d, d, true);
    cpu::linear_backward<T>(p.dk, a.ln_out, w[kKProj], p.tmp, g[kKProj], nullptr, n, d, d, true);
    cpu::linear_backward<T>(p.dv, a.ln_out, w[kVProj], p.tmp, g[kVProj], nullptr, n, d, d, true);
    // ln_1: dh (the residual gradient) += d(x) through the norm.
    cpu::layernorm_backward<T>(p.tmp, x, w[kLn1Weight], a.ln_mean, a.ln_rstd, dh, g[kLn1Weight],
                               g[kLn1Bias], n, d);
  }

  static void add3(const T* a, const T* b, const T* c, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i] + c[i];
  }

  void run_forward(const Batch& b, ParamProvider& provider, Workspace& p) const {
    const GptjConfig& c = config_;
    provider.before_layer(0, Pass::kForward);
    {
      LayerParams w(*this, provider, 0);
      cpu::embedding_forward<T>(b.inputs, w[0], p.xs[0], p.n, c.d_model, c.vocab_size);
    }
    provider.after_layer(0, Pass::kForward);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      const int layer = int(i) + 1;
      provider.before_layer(layer, Pass::kForward);
      {
        LayerParams w(*this, provider, layer);
        block_forward(b, w, p.xs[size_t(i)], p.xs[size_t(i) + 1], p.acts(i), p.tmp);
      }
      provider.after_layer(layer, Pass::kForward);
    }
  }

  // ln_f and lm_head: fills p.hf and p.logits. The caller brackets it with before/after_layer.
  void head_compute(const LayerParams& w, Workspace& p) const {
    const GptjConfig& c = config_;
    cpu::layernorm_forward<T>(p.xs.back(), w[kLnFWeight], w[kLnFBias], p.hf, p.hf_mean, p.hf_rstd,
                              p.n, c.d_model, c.layer_norm_eps);
    cpu::linear_forward<T>(p.hf, w[kLmHeadWeight], w[kLmHeadBias], p.logits, p.n, c.d_model,
                           c.vocab_size);
  }

  void head_logits(ParamProvider& provider, Workspace& p) const {
    const int head = head_layer(config_);
    provider.before_layer(head, Pass::kForward);
    {
      LayerParams w(*this, provider, head);
      head_compute(w, p);
    }
    provider.after_layer(head, Pass::kForward);
  }

  // Forward through the head and the loss; with want_grad, also turns logits into dlogits.
  LossSum head_forward(const Batch& b, ParamProvider& provider, Workspace& p, bool want_grad,
                       double grad_scale) const {
    head_logits(provider, p);
    LossSum loss;
    loss.sum = cpu::cross_entropy_forward<T>(p.logits, b.targets, p.n, config_.vocab_size,
                                             &loss.count);
    if (want_grad) {
      const double dloss = loss.count > 0 ? grad_scale / double(loss.count) : 0.0;
      cpu::cross_entropy_backward<T>(p.logits, b.targets, p.logits, p.n, config_.vocab_size, dloss);
    }
    return loss;
  }

  void run_backward(const Batch& b, ParamProvider& provider, Workspace& p) const {
    const GptjConfig& c = config_;
    const int64_t n = p.n, d = c.d_model;
    const int head = head_layer(c);
    provider.before_layer(head, Pass::kBackward);
    {
      LayerParams w(*this, provider, head);
      LayerGrads g(*this, provider, head);
      cpu::linear_backward<T>(p.logits, p.hf, w[kLmHeadWeight], p.tmp, g[kLmHeadWeight],
                              g[kLmHeadBias], n, d, c.vocab_size, false);
      std::fill(p.dh, p.dh + n * d, T(0));
      cpu::layernorm_backward<T>(p.tmp, p.xs.back(), w[kLnFWeight], p.hf_mean, p.hf_rstd, p.dh,
                                 g[kLnFWeight], g[kLnFBias], n, d);
      g.flush();
    }
    provider.grad_ready(head);
    provider.after_layer(head, Pass::kBackward);

    for (int64_t i = c.n_layer - 1; i >= 0; --i) {
      const int layer = int(i) + 1;
      provider.before_layer(layer, Pass::kBackward);
      {
        LayerParams w(*this, provider, layer);
        if (options_.activation_checkpointing) {
          // Recompute this block's activations from its saved input; the output goes to the
          // scratch d_ctx (it equals x[i+1] and is not needed).
          block_forward(b, w, p.xs[size_t(i)], p.d_ctx, p.acts(i), p.tmp);
        }
        LayerGrads g(*this, provider, layer);
        block_backward(b, w, g, p.xs[size_t(i)], p.acts(i), p);
        g.flush();
      }
      provider.grad_ready(layer);
      provider.after_layer(layer, Pass::kBackward);
    }

    provider.before_layer(0, Pass::kBackward);
    {
      LayerGrads g(*this, provider, 0);
      cpu::embedding_backward<T>(b.inputs, p.dh, g[0], n, d, c.vocab_size);
      g.flush();
    }
    provider.grad_ready(0);
    provider.after_layer(0, Pass::kBackward);
  }

  GptjConfig config_;
  ModelOptions options_;
  std::vector<std::vector<ParamSpec>> layer_specs_;  // per provider layer, params.h order
};

}  // namespace

std::unique_ptr<GptjModel> make_cpu_gptj(const GptjConfig& config, const ModelOptions& options) {
  switch (options.compute_dtype) {
    case DType::kF32: return std::make_unique<CpuGptj<float>>(config, options);
    case DType::kF64: return std::make_unique<CpuGptj<double>>(config, options);
    default:
      ZT_FAIL("the CPU model computes in fp32 or fp64, not ", dtype_name(options.compute_dtype));
  }
}

}  // namespace zt::model
