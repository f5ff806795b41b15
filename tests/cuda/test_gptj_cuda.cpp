// The CUDA GPT-J (make_cuda_gptj) against the CPU model fed the same 16-bit parameters: loss,
// logits and every parameter gradient within bounds derived from the dtype's rounding; bitwise
// determinism with and without activation recompute; the provider protocol; input checks before
// any device work; stream-ordered Buffer accounting.
//
// Note "CUDA model tolerances". u is the unit roundoff of the storage dtype dt (bf16 2^-8, fp16
// 2^-11). The CPU reference computes in fp32 from the same dt-rounded parameters, so the
// difference is the CUDA model's roundings of every stored intermediate to dt (fp32 arithmetic
// and accumulation add ~2^-24 per term, negligible here). Each rounding is a relative error of at
// most u on one tensor; the models here are in the well-conditioned regime of GPT-J's init
// (init_std 0.02; 0.1 for the small config), where every op passes relative errors on with a gain
// near 1, and the roundings of different tensors are independent, so along a chain of R roundings
// the relative errors add in quadrature, about sqrt(R) u.
// - Logits: the forward path from the embedding to the logits rounds ~16 times (per block:
//   ln_1, q/k, rotary, the attention's probabilities and output, out_proj, fc_in, gelu, fc_out,
//   the residual sum -- of which ~7 lie on any one path -- twice, then ln_f and lm_head):
//   sqrt(16) = 4, so ||z_cuda - z_cpu|| / ||z_cpu|| < 4u.
// - Loss: a per-token loss logsumexp(z) - z[target] moves by at most 2 max|dz|; with
//   |dz| <= 4u max|z| (the logits bound, taken elementwise at the largest logit), the mean loss
//   differs by at most 8u max|z|.
// - Gradients: the deepest gradient (layer 0's attention weights) passes both blocks' forward,
//   the head, the cross-entropy and both blocks' backward: ~35 roundings, sqrt(35) ~ 6; we
//   allow ||g_cuda - g_cpu|| / ||g_cpu|| < 8u per tensor.
// A CPU emulation of the CUDA model (fp32 ops with every stored result, and the attention's
// probabilities and dS, rounded to dt) on these configs, tokens and seeds gave at most 1.5u for
// the logits, 0.2u for the loss (absolute) and 2.6u for any gradient tensor, in bf16 and fp16.
// Bugs (a wrong sign, a missing term, a transposed weight) give relative errors of order 1.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "model/params.h"
#include "model/provider.h"
#include "runtime/cuda/context.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/rng.h"
#include "tests/support/device_provider.h"
#include "tests/support/host_provider.h"
#include "zero/memory_estimate.h"

namespace zt::model {
namespace {

using zt::testing::DeviceProvider;
using zt::testing::HostProvider;

// See "CUDA model tolerances" above.
constexpr double kLogitsFactor = 4.0;
constexpr double kGradFactor = 8.0;
constexpr double kU32 = 0x1p-24;  // fp32 unit roundoff
constexpr uint64_t kParamSeed = 5;
constexpr uint64_t kTokenSeed = 7;

double unit_roundoff(DType dt) { return dt == DType::kBF16 ? 0x1p-8 : 0x1p-11; }

// bf16 trains at grad_scale 1; fp16 needs a loss scale to keep small gradients out of its
// subnormal range (dlogits ~ 1 / (count * vocab) would be ~3e-5 < 2^-14), as training does.
double grad_scale_for(DType dt) { return dt == DType::kBF16 ? 1.0 : 1024.0; }

// One context for the suite, made on first use (after the skip check) and never destroyed (its
// destructor would run after the CUDA runtime is torn down at exit).
CudaContext& ctx() {
  static CudaContext* context = new CudaContext(0);
  return *context;
}

struct Case {
  std::string name;
  GptjConfig config;
  int64_t batch = 1;
  int64_t seq = 1;
};

// Odd sizes: vocab 37 (logit rows not 16-byte aligned: the unvectorised cross-entropy), 57
// tokens, rotary on 8 of 32 head dims.
Case small_case() {
  GptjConfig c;
  c.vocab_size = 37;
  c.n_positions = 64;
  c.d_model = 64;
  c.n_layer = 2;
  c.n_head = 2;
  c.rotary_dim = 8;
  c.d_ff = 96;
  c.init_std = 0.1;
  return Case{"small", c, 3, 19};
}
// gptj-tiny (head_dim 32); 70 tokens per sequence cross the attention's 64-query tiles.
Case tiny_case() { return Case{"gptj-tiny", gptj_preset("gptj-tiny"), 2, 70}; }
// GPT-J-6B's head_dim 256 and rotary_dim 64.
Case wide_case() {
  GptjConfig c;
  c.vocab_size = 512;
  c.n_positions = 128;
  c.d_model = 512;
  c.n_layer = 2;
  c.n_head = 2;
  c.rotary_dim = 64;
  c.d_ff = 1024;
  return Case{"head_dim-256", c, 2, 72};
}
std::vector<Case> all_cases() { return {small_case(), tiny_case(), wide_case()}; }

constexpr DType kDTypes[] = {DType::kBF16, DType::kF16};

struct Tokens {
  std::vector<int32_t> inputs, targets;
  Batch batch(int64_t b, int64_t t) const { return Batch{inputs.data(), targets.data(), b, t}; }
};

// Random ids and targets; two targets are the ignore index.
Tokens random_tokens(const Case& k, uint64_t seed = kTokenSeed) {
  const int64_t n = k.batch * k.seq;
  const uint64_t v = uint64_t(k.config.vocab_size);
  Tokens tk;
  for (int64_t i = 0; i < n; ++i) {
    tk.inputs.push_back(int32_t(random_bits(seed, 0, uint64_t(i)) % v));
    tk.targets.push_back(int32_t(random_bits(seed, 1, uint64_t(i)) % v));
  }
  tk.targets[1] = tk.targets[size_t(n - 2)] = -100;
  return tk;
}

// The CPU twin's parameters: fp32 holding exactly the device provider's dt values.
void copy_params(const DeviceProvider& from, HostProvider& to) {
  for (size_t i = 0; i < from.num_params(); ++i)
    for (int64_t j = 0; j < from.specs()[i].numel(); ++j) to.set_param(i, j, from.param(i, j));
}

std::vector<double> host_grad(const HostProvider& p, size_t i) {
  std::vector<double> g(size_t(p.specs()[i].numel()));
  for (size_t j = 0; j < g.size(); ++j) g[j] = p.grad(i, int64_t(j));
  return g;
}

double norm(const std::vector<double>& a) {
  double s = 0;
  for (double x : a) s += x * x;
  return std::sqrt(s);
}
template <class A, class B>
double diff_norm(const A& a, const B& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
  return std::sqrt(s);
}

// Wraps a provider and records every call, layer_params and layer_grads included.
class RecordingProvider final : public ParamProvider {
 public:
  explicit RecordingProvider(ParamProvider& inner) : inner_(inner) {}
  void before_layer(int layer, Pass pass) override {
    calls.push_back("before " + pass_name(pass) + std::to_string(layer));
    inner_.before_layer(layer, pass);
  }
  void after_layer(int layer, Pass pass) override {
    calls.push_back("after " + pass_name(pass) + std::to_string(layer));
    inner_.after_layer(layer, pass);
  }
  std::span<const Tensor> layer_params(int layer) override {
    calls.push_back("params " + std::to_string(layer));
    return inner_.layer_params(layer);
  }
  std::span<const Tensor> layer_grads(int layer) override {
    calls.push_back("grads " + std::to_string(layer));
    return inner_.layer_grads(layer);
  }
  void grad_ready(int layer) override {
    calls.push_back("ready " + std::to_string(layer));
    inner_.grad_ready(layer);
  }
  std::vector<std::string> calls;

 private:
  static std::string pass_name(Pass pass) { return pass == Pass::kForward ? "fwd " : "bwd "; }
  ParamProvider& inner_;
};

// ---------------------------------------------------------------------------------------------

TEST(GptjCuda, LossMatchesCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    for (const Case& k : all_cases()) {
      SCOPED_TRACE(k.name + " " + std::string(dtype_name(dt)));
      const GptjConfig& c = k.config;
      DeviceProvider dev(c, dt, kParamSeed, ctx());
      HostProvider ref(c, DType::kF32, kParamSeed);
      copy_params(dev, ref);
      const Tokens tk = random_tokens(k);
      const Batch batch = tk.batch(k.batch, k.seq);
      auto gpu = make_cuda_gptj(c, ModelOptions{false, dt}, ctx());
      auto cpu = make_cpu_gptj(c, ModelOptions{false, DType::kF32});
      const LossSum lg = gpu->forward(batch, dev);
      const LossSum lc = cpu->forward(batch, ref);
      EXPECT_EQ(lg.count, batch.tokens() - 2);
      EXPECT_EQ(lg.count, lc.count);
      std::vector<float> z(size_t(batch.tokens() * c.vocab_size));
      cpu->logits(batch, ref, z.data());
      double max_z = 0;
      for (float v : z) max_z = std::max(max_z, double(std::fabs(v)));
      // 2 max|dz| with |dz| <= kLogitsFactor u max|z| (see the note).
      EXPECT_NEAR(lg.mean(), lc.mean(), 2 * kLogitsFactor * unit_roundoff(dt) * max_z);
      EXPECT_TRUE(std::isfinite(lg.sum));
    }
  }
}

TEST(GptjCuda, GradientsMatchCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    for (const Case& k : all_cases()) {
      SCOPED_TRACE(k.name + " " + std::string(dtype_name(dt)));
      const GptjConfig& c = k.config;
      DeviceProvider dev(c, dt, kParamSeed, ctx());
      HostProvider ref(c, DType::kF32, kParamSeed);
      copy_params(dev, ref);
      const Tokens tk = random_tokens(k);
      const Batch batch = tk.batch(k.batch, k.seq);
      const double scale = grad_scale_for(dt);
      const LossSum lg =
          make_cuda_gptj(c, ModelOptions{false, dt}, ctx())->forward_backward(batch, dev, scale);
      const LossSum lc = make_cpu_gptj(c, ModelOptions{false, DType::kF32})
                             ->forward_backward(batch, ref, scale);
      EXPECT_EQ(lg.count, lc.count);
      const double bound = kGradFactor * unit_roundoff(dt);
      for (size_t i = 0; i < dev.num_params(); ++i) {
        const std::vector<double> g = dev.grad(i), r = host_grad(ref, i);
        const double r_norm = norm(r);
        ASSERT_GT(r_norm, 0.0) << dev.specs()[i].name;  // the comparison is not vacuous
        const double rel = diff_norm(g, r) / r_norm;
        EXPECT_LT(rel, bound) << dev.specs()[i].name << ": relative error " << rel << " = "
                              << rel / unit_roundoff(dt) << " u";
      }
    }
  }
}

// Recompute reruns the same deterministic kernels on the same inputs, at addresses of the same
// alignment (256 bytes), so it reproduces the saved activations bit for bit.
TEST(GptjCuda, CheckpointingGivesBitIdenticalGradientsAndLoss) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    for (const Case& k : all_cases()) {
      SCOPED_TRACE(k.name + " " + std::string(dtype_name(dt)));
      const GptjConfig& c = k.config;
      const Tokens tk = random_tokens(k);
      const Batch batch = tk.batch(k.batch, k.seq);
      DeviceProvider plain(c, dt, kParamSeed, ctx());
      const LossSum a = make_cuda_gptj(c, ModelOptions{false, dt}, ctx())
                            ->forward_backward(batch, plain, grad_scale_for(dt));
      const std::vector<uint16_t> ga = plain.grad_bits();
      // Every block recomputed, then the last one kept (keep_activations), then all kept.
      for (int64_t keep : {int64_t(0), int64_t(1), c.n_layer}) {
        SCOPED_TRACE("keep_activations " + std::to_string(keep));
        DeviceProvider recomputed(c, dt, kParamSeed, ctx());
        const LossSum b = make_cuda_gptj(c, ModelOptions{true, dt, keep}, ctx())
                              ->forward_backward(batch, recomputed, grad_scale_for(dt));
        EXPECT_EQ(a.sum, b.sum);
        EXPECT_EQ(a.count, b.count);
        const std::vector<uint16_t> gb = recomputed.grad_bits();
        ASSERT_EQ(ga.size(), gb.size());
        for (size_t i = 0; i < ga.size(); ++i) ASSERT_EQ(ga[i], gb[i]) << "gradient element " << i;
      }
    }
  }
}

TEST(GptjCuda, RunsAreBitIdentical) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    const Case k = tiny_case();
    SCOPED_TRACE(dtype_name(dt));
    const Tokens tk = random_tokens(k);
    const Batch batch = tk.batch(k.batch, k.seq);
    auto model = make_cuda_gptj(k.config, ModelOptions{false, dt}, ctx());
    DeviceProvider p(k.config, dt, kParamSeed, ctx());
    const LossSum first = model->forward_backward(batch, p, grad_scale_for(dt));
    const std::vector<uint16_t> g_first = p.grad_bits();
    // Again with the same model (its staging memory and the pool's blocks reused) and with a new
    // model object.
    p.zero_grads();
    const LossSum second = model->forward_backward(batch, p, grad_scale_for(dt));
    EXPECT_EQ(first.sum, second.sum);
    EXPECT_EQ(p.grad_bits(), g_first);
    p.zero_grads();
    const LossSum third = make_cuda_gptj(k.config, ModelOptions{false, dt}, ctx())
                              ->forward_backward(batch, p, grad_scale_for(dt));
    EXPECT_EQ(first.sum, third.sum);
    EXPECT_EQ(p.grad_bits(), g_first);
    // The forward alone computes the same loss as the forward of forward_backward.
    EXPECT_EQ(model->forward(batch, p).sum, first.sum);
  }
}

// Queuing micro-batches (one host token buffer, rewritten after each queue call) and reading the
// losses afterwards gives bit for bit what forward_backward gives call by call; a forward, or a
// queued forward collected first, while losses are pending does not disturb them; the host slots
// are reused on the next round.
TEST(GptjCuda, QueuedMicroBatchesMatchSynchronousCalls) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    const Case k = tiny_case();
    SCOPED_TRACE(dtype_name(dt));
    constexpr int kMicro = 3;
    std::vector<Tokens> tks;
    for (int i = 0; i < kMicro; ++i) tks.push_back(random_tokens(k, kTokenSeed + uint64_t(i)));
    const double scale = grad_scale_for(dt) / kMicro;
    auto model = make_cuda_gptj(k.config, ModelOptions{false, dt}, ctx());
    DeviceProvider p(k.config, dt, kParamSeed, ctx());
    std::vector<LossSum> expect;
    for (const Tokens& tk : tks) expect.push_back(model->forward_backward(tk.batch(k.batch, k.seq), p, scale));
    const std::vector<uint16_t> g_sync = p.grad_bits();
    for (int round = 0; round < 2; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      p.zero_grads();
      Tokens shared;
      std::vector<LossTicket> tickets;
      for (const Tokens& tk : tks) {
        shared = tk;
        tickets.push_back(model->queue_forward_backward(shared.batch(k.batch, k.seq), p, scale));
        std::fill(shared.inputs.begin(), shared.inputs.end(), 0);
        std::fill(shared.targets.begin(), shared.targets.end(), -100);
      }
      if (round == 1) {
        EXPECT_EQ(model->forward(tks[0].batch(k.batch, k.seq), p).sum, expect[0].sum);
        const LossTicket eval = model->queue_forward(tks[1].batch(k.batch, k.seq), p);
        EXPECT_EQ(model->collect(eval).sum, expect[1].sum);
      }
      for (int i = 0; i < kMicro; ++i) {
        const LossSum got = model->collect(tickets[size_t(i)]);
        EXPECT_EQ(got.sum, expect[size_t(i)].sum) << "micro-batch " << i;
        EXPECT_EQ(got.count, expect[size_t(i)].count) << "micro-batch " << i;
      }
      EXPECT_EQ(p.grad_bits(), g_sync);
      EXPECT_THROW(model->collect(tickets[0]), Error);
    }
  }
}

TEST(GptjCuda, WalksTheProviderInTheCpuModelsOrder) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = tiny_case();
  const Tokens tk = random_tokens(k);
  const Batch batch = tk.batch(k.batch, k.seq);
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "with recompute" : "without recompute");
    DeviceProvider dev(k.config, DType::kBF16, kParamSeed, ctx());
    HostProvider host(k.config, DType::kF32, kParamSeed);
    RecordingProvider rec_gpu(dev), rec_cpu(host);
    auto gpu = make_cuda_gptj(k.config, ModelOptions{checkpointing, DType::kBF16}, ctx());
    auto cpu = make_cpu_gptj(k.config, ModelOptions{checkpointing, DType::kF32});
    std::vector<float> logits(size_t(batch.tokens() * k.config.vocab_size));
    gpu->forward(batch, rec_gpu);
    gpu->forward_backward(batch, rec_gpu, 1.0);
    gpu->logits(batch, rec_gpu, logits.data());
    cpu->forward(batch, rec_cpu);
    cpu->forward_backward(batch, rec_cpu, 1.0);
    cpu->logits(batch, rec_cpu, logits.data());
    EXPECT_EQ(rec_gpu.calls, rec_cpu.calls);
    EXPECT_EQ(dev.calls, host.calls);
    // Spot checks of the protocol itself: the backward starts at the head, asks for the head's
    // parameters before its gradients, and ends with the embedding without its parameters.
    const std::vector<std::string>& calls = rec_gpu.calls;
    const auto bwd = std::find(calls.begin(), calls.end(), "before bwd 3");
    ASSERT_NE(bwd, calls.end());
    EXPECT_EQ(*(bwd + 1), "params 3");
    EXPECT_EQ(*(bwd + 2), "grads 3");
    const auto emb = std::find(calls.begin(), calls.end(), "before bwd 0");
    ASSERT_NE(emb, calls.end());
    EXPECT_EQ(*(emb + 1), "grads 0");
  }
}

TEST(GptjCuda, LogitsMatchCpuAndTheLoss) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (DType dt : kDTypes) {
    for (const Case& k : all_cases()) {
      SCOPED_TRACE(k.name + " " + std::string(dtype_name(dt)));
      const GptjConfig& c = k.config;
      DeviceProvider dev(c, dt, kParamSeed, ctx());
      HostProvider ref(c, DType::kF32, kParamSeed);
      copy_params(dev, ref);
      Tokens tk = random_tokens(k);
      Batch batch = tk.batch(k.batch, k.seq);
      auto gpu = make_cuda_gptj(c, ModelOptions{false, dt}, ctx());
      const size_t count = size_t(batch.tokens() * c.vocab_size);
      std::vector<float> zg(count, NAN), zc(count);
      Batch no_targets = batch;
      no_targets.targets = nullptr;  // logits() never reads them
      gpu->logits(no_targets, dev, zg.data());
      make_cpu_gptj(c, ModelOptions{false, DType::kF32})->logits(batch, ref, zc.data());
      std::vector<double> zc_d(zc.begin(), zc.end());
      const double rel = diff_norm(zg, zc) / norm(zc_d);
      EXPECT_LT(rel, kLogitsFactor * unit_roundoff(dt))
          << "relative error " << rel / unit_roundoff(dt) << " u";
      // The loss is the cross-entropy of exactly these (dt-valued) logits, evaluated in fp32: a
      // sum of V exponentials (relative error <= (V + 4) u32, i.e. that much absolute after the
      // log) and one rounding of each per-token loss (u32 |loss|); doubled for margin.
      double sum = 0;
      int64_t counted = 0;
      for (int64_t i = 0; i < batch.tokens(); ++i) {
        if (tk.targets[size_t(i)] == -100) continue;
        const float* row = zg.data() + i * c.vocab_size;
        double mx = row[0], s = 0;
        for (int64_t v = 0; v < c.vocab_size; ++v) mx = std::max(mx, double(row[v]));
        for (int64_t v = 0; v < c.vocab_size; ++v) s += std::exp(double(row[v]) - mx);
        sum += std::log(s) + mx - row[tk.targets[size_t(i)]];
        ++counted;
      }
      const LossSum loss = gpu->forward(batch, dev);
      ASSERT_EQ(loss.count, counted);
      const double mean = sum / double(counted);
      EXPECT_NEAR(loss.mean(), mean, 2 * (double(c.vocab_size + 4) + mean) * kU32);
    }
  }
}

// grad_scale multiplies dloss by 2; every op of the backward is linear in dlogits and a factor of
// 2 commutes with rounding (no bf16 value here is near overflow or subnormal), so every gradient
// doubles exactly.
TEST(GptjCuda, GradScaleOfTwoDoublesEveryGradientExactly) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = tiny_case();
  const Tokens tk = random_tokens(k);
  const Batch batch = tk.batch(k.batch, k.seq);
  auto model = make_cuda_gptj(k.config, ModelOptions{false, DType::kBF16}, ctx());
  DeviceProvider one(k.config, DType::kBF16, kParamSeed, ctx());
  DeviceProvider two(k.config, DType::kBF16, kParamSeed, ctx());
  const LossSum a = model->forward_backward(batch, one, 1.0);
  const LossSum b = model->forward_backward(batch, two, 2.0);
  EXPECT_EQ(a.sum, b.sum);  // the loss itself does not depend on the scale
  for (size_t i = 0; i < one.num_params(); ++i) {
    const std::vector<double> g1 = one.grad(i), g2 = two.grad(i);
    for (size_t j = 0; j < g1.size(); ++j)
      ASSERT_EQ(g2[j], 2 * g1[j]) << one.specs()[i].name << "[" << j << "]";
  }
}

// No counted token: the loss is 0 over 0 tokens and nothing is added to any gradient (the fused
// cross-entropy writes no gradient when dloss is 0; the model zeroes the logits instead).
TEST(GptjCuda, BatchWithoutCountedTokensAddsNothing) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = small_case();
  Tokens tk = random_tokens(k);
  std::fill(tk.targets.begin(), tk.targets.end(), -100);
  DeviceProvider p(k.config, DType::kBF16, kParamSeed, ctx());
  const LossSum loss = make_cuda_gptj(k.config, ModelOptions{false, DType::kBF16}, ctx())
                           ->forward_backward(tk.batch(k.batch, k.seq), p, 1.0);
  EXPECT_EQ(loss.count, 0);
  EXPECT_EQ(loss.sum, 0.0);
  for (size_t i = 0; i < p.num_params(); ++i)
    for (double g : p.grad(i)) ASSERT_EQ(g, 0.0) << p.specs()[i].name;
}

// Bad token ids or targets, or a too-long sequence, throw the CPU model's errors before the
// provider is called and before any device memory is taken.
TEST(GptjCuda, RejectsBadInputBeforeAnyDeviceWork) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = tiny_case();
  const GptjConfig& c = k.config;
  DeviceProvider p(c, DType::kBF16, kParamSeed, ctx());
  auto model = make_cuda_gptj(c, ModelOptions{false, DType::kBF16}, ctx());
  MemoryTracker& tracker = MemoryTracker::of(Device::cuda(ctx().device()));
  auto expect_rejected = [&](const Tokens& tk, int64_t b, int64_t t, const char* what) {
    SCOPED_TRACE(what);
    tracker.reset_peak();
    const MemStats before = tracker.stats();
    EXPECT_THROW(model->forward(tk.batch(b, t), p), Error);
    EXPECT_THROW(model->forward_backward(tk.batch(b, t), p, 1.0), Error);
    EXPECT_TRUE(p.calls.empty());
    EXPECT_EQ(tracker.stats().peak_total, before.current_total);
  };
  Tokens bad_id = random_tokens(k);
  bad_id.inputs[5] = int32_t(c.vocab_size);
  expect_rejected(bad_id, k.batch, k.seq, "token id == vocab_size");
  Tokens negative_id = random_tokens(k);
  negative_id.inputs[0] = -1;
  expect_rejected(negative_id, k.batch, k.seq, "negative token id");
  Tokens bad_target = random_tokens(k);
  bad_target.targets[3] = int32_t(c.vocab_size + 3);
  expect_rejected(bad_target, k.batch, k.seq, "target outside the vocabulary");
  GptjConfig long_config = c;
  long_config.n_positions = c.n_positions + 1;
  Case long_case{"long", long_config, 1, c.n_positions + 1};
  expect_rejected(random_tokens(long_case), 1, c.n_positions + 1, "sequence longer than n_positions");
  // logits() checks the ids too.
  std::vector<float> out(size_t(bad_id.inputs.size() * size_t(c.vocab_size)));
  EXPECT_THROW(model->logits(bad_id.batch(k.batch, k.seq), p, out.data()), Error);
  EXPECT_TRUE(p.calls.empty());
}

TEST(GptjCuda, RejectsParametersOffTheDeviceOrOfAnotherDtype) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = small_case();
  const Tokens tk = random_tokens(k);
  const Batch batch = tk.batch(k.batch, k.seq);
  auto model = make_cuda_gptj(k.config, ModelOptions{false, DType::kBF16}, ctx());
  HostProvider on_host(k.config, DType::kBF16, kParamSeed);
  try {
    model->forward(batch, on_host);
    ADD_FAILURE() << "host parameters were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the CUDA model needs bf16 tensors"), std::string::npos)
        << e.what();
  }
  DeviceProvider fp16(k.config, DType::kF16, kParamSeed, ctx());
  EXPECT_THROW(model->forward(batch, fp16), Error);
  // Compute dtypes and head dims the CUDA model does not support.
  EXPECT_THROW(make_cuda_gptj(k.config, ModelOptions{false, DType::kF32}, ctx()), Error);
  GptjConfig odd_heads = k.config;
  odd_heads.d_model = 48;
  odd_heads.n_head = 4;  // head_dim 12: not a multiple of 8
  odd_heads.rotary_dim = 4;
  EXPECT_THROW(make_cuda_gptj(odd_heads, ModelOptions{false, DType::kBF16}, ctx()), UserError);
}

// The workspace is accounted as activations while a call runs and given back when it returns.
TEST(GptjCuda, WorkspaceIsAccountedAsActivations) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Case k = tiny_case();
  const Tokens tk = random_tokens(k);
  DeviceProvider p(k.config, DType::kBF16, kParamSeed, ctx());
  auto model = make_cuda_gptj(k.config, ModelOptions{false, DType::kBF16}, ctx());
  MemoryTracker& tracker = MemoryTracker::of(Device::cuda(ctx().device()));
  const int act = int(MemCategory::kActivations);
  tracker.reset_peak();
  const MemStats before = tracker.stats();
  model->forward_backward(tk.batch(k.batch, k.seq), p, 1.0);
  const MemStats after = tracker.stats();
  EXPECT_EQ(after.current[act], before.current[act]);
  // At least the saved block inputs x[0..n_layer] and the logits, in bf16.
  const int64_t n = tk.batch(k.batch, k.seq).tokens();
  EXPECT_GE(after.peak[act] - before.current[act],
            2 * n * ((k.config.n_layer + 1) * k.config.d_model + k.config.vocab_size));
}

// The workspace is what `zerotrain estimate` charges for the activations, plus at most the
// 256-byte alignment of each of its pieces. With checkpointing, each block of keep_activations
// adds what the estimate charges for it (its saved tensors but the input), up to the alignment
// of the block's 8 pieces; keeping every block drops the shared recompute area and is exactly
// the workspace of checkpointing off.
TEST(GptjCuda, EachKeptBlockCostsWhatTheEstimatorSays) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Case k = tiny_case();
  k.config.n_layer = 3;
  const Tokens tk = random_tokens(k);
  DeviceProvider p(k.config, DType::kBF16, kParamSeed, ctx());
  MemoryTracker& tracker = MemoryTracker::of(Device::cuda(ctx().device()));
  const int act = int(MemCategory::kActivations);
  auto workspace_peak = [&](ModelOptions o) {
    auto model = make_cuda_gptj(k.config, o, ctx());
    ctx().synchronize();
    tracker.reset_peak();
    const int64_t before = tracker.stats().current[act];
    model->forward_backward(tk.batch(k.batch, k.seq), p, 1.0);
    return tracker.stats().peak[act] - before;
  };
  zero::EstimateInput in;
  in.model = k.config;
  in.micro_batch = k.batch;
  in.seq_len = k.seq;
  const int64_t estimated = zero::activation_bytes(in);
  std::vector<int64_t> peaks;
  for (int64_t keep = 0; keep <= k.config.n_layer; ++keep) {
    in.keep_activations = keep;
    peaks.push_back(workspace_peak(ModelOptions{true, DType::kBF16, keep}));
    SCOPED_TRACE("keep_activations " + std::to_string(keep));
    // Pieces: the block inputs and the head's, 8 per activation area (the kept blocks' and the
    // shared one), 9 block scratch buffers, 4 of the head, 3 of the tokens.
    const int64_t areas = keep + (keep < k.config.n_layer ? 1 : 0);
    const int64_t pieces = (k.config.n_layer + 1) + 8 * areas + 9 + 4 + 3;
    EXPECT_GE(peaks.back(), zero::activation_bytes(in));
    EXPECT_LE(peaks.back(), zero::activation_bytes(in) + 256 * pieces);
    if (keep == 0) continue;
    EXPECT_NEAR(double(peaks[size_t(keep)] - peaks[0]),
                double(zero::activation_bytes(in) - estimated), 8.0 * 256 * keep);
  }
  EXPECT_EQ(peaks.back(), workspace_peak(ModelOptions{false, DType::kBF16}));
}

TEST(StreamOrderedBuffer, AccountsAndReportsOutOfMemory) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  MemoryTracker& tracker = MemoryTracker::of(Device::cuda(ctx().device()));
  const int act = int(MemCategory::kActivations);
  const int64_t before = tracker.stats().current[act];
  {
    Buffer b = Buffer::allocate(Device::cuda(ctx().device()), 1 << 20, MemCategory::kActivations,
                                "test buffer", ctx().stream());
    EXPECT_EQ(b.stream(), ctx().stream());
    EXPECT_NE(b.data(), nullptr);
    EXPECT_EQ(tracker.stats().current[act], before + (1 << 20));
    Buffer moved = std::move(b);
    EXPECT_EQ(moved.stream(), ctx().stream());
    EXPECT_TRUE(b.empty());
    EXPECT_EQ(tracker.stats().current[act], before + (1 << 20));
  }
  EXPECT_EQ(tracker.stats().current[act], before);
  // Twice the device's memory cannot come from its pool.
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  try {
    Buffer::allocate(Device::cuda(ctx().device()), 2 * total_bytes, MemCategory::kActivations,
                     "an impossible workspace", ctx().stream());
    ADD_FAILURE() << "an allocation of twice the device memory succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* part : {"out of memory", "an impossible workspace", "(activations)",
                             "micro_batch_size", "activation_checkpointing", "zerotrain estimate"})
      EXPECT_NE(m.find(part), std::string::npos) << part << " missing from: " << m;
  }
  EXPECT_EQ(tracker.stats().current[act], before);
  ctx().synchronize();
}

}  // namespace
}  // namespace zt::model
