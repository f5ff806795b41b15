// The GPT-J layer walk, written once over a compute backend: forward, backward with the running
// residual gradient, activation recompute and the ParamProvider protocol. The CPU model
// (gptj_cpu.cpp) and the CUDA model (gptj_cuda.cpp) are GptjGraph over their backends.
//
// Data flow per micro-batch (N = batch * seq tokens, D = d_model, F = d_ff, V = vocab):
//   x[0] = wte[inputs]                                   layer 0
//   x[i+1] = block_i(x[i]),  i = 0..n_layer-1            layers 1..n_layer
//   logits = lm_head(ln_f(x[n_layer])), loss = CE         layer n_layer+1 (head)
// Backward runs the layers in reverse with one running residual gradient dh [N, D]: each block's
// backward reads dh as d(output) and leaves d(input) in it (the parallel residual makes that an
// in-place update: dh += d(ln_1 path)). With activation checkpointing only x[i] is kept and a
// block's activations are recomputed into one shared area right before its backward, except for
// the last ModelOptions::keep_activations blocks, which keep theirs from the forward, and the
// block before those, whose forward activations are still in the shared area. No block keeps
// ln_1(x) or gelu(fc_in(...)): the backward reruns those two cheap elementwise-sized ops into one
// scratch each (5 of a block's 13 [N, D]-sized tensors, for ~0.25 ms per GPT-J-6B block).
//
// Provider protocol, per layer and pass (the order zero/ relies on; tests record it):
//   forward:  before_layer(i, kForward), layer_params(i), after_layer(i, kForward)
//   backward: before_layer(i, kBackward), layer_params(i) (not for layer 0), layer_grads(i),
//             grad_ready(i), after_layer(i, kBackward); head first, embedding last.
//
// The Backend concept (everything GptjGraph<Backend> uses; the ops have the semantics of their
// namesakes in ops_cpu.h, with every pointer in the backend's memory):
//   using T = ...;          element type of activations, parameters and gradients
//   using Stat = ...;       element type of the LayerNorm statistics mean[N], rstd[N]
//   using AttnState = ...;  element type of the attention state saved for backward
//   using Memory = ...;     owner of one workspace allocation; has void* data()
//   using Tokens = ...;     the batch's token ids as the ops read them: members `ids` (and what
//                           the backend's cross_entropy needs)
//   using LossPending = ...;  what cross_entropy leaves until finish_loss
//   class LayerParams { LayerParams(Backend&, std::span<const Tensor>); const T* operator[](int); };
//   class LayerGrads  { LayerGrads(Backend&, std::span<const Tensor>); T* operator[](int);
//                       void flush(); };  flush: the layer's gradients are complete
//   static constexpr size_t kWorkspaceAlign;   alignment of every workspace piece, in bytes
//   void check_tensor(const Tensor&, const ParamSpec&, const char* what);  device and dtype
//   void check_tokens(const Batch&, bool need_targets);  host-side checks before any work
//   int64_t attention_state_count(batch, seq, heads);
//   Memory allocate_workspace(size_t bytes);
//   Tokens take_tokens(WorkspaceCarver&, const Batch&, bool need_targets);  carves what
//                           Tokens needs (targets are not read when !need_targets: logits())
//   void load_tokens(const Batch&, bool need_targets, Tokens&);  makes them readable by the ops
//   ops: embedding_forward/backward, layernorm_forward/backward, linear_forward/backward,
//        rotary_forward/backward, attention_forward/backward (backward gets the forward's `out`
//        too), gelu_forward/backward, add3, zero(T*, count);
//   LossPending cross_entropy(T* logits, const Tokens&, n, v, bool want_grad, double grad_scale):
//        per-token losses; with want_grad, logits become dlogits with dloss = grad_scale / count
//        (0 when nothing is counted);
//   void loss_queued(LossPending&);   the call's work is all queued (after the backward, if any);
//   LossSum finish_loss(const LossPending&);   waits for the work up to loss_queued, then gives
//        the loss sum and count; several losses may be pending at once, finished in any order;
//   void logits_to_host(const T* logits, int64_t count, float* out).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "model/gptj.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace zt::model {

// Carves typed pieces, each aligned to `align` bytes, out of one allocation. With a null base it
// only measures (every piece is nullptr), so one layout function both sizes and fills a
// workspace.
class WorkspaceCarver {
 public:
  WorkspaceCarver(void* base, size_t capacity, size_t align)
      : base_(static_cast<char*>(base)), capacity_(capacity), align_(align) {}

  template <class E>
  E* take(int64_t count) {
    used_ = (used_ + align_ - 1) / align_ * align_;
    E* p = base_ == nullptr ? nullptr : reinterpret_cast<E*>(base_ + used_);
    used_ += size_t(count) * sizeof(E);
    ZT_CHECK(base_ == nullptr || used_ <= capacity_, "workspace overflow: ", used_, " > ",
             capacity_, " bytes");
    return p;
  }
  size_t bytes() const { return used_; }

 private:
  char* base_;
  size_t capacity_;
  size_t align_;
  size_t used_ = 0;
};

template <class Backend>
class GptjGraph final : public GptjModel {
 public:
  using T = typename Backend::T;
  using Stat = typename Backend::Stat;
  using AttnState = typename Backend::AttnState;
  using Tokens = typename Backend::Tokens;
  using LayerParams = typename Backend::LayerParams;
  using LayerGrads = typename Backend::LayerGrads;

  template <class... BackendArgs>
  GptjGraph(const GptjConfig& config, const ModelOptions& options, BackendArgs&&... backend_args)
      : config_(config), options_(options), backend_(std::forward<BackendArgs>(backend_args)...) {
    config_.validate();
    ZT_CHECK(options_.keep_activations >= 0 && options_.keep_activations <= config_.n_layer,
             "keep_activations = ", options_.keep_activations, " must be in [0, n_layer = ",
             config_.n_layer, "]");
    const std::vector<ParamSpec> specs = gptj_param_specs(config_);
    layer_specs_.resize(size_t(num_layers_total(config_)));
    for (const ParamSpec& s : specs) layer_specs_[size_t(s.layer)].push_back(s);
  }

  const GptjConfig& config() const override { return config_; }

  LossTicket queue_forward(const Batch& batch, ParamProvider& params) override {
    check_batch(batch, true);
    Workspace p(*this, batch, /*kept_from=*/config_.n_layer, /*need_targets=*/true);
    run_forward(batch, params, p);
    auto pending = head_forward(batch, params, p, /*want_grad=*/false, 0.0);
    backend_.loss_queued(pending);
    return hand_out(std::move(pending));
  }

  LossTicket queue_forward_backward(const Batch& batch, ParamProvider& params,
                                    double grad_scale) override {
    check_batch(batch, true);
    Workspace p(*this, batch, first_kept_block(), /*need_targets=*/true);
    run_forward(batch, params, p);
    auto pending = head_forward(batch, params, p, /*want_grad=*/true, grad_scale);
    run_backward(batch, params, p);
    // The loss is read in collect: a backend that computes it asynchronously (CUDA) has the
    // whole backward, and maybe later micro-batches, queued behind it by then.
    backend_.loss_queued(pending);
    return hand_out(std::move(pending));
  }

  LossSum collect(LossTicket ticket) override {
    const auto it = pending_.find(ticket.id);
    ZT_CHECK(it != pending_.end(), "loss ticket ", ticket.id,
             " was not handed out by this model or is already collected");
    const auto pending = std::move(it->second);
    pending_.erase(it);
    return backend_.finish_loss(pending);
  }

  void logits(const Batch& batch, ParamProvider& params, float* out) override {
    check_batch(batch, false);
    Workspace p(*this, batch, /*kept_from=*/config_.n_layer, /*need_targets=*/false);
    run_forward(batch, params, p);
    head_logits(params, p);
    backend_.logits_to_host(p.logits, batch.tokens() * config_.vocab_size, out);
  }


 private:
  LossTicket hand_out(typename Backend::LossPending pending) {
    const LossTicket ticket{next_ticket_++};
    pending_.emplace(ticket.id, std::move(pending));
    return ticket;
  }

  // One block's saved activations; every pointer is [N, ...] row-major.
  // ln_1(x) and gelu(pre) are not among them: both are cheap to recompute from what is (x and
  // pre), so they live in one scratch each (Workspace::ln_out, Workspace::act) and the backward
  // recomputes them for a block whose forward is not the last one that wrote there.
  struct BlockActs {
    Stat* ln_mean;    // [N]
    Stat* ln_rstd;    // [N]
    T* q;             // [B, T, H, Dh] after rotary
    T* k;             // [B, T, H, Dh] after rotary
    T* v;             // [B, T, H, Dh]
    AttnState* attn;  // the backend's attention state (CPU: probs [B, H, T, T]; CUDA: lse [B, H, T])
    T* ctx;           // [N, D] attention output before out_proj
    T* pre;           // [N, F] fc_in output before gelu
  };

  // The first block whose activations the forward keeps for the backward: 0 without
  // checkpointing, n_layer when every block is recomputed.
  int64_t first_kept_block() const {
    return options_.activation_checkpointing ? config_.n_layer - options_.keep_activations : 0;
  }

  // Everything one forward(+backward) needs, in one backend allocation made per call (the
  // backend accounts it as activations). Blocks kept_from.. have their own activations; the
  // blocks before share one area (recomputed in the backward, or dropped by a forward only).
  struct Workspace {
    Workspace(GptjGraph& m, const Batch& batch, int64_t kept_from, bool need_targets)
        : n(batch.tokens()), kept_from(kept_from) {
      WorkspaceCarver measure(nullptr, 0, Backend::kWorkspaceAlign);
      layout(m, batch, need_targets, measure);
      memory = m.backend_.allocate_workspace(measure.bytes());
      WorkspaceCarver carve(memory.data(), measure.bytes(), Backend::kWorkspaceAlign);
      layout(m, batch, need_targets, carve);
      m.backend_.load_tokens(batch, need_targets, tokens);
    }

    // Takes every piece from `a` in a fixed order (run once to measure, once to carve).
    void layout(GptjGraph& m, const Batch& b, bool need_targets, WorkspaceCarver& a) {
      const GptjConfig& c = m.config_;
      const int64_t d = c.d_model, f = c.d_ff;
      xs.clear();
      blocks.clear();
      for (int64_t i = 0; i <= c.n_layer; ++i) xs.push_back(a.take<T>(n * d));
      // blocks[0] is the shared area when some block has none of its own.
      const int64_t acts = (c.n_layer - kept_from) + (kept_from > 0 ? 1 : 0);
      for (int64_t i = 0; i < acts; ++i) {
        BlockActs s;
        s.ln_mean = a.take<Stat>(n);
        s.ln_rstd = a.take<Stat>(n);
        s.q = a.take<T>(n * d);
        s.k = a.take<T>(n * d);
        s.v = a.take<T>(n * d);
        s.attn = a.take<AttnState>(m.backend_.attention_state_count(b.batch_size, b.seq_len, c.n_head));
        s.ctx = a.take<T>(n * d);
        s.pre = a.take<T>(n * f);
        blocks.push_back(s);
      }
      ln_out = a.take<T>(n * d);
      tmp = a.take<T>(n * d);
      dh = a.take<T>(n * d);
      hf = a.take<T>(n * d);
      hf_mean = a.take<Stat>(n);
      hf_rstd = a.take<Stat>(n);
      logits = a.take<T>(n * c.vocab_size);
      d_ctx = a.take<T>(n * d);
      dq = a.take<T>(n * d);
      dk = a.take<T>(n * d);
      dv = a.take<T>(n * d);
      d_act = a.take<T>(n * f);
      d_pre = a.take<T>(n * f);
      act = d_pre;
      tokens = m.backend_.take_tokens(a, b, need_targets);
    }

    // True when block i has its own activations from the forward (no recompute).
    bool kept(int64_t block) const { return block >= kept_from; }
    BlockActs& acts(int64_t block) {
      if (!kept(block)) return blocks[0];
      return blocks[size_t(block - kept_from + (kept_from > 0 ? 1 : 0))];
    }

    int64_t n;
    int64_t kept_from;
    typename Backend::Memory memory;
    std::vector<T*> xs;  // x[i]: input of block i; x[n_layer]: input of the head
    std::vector<BlockActs> blocks;
    T* ln_out;  // [N, D] ln_1(x) of the block that last ran its forward or recompute
    T* act;     // [N, F] its gelu(pre); shares d_pre's memory (the backward reads act for fc_out's
                // weight gradient before gelu_backward writes d_pre; a forward writes no d_pre)
    T* tmp;    // [N, D] scratch
    T* dh;     // [N, D] running residual gradient
    T* hf;     // [N, D] ln_f output
    Stat* hf_mean;
    Stat* hf_rstd;
    T* logits;  // [N, V]; overwritten by dlogits in backward
    T* d_ctx;   // [N, D]
    T* dq;
    T* dk;
    T* dv;
    T* d_act;  // [N, F]
    T* d_pre;  // [N, F]
    Tokens tokens;
  };

  void check_layer_tensors(std::span<const Tensor> ts, int layer, const char* what) {
    const std::vector<ParamSpec>& specs = layer_specs_[size_t(layer)];
    ZT_CHECK(ts.size() == specs.size(), "provider gave ", ts.size(), " ", what, " for layer ",
             layer, ", the model expects ", specs.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      backend_.check_tensor(ts[i], specs[i], what);
      ZT_CHECK(ts[i].numel() == specs[i].numel(), what, " of ", specs[i].name, ": got ",
               ts[i].shape.str(), ", expected ", specs[i].shape.str());
    }
  }

  LayerParams bind_params(ParamProvider& provider, int layer) {
    const std::span<const Tensor> ts = provider.layer_params(layer);
    check_layer_tensors(ts, layer, "parameters");
    return LayerParams(backend_, ts);
  }

  LayerGrads bind_grads(ParamProvider& provider, int layer) {
    const std::span<const Tensor> ts = provider.layer_grads(layer);
    check_layer_tensors(ts, layer, "gradients");
    return LayerGrads(backend_, ts);
  }

  void check_batch(const Batch& batch, bool need_targets) {
    ZT_CHECK(batch.inputs != nullptr && (!need_targets || batch.targets != nullptr),
             "batch without token ids");
    ZT_CHECK(batch.batch_size >= 1 && batch.seq_len >= 1, "empty batch ", batch.batch_size, "x",
             batch.seq_len);
    ZT_CHECK(batch.seq_len <= config_.n_positions, "sequence length ", batch.seq_len,
             " exceeds model.n_positions = ", config_.n_positions);
    backend_.check_tokens(batch, need_targets);
  }

  // p.ln_out = ln_1(x), with x's statistics in `a`: the block forward's first op, which the
  // backward reruns when the scratch no longer holds it.
  void ln_1(const LayerParams& w, const T* x, BlockActs& a, Workspace& p, int64_t n) {
    backend_.layernorm_forward(x, w[kLn1Weight], w[kLn1Bias], p.ln_out, a.ln_mean, a.ln_rstd, n,
                               config_.d_model, config_.layer_norm_eps);
  }

  // Block forward: x [N, D] -> y [N, D], filling `a` and the scratch p.ln_out and p.act. A
  // recompute passes y = nullptr: the backward reads only those, so out_proj, fc_out and the
  // residual sum (5 of the block's 12 d^2 GEMM FLOPs per token) are skipped.
  void block_forward(const Batch& b, const LayerParams& w, const T* x, T* y, BlockActs& a,
                     Workspace& p) {
    const GptjConfig& c = config_;
    const int64_t n = b.tokens(), d = c.d_model, f = c.d_ff, hd = c.head_dim();
    Backend& k = backend_;
    ln_1(w, x, a, p, n);
    k.linear_forward(p.ln_out, w[kQProj], nullptr, a.q, n, d, d);
    k.linear_forward(p.ln_out, w[kKProj], nullptr, a.k, n, d, d);
    k.linear_forward(p.ln_out, w[kVProj], nullptr, a.v, n, d, d);
    k.rotary_forward(a.q, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    k.rotary_forward(a.k, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    k.attention_forward(a.q, a.k, a.v, a.ctx, a.attn, b.batch_size, b.seq_len, c.n_head, hd);
    k.linear_forward(p.ln_out, w[kFcInWeight], w[kFcInBias], a.pre, n, d, f);
    k.gelu_forward(a.pre, p.act, n * f);
    if (y == nullptr) return;
    // Parallel residual: y = x + out_proj(ctx) + fc_out(gelu(fc_in(ln_1(x)))).
    k.linear_forward(a.ctx, w[kOutProj], nullptr, y, n, d, d);
    k.linear_forward(p.act, w[kFcOutWeight], w[kFcOutBias], p.tmp, n, f, d);
    k.add3(x, y, p.tmp, y, n * d);
  }

  // Block backward: dh [N, D] holds d(y) on entry and d(x) on exit. `scratch_fresh`: p.ln_out
  // and p.act still hold this block's ln_1(x) and gelu(pre) (its forward or recompute was the
  // last to write them); otherwise they are recomputed first, by the same ops on the same
  // inputs, so bit for bit.
  void block_backward(const Batch& b, const LayerParams& w, LayerGrads& g, const T* x,
                      BlockActs& a, Workspace& p, bool scratch_fresh) {
    const GptjConfig& c = config_;
    const int64_t n = b.tokens(), d = c.d_model, f = c.d_ff, hd = c.head_dim();
    Backend& k = backend_;
    if (!scratch_fresh) {
      ln_1(w, x, a, p, n);
      k.gelu_forward(a.pre, p.act, n * f);
    }
    T* dh = p.dh;
    // MLP path: fc_out, gelu, fc_in; d(ln_out) lands in p.tmp. p.act is read before
    // gelu_backward overwrites its memory (d_pre).
    k.linear_backward(dh, p.act, w[kFcOutWeight], p.d_act, g[kFcOutWeight], g[kFcOutBias], n, f,
                      d, false);
    k.gelu_backward(a.pre, p.d_act, p.d_pre, n * f);
    k.linear_backward(p.d_pre, p.ln_out, w[kFcInWeight], p.tmp, g[kFcInWeight], g[kFcInBias], n,
                      d, f, false);
    // Attention path: out_proj, attention, rotary, q/k/v; d(ln_out) added into p.tmp.
    k.linear_backward(dh, a.ctx, w[kOutProj], p.d_ctx, g[kOutProj], nullptr, n, d, d, false);
    k.attention_backward(p.d_ctx, a.q, a.k, a.v, a.ctx, a.attn, p.dq, p.dk, p.dv, b.batch_size,
                         b.seq_len, c.n_head, hd);
    k.rotary_backward(p.dq, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    k.rotary_backward(p.dk, b.batch_size, b.seq_len, c.n_head, hd, c.rotary_dim);
    k.linear_backward(p.dq, p.ln_out, w[kQProj], p.tmp, g[kQProj], nullptr, n, d, d, true);
    k.linear_backward(p.dk, p.ln_out, w[kKProj], p.tmp, g[kKProj], nullptr, n, d, d, true);
    k.linear_backward(p.dv, p.ln_out, w[kVProj], p.tmp, g[kVProj], nullptr, n, d, d, true);
    // ln_1: dh (the residual gradient) += d(x) through the norm.
    k.layernorm_backward(p.tmp, x, w[kLn1Weight], a.ln_mean, a.ln_rstd, dh, g[kLn1Weight],
                         g[kLn1Bias], n, d);
  }

  void run_forward(const Batch& b, ParamProvider& provider, Workspace& p) {
    const GptjConfig& c = config_;
    provider.before_layer(0, Pass::kForward);
    {
      const LayerParams w = bind_params(provider, 0);
      backend_.embedding_forward(p.tokens.ids, w[0], p.xs[0], p.n, c.d_model, c.vocab_size);
    }
    provider.after_layer(0, Pass::kForward);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      const int layer = int(i) + 1;
      provider.before_layer(layer, Pass::kForward);
      {
        const LayerParams w = bind_params(provider, layer);
        block_forward(b, w, p.xs[size_t(i)], p.xs[size_t(i) + 1], p.acts(i), p);
      }
      provider.after_layer(layer, Pass::kForward);
    }
  }

  // ln_f and lm_head: fills p.hf and p.logits. The caller brackets it with before/after_layer.
  void head_compute(const LayerParams& w, Workspace& p) {
    const GptjConfig& c = config_;
    backend_.layernorm_forward(p.xs.back(), w[kLnFWeight], w[kLnFBias], p.hf, p.hf_mean,
                               p.hf_rstd, p.n, c.d_model, c.layer_norm_eps);
    backend_.linear_forward(p.hf, w[kLmHeadWeight], w[kLmHeadBias], p.logits, p.n, c.d_model,
                            c.vocab_size);
  }

  void head_logits(ParamProvider& provider, Workspace& p) {
    const int head = head_layer(config_);
    provider.before_layer(head, Pass::kForward);
    {
      const LayerParams w = bind_params(provider, head);
      head_compute(w, p);
    }
    provider.after_layer(head, Pass::kForward);
  }

  // Forward through the head and the loss; with want_grad, also turns logits into dlogits.
  auto head_forward(const Batch& b, ParamProvider& provider, Workspace& p, bool want_grad,
                    double grad_scale) {
    head_logits(provider, p);
    return backend_.cross_entropy(p.logits, p.tokens, p.n, config_.vocab_size, want_grad,
                                  grad_scale);
  }

  void run_backward(const Batch& b, ParamProvider& provider, Workspace& p) {
    const GptjConfig& c = config_;
    const int64_t n = p.n, d = c.d_model;
    const int head = head_layer(c);
    provider.before_layer(head, Pass::kBackward);
    {
      const LayerParams w = bind_params(provider, head);
      LayerGrads g = bind_grads(provider, head);
      backend_.linear_backward(p.logits, p.hf, w[kLmHeadWeight], p.tmp, g[kLmHeadWeight],
                               g[kLmHeadBias], n, d, c.vocab_size, false);
      backend_.zero(p.dh, n * d);
      backend_.layernorm_backward(p.tmp, p.xs.back(), w[kLnFWeight], p.hf_mean, p.hf_rstd, p.dh,
                                  g[kLnFWeight], g[kLnFBias], n, d);
      g.flush();
    }
    provider.grad_ready(head);
    provider.after_layer(head, Pass::kBackward);

    for (int64_t i = c.n_layer - 1; i >= 0; --i) {
      const int layer = int(i) + 1;
      provider.before_layer(layer, Pass::kBackward);
      {
        const LayerParams w = bind_params(provider, layer);
        // The shared area still holds the forward's activations of the last block that used it
        // (kept blocks and the head have their own memory), so that block needs no recompute.
        const bool recompute = !p.kept(i) && i != p.kept_from - 1;
        if (recompute) {
          // Recompute this block's activations from its saved input; its output equals
          // x[i+1] and is not computed again.
          block_forward(b, w, p.xs[size_t(i)], /*y=*/nullptr, p.acts(i), p);
        }
        // The last block's forward was the last to write the scratch, too.
        const bool scratch_fresh = recompute || i == c.n_layer - 1;
        LayerGrads g = bind_grads(provider, layer);
        block_backward(b, w, g, p.xs[size_t(i)], p.acts(i), p, scratch_fresh);
        g.flush();
      }
      provider.grad_ready(layer);
      provider.after_layer(layer, Pass::kBackward);
    }

    provider.before_layer(0, Pass::kBackward);
    {
      LayerGrads g = bind_grads(provider, 0);
      backend_.embedding_backward(p.tokens.ids, p.dh, g[0], n, d, c.vocab_size);
      g.flush();
    }
    provider.grad_ready(0);
    provider.after_layer(0, Pass::kBackward);
  }

  GptjConfig config_;
  ModelOptions options_;
  Backend backend_;
  std::vector<std::vector<ParamSpec>> layer_specs_;  // per provider layer, params.h order
  std::map<int64_t, typename Backend::LossPending> pending_;  // by ticket id, not collected yet
  int64_t next_ticket_ = 0;
};

}  // namespace zt::model
