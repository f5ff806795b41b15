// The whole GPT-J model: parameter list and count, whole-model finite-difference gradients,
// activation recompute, storage dtypes, and the provider protocol.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "model/params.h"
#include "runtime/rng.h"
#include "tests/support/host_provider.h"

namespace zt::model {
namespace {

using zt::testing::HostProvider;

TEST(GptjParams, SixBillionPresetHasExactlyTheHuggingFaceCount) {
  const GptjConfig c = gptj_preset("gptj-6b");
  EXPECT_EQ(gptj_param_count(c), 6050882784LL);
  int64_t total = 0;
  for (const ParamSpec& s : gptj_param_specs(c)) total += s.numel();
  EXPECT_EQ(total, 6050882784LL);
  // DESIGN.md section 6: 6N + 12 L d T = 39.12 GFLOP per token at T = 2048.
  EXPECT_NEAR(gptj_flops_per_token(c, 2048) / 1e9, 39.12, 0.005);
}

TEST(GptjParams, NamesShapesAndOrderFollowHuggingFace) {
  GptjConfig c;  // gptj-tiny
  const std::vector<ParamSpec> specs = gptj_param_specs(c);
  ASSERT_EQ(specs.size(), size_t(1 + 10 * c.n_layer + 4));
  EXPECT_EQ(specs[0].name, "transformer.wte.weight");
  EXPECT_EQ(specs[0].shape, (Shape{c.vocab_size, c.d_model}));
  const char* block[] = {"ln_1.weight", "ln_1.bias", "attn.k_proj.weight", "attn.v_proj.weight",
                         "attn.q_proj.weight", "attn.out_proj.weight", "mlp.fc_in.weight",
                         "mlp.fc_in.bias", "mlp.fc_out.weight", "mlp.fc_out.bias"};
  for (int j = 0; j < 10; ++j) {
    EXPECT_EQ(specs[size_t(11 + j)].name, std::string("transformer.h.1.") + block[j]);
    EXPECT_EQ(specs[size_t(11 + j)].layer, 2);
    EXPECT_EQ(specs[size_t(11 + j)].index_in_layer, j);
  }
  EXPECT_EQ(specs[1 + kFcInWeight].shape, (Shape{c.d_ff, c.d_model}));  // Linear [out, in]
  EXPECT_EQ(specs[1 + kFcOutWeight].shape, (Shape{c.d_model, c.d_ff}));
  EXPECT_EQ(specs[specs.size() - 2].name, "lm_head.weight");
  EXPECT_EQ(specs.back().name, "lm_head.bias");
  EXPECT_EQ(specs.back().layer, head_layer(c));
  EXPECT_TRUE(specs.back().is_bias_or_norm());
  EXPECT_FALSE(specs[0].is_bias_or_norm());
}

TEST(GptjParams, InitIsShardableAndDeterministic) {
  GptjConfig c;
  const ParamSpec s = gptj_param_specs(c)[1 + kQProj];
  std::vector<float> whole(size_t(s.numel())), part(100);
  init_param_values(s, c, 42, 0, s.numel(), whole.data());
  init_param_values(s, c, 42, 500, 600, part.data());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(part[size_t(i)], whole[size_t(500 + i)]);
  double sum = 0, sum_sq = 0;
  for (float v : whole) sum += v, sum_sq += double(v) * v;
  const double n = double(whole.size());
  EXPECT_NEAR(sum / n, 0.0, 5 * c.init_std / std::sqrt(n));  // mean within 5 standard errors
  EXPECT_NEAR(std::sqrt(sum_sq / n), c.init_std, 0.05 * c.init_std);
}

GptjConfig small_config() {
  GptjConfig c;
  c.vocab_size = 11;
  c.n_positions = 8;
  c.d_model = 8;
  c.n_layer = 2;
  c.n_head = 2;
  c.rotary_dim = 2;  // < head_dim 4: the pass-through dims are exercised
  c.d_ff = 12;
  c.init_std = 0.4;  // large enough that every path carries a sizeable gradient
  return c;
}

struct Tokens {
  std::vector<int32_t> inputs, targets;
  Batch batch(int64_t b, int64_t t) const { return Batch{inputs.data(), targets.data(), b, t}; }
};

Tokens random_tokens(int64_t n, int64_t vocab, uint64_t seed, bool with_ignored) {
  Tokens tk;
  for (int64_t i = 0; i < n; ++i) {
    tk.inputs.push_back(int32_t(random_bits(seed, 0, uint64_t(i)) % uint64_t(vocab)));
    tk.targets.push_back(int32_t(random_bits(seed, 1, uint64_t(i)) % uint64_t(vocab)));
  }
  if (with_ignored) tk.targets[2] = tk.targets[7] = -100;
  return tk;
}

// d(mean loss)/d(element j of parameter i) by central differences; the parameter is restored.
double central_difference(GptjModel& model, const Batch& batch, HostProvider& p, size_t i,
                          int64_t j, double h) {
  const double w = p.param(i, j);
  p.set_param(i, j, w + h);
  const double up = model.forward(batch, p).mean();
  p.set_param(i, j, w - h);
  const double down = model.forward(batch, p).mean();
  p.set_param(i, j, w);
  return (up - down) / (2 * h);
}

// Every parameter's gradient against central differences of the mean loss, in fp64.
// h = 1e-5: the truncation error is ~h^2 |f'''| ~ 1e-10 and the rounding error ~1e-16 / h =
// 1e-11, so analytic and numeric derivatives agree to ~1e-9; 1e-7 leaves margin.
void check_whole_model_gradients(bool checkpointing) {
  const GptjConfig c = small_config();
  HostProvider p(c, DType::kF64, 7);
  const Tokens tk = random_tokens(2 * 5, c.vocab_size, 3, true);
  const Batch batch = tk.batch(2, 5);
  auto model = make_cpu_gptj(c, ModelOptions{checkpointing, DType::kF64});
  const double grad_scale = 1.7;  // the gradient must be of grad_scale * mean loss
  const LossSum loss = model->forward_backward(batch, p, grad_scale);
  EXPECT_EQ(loss.count, 8);
  const double h = 1e-5;
  double max_abs_grad = 0.0;
  for (size_t i = 0; i < p.num_params(); ++i) {
    for (int64_t j = 0; j < p.specs()[i].numel(); ++j) {
      const double numeric = grad_scale * central_difference(*model, batch, p, i, j, h);
      const double analytic = p.grad(i, j);
      max_abs_grad = std::max(max_abs_grad, std::fabs(analytic));
      ASSERT_NEAR(analytic, numeric, 1e-7 * std::max(1.0, std::fabs(numeric)))
          << p.specs()[i].name << "[" << j << "]";
    }
  }
  EXPECT_GT(max_abs_grad, 1e-2);  // the check is not vacuous
}

TEST(GptjGradients, WholeModelMatchesFiniteDifferences) { check_whole_model_gradients(false); }
TEST(GptjGradients, WholeModelMatchesFiniteDifferencesWithRecompute) {
  check_whole_model_gradients(true);
}

// Recompute reruns the same ops on the same inputs, so every block, recomputed or kept
// (keep_activations), sees bit-identical activations.
TEST(GptjGradients, RecomputeGivesBitIdenticalGradients) {
  GptjConfig c;  // gptj-tiny in fp32
  c.n_layer = 3;
  const Tokens tk = random_tokens(4 * 32, c.vocab_size, 5, false);
  HostProvider plain(c, DType::kF32, 1);
  const LossSum a =
      make_cpu_gptj(c, ModelOptions{false, DType::kF32})->forward_backward(tk.batch(4, 32), plain, 1.0);
  const std::vector<double> ga = plain.all_grads();
  for (int64_t keep = 0; keep <= c.n_layer; ++keep) {
    SCOPED_TRACE("keep_activations " + std::to_string(keep));
    HostProvider recomputed(c, DType::kF32, 1);
    const LossSum b = make_cpu_gptj(c, ModelOptions{true, DType::kF32, keep})
                          ->forward_backward(tk.batch(4, 32), recomputed, 1.0);
    EXPECT_EQ(a.sum, b.sum);
    const std::vector<double> gb = recomputed.all_grads();
    ASSERT_EQ(ga.size(), gb.size());
    for (size_t i = 0; i < ga.size(); ++i) ASSERT_EQ(ga[i], gb[i]) << "gradient element " << i;
  }
}

TEST(GptjModel, RejectsMoreKeptBlocksThanTheModelHas) {
  GptjConfig c;
  EXPECT_THROW(make_cpu_gptj(c, ModelOptions{true, DType::kF32, c.n_layer + 1}), Error);
  EXPECT_THROW(make_cpu_gptj(c, ModelOptions{true, DType::kF32, -1}), Error);
}

TEST(GptjModel, LossOfAnUntrainedModelIsNearLogVocab) {
  GptjConfig c;
  HostProvider p(c, DType::kF32, 1);
  const Tokens tk = random_tokens(4 * 16, c.vocab_size, 9, false);
  const LossSum loss = make_cpu_gptj(c, {})->forward(tk.batch(4, 16), p);
  EXPECT_EQ(loss.count, 64);
  // ln_f makes its output unit-variance, so the logits are ~normal with sigma = init_std *
  // sqrt(d_model) = 0.23. For targets independent of the logits, E[loss] = E[logsumexp] ~
  // log(V) + sigma^2 / 2, and the mean over N = 64 tokens of the target logit has a standard
  // error of sigma / sqrt(N); allow 4 standard errors.
  const double sigma = c.init_std * std::sqrt(double(c.d_model));
  EXPECT_NEAR(loss.mean(), std::log(double(c.vocab_size)) + sigma * sigma / 2, 4 * sigma / 8.0);
}

TEST(GptjModel, Fp32MatchesFp64) {
  GptjConfig c;
  HostProvider p32(c, DType::kF32, 2), p64(c, DType::kF64, 2);  // same values (fp32 init)
  const Tokens tk = random_tokens(2 * 24, c.vocab_size, 4, true);
  const LossSum l32 = make_cpu_gptj(c, {false, DType::kF32})->forward_backward(tk.batch(2, 24), p32, 1.0);
  const LossSum l64 = make_cpu_gptj(c, {false, DType::kF64})->forward_backward(tk.batch(2, 24), p64, 1.0);
  // fp32 rounding through ~10 sequential ops of length <= 512: relative error ~1e-6 on the loss.
  EXPECT_NEAR(l32.mean(), l64.mean(), 1e-5 * l64.mean());
  const std::vector<double> g32 = p32.all_grads(), g64 = p64.all_grads();
  double max_g = 0, max_err = 0;
  for (size_t i = 0; i < g64.size(); ++i) {
    max_g = std::max(max_g, std::fabs(g64[i]));
    max_err = std::max(max_err, std::fabs(g32[i] - g64[i]));
  }
  // Gradient errors relative to the largest gradient: fp32 accumulation over N = 48 tokens and
  // K <= 512 products stays around 1e-5 of the scale; 1e-4 leaves margin.
  EXPECT_LT(max_err, 1e-4 * max_g);
}

// The model computes in fp32 from 16-bit parameters and adds into 16-bit gradients: the same as
// fp32 parameters holding the rounded values, with each gradient rounded once.
void check_reads_16_bit_storage(DType dtype) {
  GptjConfig c;
  HostProvider p16(c, dtype, 3), pf(c, DType::kF32, 3);
  for (size_t i = 0; i < p16.num_params(); ++i)
    for (int64_t j = 0; j < p16.specs()[i].numel(); ++j) pf.set_param(i, j, p16.param(i, j));
  const Tokens tk = random_tokens(2 * 16, c.vocab_size, 8, false);
  auto model = make_cpu_gptj(c, {});
  const LossSum l16 = model->forward_backward(tk.batch(2, 16), p16, 1.0);
  const LossSum lf = model->forward_backward(tk.batch(2, 16), pf, 1.0);
  EXPECT_EQ(l16.sum, lf.sum);  // compute is fp32 on identical values: identical loss
  const std::vector<double> g16 = p16.all_grads(), gf = pf.all_grads();
  std::vector<unsigned char> rounded(dtype_size(dtype));
  for (size_t i = 0; i < g16.size(); ++i) {
    store_from_double(rounded.data(), dtype, 0, gf[i]);
    ASSERT_EQ(g16[i], load_as_double(rounded.data(), dtype, 0)) << i;
  }
}

TEST(GptjModel, ReadsBf16ParametersAndAddsIntoBf16Gradients) { check_reads_16_bit_storage(DType::kBF16); }
TEST(GptjModel, ReadsFp16ParametersAndAddsIntoFp16Gradients) { check_reads_16_bit_storage(DType::kF16); }

// The gptj-tiny preset itself (527k parameters) in fp64: central differences on a few sampled
// elements of every parameter tensor, with the step and tolerance reasoning of the small-model
// check above.
TEST(GptjGradients, TinyPresetMatchesFiniteDifferencesOnSampledElements) {
  const GptjConfig c = gptj_preset("gptj-tiny");
  HostProvider p(c, DType::kF64, 11);
  const Tokens tk = random_tokens(2 * 6, c.vocab_size, 12, true);
  const Batch batch = tk.batch(2, 6);
  auto model = make_cpu_gptj(c, ModelOptions{true, DType::kF64});
  model->forward_backward(batch, p, 1.0);
  const double h = 1e-5;
  for (size_t i = 0; i < p.num_params(); ++i) {
    const int64_t n = p.specs()[i].numel();
    // The largest-gradient element of the tensor plus three random ones (wte and lm_head rows
    // of tokens absent from the batch have zero gradient: the largest one is never such a row).
    std::vector<int64_t> picks = {0};
    for (int64_t j = 0; j < n; ++j)
      if (std::fabs(p.grad(i, j)) > std::fabs(p.grad(i, picks[0]))) picks[0] = j;
    for (uint64_t r = 0; r < 3; ++r) picks.push_back(int64_t(random_bits(99, i, r) % uint64_t(n)));
    for (int64_t j : picks) {
      const double numeric = central_difference(*model, batch, p, i, j, h);
      ASSERT_NEAR(p.grad(i, j), numeric, 1e-7 * std::max(1.0, std::fabs(numeric)))
          << p.specs()[i].name << "[" << j << "]";
    }
    EXPECT_GT(std::fabs(p.grad(i, picks[0])), 1e-6) << p.specs()[i].name;
  }
}

TEST(GptjModel, GradientsAccumulateAcrossCalls) {
  GptjConfig c;
  HostProvider once(c, DType::kF64, 4), twice(c, DType::kF64, 4);
  const Tokens tk = random_tokens(2 * 8, c.vocab_size, 6, false);
  auto model = make_cpu_gptj(c, {false, DType::kF64});
  model->forward_backward(tk.batch(2, 8), once, 2.0);
  model->forward_backward(tk.batch(2, 8), twice, 1.0);
  model->forward_backward(tk.batch(2, 8), twice, 1.0);
  const std::vector<double> a = once.all_grads(), b = twice.all_grads();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-12 * std::max(1.0, std::fabs(a[i])));
}

// Queuing micro-batches and reading their losses later gives exactly what forward_backward gives
// call by call: the same loss sums and counts, and the same accumulated gradients. A queued
// forward (validation) between them gives forward's loss and adds no gradient.
TEST(GptjModel, QueuedMicroBatchesMatchSynchronousCalls) {
  GptjConfig c;
  HostProvider sync(c, DType::kF32, 4), queued(c, DType::kF32, 4);
  constexpr int kMicro = 3;
  std::vector<Tokens> tks;
  for (int i = 0; i < kMicro; ++i) tks.push_back(random_tokens(2 * 8, c.vocab_size, 10 + uint64_t(i), i == 1));
  const double scale = 1.0 / kMicro;
  auto model = make_cpu_gptj(c, {});
  std::vector<LossSum> expect;
  for (const Tokens& tk : tks) expect.push_back(model->forward_backward(tk.batch(2, 8), sync, scale));
  const LossSum eval = model->forward(tks[2].batch(2, 8), sync);
  std::vector<LossTicket> tickets;
  for (const Tokens& tk : tks) tickets.push_back(model->queue_forward_backward(tk.batch(2, 8), queued, scale));
  const LossTicket eval_ticket = model->queue_forward(tks[2].batch(2, 8), queued);
  EXPECT_NE(eval_ticket.id, tickets.back().id);
  const LossSum eval_got = model->collect(eval_ticket);
  EXPECT_EQ(eval_got.sum, eval.sum);
  EXPECT_EQ(eval_got.count, eval.count);
  // Collected out of order: each ticket still gives its own micro-batch's loss.
  for (int i = kMicro - 1; i >= 0; --i) {
    const LossSum got = model->collect(tickets[size_t(i)]);
    EXPECT_EQ(got.sum, expect[size_t(i)].sum) << "micro-batch " << i;
    EXPECT_EQ(got.count, expect[size_t(i)].count) << "micro-batch " << i;
  }
  EXPECT_EQ(expect[1].count, 2 * 8 - 2);  // the ignored targets are not counted
  EXPECT_EQ(sync.all_grads(), queued.all_grads());
  // A ticket is collected once; a ticket the model never handed out is refused.
  EXPECT_THROW(model->collect(tickets[0]), Error);
  EXPECT_THROW(model->collect(LossTicket{}), Error);
}

TEST(GptjModel, WalksLayersInOrderThroughTheProvider) {
  GptjConfig c;
  c.n_layer = 2;
  HostProvider p(c, DType::kF32, 1);
  const Tokens tk = random_tokens(1 * 4, c.vocab_size, 1, false);
  make_cpu_gptj(c, {})->forward_backward(tk.batch(1, 4), p, 1.0);
  const std::vector<std::string> expect = {
      "before fwd 0", "after fwd 0", "before fwd 1", "after fwd 1", "before fwd 2", "after fwd 2",
      "before fwd 3", "after fwd 3", "before bwd 3", "ready 3", "after bwd 3", "before bwd 2",
      "ready 2", "after bwd 2", "before bwd 1", "ready 1", "after bwd 1", "before bwd 0",
      "ready 0", "after bwd 0"};
  EXPECT_EQ(p.calls, expect);
}

TEST(GptjModel, LogitsAgreeWithTheLoss) {
  GptjConfig c;
  HostProvider p(c, DType::kF32, 5);
  const Tokens tk = random_tokens(2 * 6, c.vocab_size, 2, false);
  auto model = make_cpu_gptj(c, {});
  std::vector<float> logits(size_t(12 * c.vocab_size));
  model->logits(tk.batch(2, 6), p, logits.data());
  double sum = 0;
  for (int64_t i = 0; i < 12; ++i) {
    const float* row = logits.data() + i * c.vocab_size;
    double mx = row[0], z = 0;
    for (int64_t v = 0; v < c.vocab_size; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(double(row[v]) - mx);
    sum += std::log(z) + mx - row[tk.targets[size_t(i)]];
  }
  EXPECT_NEAR(sum / 12, model->forward(tk.batch(2, 6), p).mean(), 1e-5);
}

TEST(GptjModel, RejectsBadInput) {
  GptjConfig c;
  HostProvider p(c, DType::kF32, 1);
  auto model = make_cpu_gptj(c, {});
  Tokens tk = random_tokens(4, c.vocab_size, 1, false);
  tk.inputs[1] = int32_t(c.vocab_size);  // out of range
  EXPECT_THROW(model->forward(tk.batch(1, 4), p), Error);
  Tokens long_seq = random_tokens(c.n_positions + 1, c.vocab_size, 1, false);
  EXPECT_THROW(model->forward(long_seq.batch(1, c.n_positions + 1), p), Error);
  GptjConfig bad = c;
  bad.n_head = 3;  // 128 is not divisible by 3
  EXPECT_THROW(make_cpu_gptj(bad, {}), UserError);
}

}  // namespace
}  // namespace zt::model
