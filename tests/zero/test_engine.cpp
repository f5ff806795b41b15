// The flat layout and the single-process engine: layout order, views, and the optimizer step.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model/gptj.h"
#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "zero/engine.h"
#include "zero/flat_layout.h"

namespace zt::zero {
namespace {

TEST(FlatLayout, BackwardLayerOrderContiguousAndComplete) {
  model::GptjConfig c;
  const auto specs = model::gptj_param_specs(c);
  const FlatLayout l = make_flat_layout(specs, model::num_layers_total(c));
  EXPECT_EQ(l.total, model::gptj_param_count(c));
  int64_t expect_offset = 0;
  int prev_layer = model::num_layers_total(c);
  for (const FlatParam& p : l.params) {
    EXPECT_EQ(p.offset, expect_offset);
    EXPECT_LE(p.layer, prev_layer);  // head first, embedding last
    prev_layer = p.layer;
    expect_offset += p.numel;
  }
  EXPECT_EQ(l.params.front().layer, model::head_layer(c));
  EXPECT_EQ(l.params.back().layer, 0);
  EXPECT_EQ(l.layer_begin[size_t(model::head_layer(c))], 0);
  EXPECT_EQ(l.layer_end[0], l.total);
}

EngineOptions options(DType dtype) {
  EngineOptions o;
  o.param_dtype = dtype;
  o.total_steps = 10;
  o.seed = 5;
  o.optimizer.warmup_steps = 0;
  o.optimizer.decay = optim::LrDecay::kConstant;
  o.optimizer.lr = 1e-2;
  o.optimizer.grad_clip = 0.0;
  return o;
}

TEST(Engine, ViewsMatchSpecsAndInit) {
  model::GptjConfig c;
  Engine e(c, options(DType::kBF16));
  const auto specs = model::gptj_param_specs(c);
  for (int layer = 0; layer < model::num_layers_total(c); ++layer) {
    auto params = e.layer_params(layer);
    for (size_t j = 0; j < params.size(); ++j) {
      EXPECT_EQ(params[j].dtype, DType::kBF16);
      EXPECT_EQ(params[j].shape, e.layer_grads(layer)[j].shape);
    }
  }
  // The bf16 parameters are the fp32 master rounded.
  const std::vector<float> master = e.master_values();
  const Tensor lm = e.layer_params(model::head_layer(c))[model::kLmHeadWeight];
  const int64_t off = e.layout().params[model::kLmHeadWeight].offset;
  for (int64_t i = 0; i < 100; ++i)
    EXPECT_EQ(lm.as<bf16>()[i].bits, float_to_bf16(master[size_t(off + i)]).bits);
}

// One engine step equals AdamW applied parameter by parameter with the right weight decay.
TEST(Engine, StepIsAdamWWithoutDecayOnBiasesAndNorms) {
  model::GptjConfig c;
  EngineOptions o = options(DType::kF32);
  o.optimizer.weight_decay = 0.5;
  Engine e(c, o);
  const std::vector<float> before = e.master_values();
  // A deterministic gradient: g_i = 1e-3 * (i % 7 - 3).
  float* g = e.flat_grads().as<float>();
  for (int64_t i = 0; i < e.num_params(); ++i) g[i] = 1e-3f * float(i % 7 - 3);
  const StepStats s = e.step();
  EXPECT_FALSE(s.skipped);
  EXPECT_EQ(s.lr, 1e-2);
  EXPECT_EQ(e.steps_taken(), 1);
  const std::vector<float> after = e.master_values();
  for (const FlatParam& p : e.layout().params) {
    const model::ParamSpec& spec = e.specs()[size_t(p.spec_index)];
    std::vector<float> w(before.begin() + p.offset, before.begin() + p.offset + p.numel);
    std::vector<float> m(size_t(p.numel), 0.0f), v(size_t(p.numel), 0.0f);
    std::vector<float> grad(g + p.offset, g + p.offset + p.numel);
    optim::AdamWStep hp;
    hp.lr = 1e-2;
    hp.beta1 = o.optimizer.beta1;
    hp.beta2 = o.optimizer.beta2;
    hp.eps = o.optimizer.eps;
    hp.weight_decay = spec.is_bias_or_norm() ? 0.0 : 0.5;
    optim::adamw_step_cpu(w.data(), m.data(), v.data(), grad.data(), DType::kF32, p.numel, hp);
    for (int64_t i = 0; i < p.numel; ++i)
      ASSERT_EQ(after[size_t(p.offset + i)], w[size_t(i)]) << spec.name << "[" << i << "]";
  }
}

TEST(Engine, ClipsByTheGlobalNorm) {
  model::GptjConfig c;
  EngineOptions o = options(DType::kF32);
  o.optimizer.grad_clip = 0.5;
  Engine e(c, o);
  float* g = e.flat_grads().as<float>();
  for (int64_t i = 0; i < e.num_params(); ++i) g[i] = 0.01f;
  // 0.01f is 0.01 to 2e-8 relative; the fp64 sum of squares adds ~1e-16: 1e-6 is ample.
  const double norm = 0.01 * std::sqrt(double(e.num_params()));
  const StepStats s = e.step();
  EXPECT_NEAR(s.grad_norm, norm, 1e-6 * norm);
  EXPECT_DOUBLE_EQ(s.clip_coef, 0.5 / (s.grad_norm + 1e-6));
}

TEST(Engine, NonFiniteGradientSkipsTheStepAndChangesNothing) {
  model::GptjConfig c;
  Engine e(c, options(DType::kBF16));
  const std::vector<float> before = e.master_values();
  bf16* g = e.flat_grads().as<bf16>();
  g[123] = float_to_bf16(INFINITY);
  const StepStats s = e.step();
  EXPECT_TRUE(s.skipped);
  EXPECT_EQ(e.steps_taken(), 0);
  EXPECT_EQ(e.master_values(), before);
}

TEST(Engine, TrainsTheTinyModelOnARepeatedBatch) {
  model::GptjConfig c;
  Engine e(c, options(DType::kBF16));
  auto m = model::make_cpu_gptj(c, {});
  std::vector<int32_t> in(64), tg(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = (i * 7) % 50, tg[size_t(i)] = (i * 7 + 3) % 50;
  const model::Batch batch{in.data(), tg.data(), 2, 32};
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    e.zero_grads();
    last = m->forward_backward(batch, e, 1.0).mean();
    if (step == 0) first = last;
    e.step();
  }
  // Memorising one batch: the loss must drop far below log(512) = 6.24 in 30 steps at lr 1e-2.
  EXPECT_LT(last, 0.5 * first) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace zt::zero
