// Tests of adamw_step_cpu against an independent double-precision AdamW, and its dtype handling.
#include "optim/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/error.h"
#include "tests/support/thread_count.h"

namespace zt::optim {
namespace {

using zt::testing::ThreadCount;

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

AdamWStep hyper_parameters(int64_t step) {
  AdamWStep hp;
  hp.lr = 0.01;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.step = step;
  return hp;
}

// One element of AdamW in double, straight from the formula (torch.optim.AdamW's definition).
struct Reference {
  double p, m, v;
  void step(double g, const AdamWStep& hp) {
    g *= hp.grad_scale;
    m = hp.beta1 * m + (1.0 - hp.beta1) * g;
    v = hp.beta2 * v + (1.0 - hp.beta2) * g * g;
    const double m_hat = m / (1.0 - std::pow(hp.beta1, double(hp.step)));
    const double v_hat = v / (1.0 - std::pow(hp.beta2, double(hp.step)));
    p = p * (1.0 - hp.lr * hp.weight_decay) - hp.lr * m_hat / (std::sqrt(v_hat) + hp.eps);
  }
};

// Tolerance of the fp32 implementation against the double reference. Each step does about a
// dozen fp32 roundings (relative error 2^-24 = FLT_EPSILON / 2 each) and the hyper-parameters
// are rounded to fp32 once; |m_hat| / sqrt(v_hat) stays O(1) and lr <= 1, so one step adds at
// most ~12 half-ulps of max(1, |x|). Three steps: ~36 half-ulps = 18 FLT_EPSILON; allow 32.
double tolerance(double x) { return 32.0 * FLT_EPSILON * std::max(1.0, std::abs(x)); }

TEST(AdamW, MatchesDoubleReferenceOverThreeSteps) {
  const std::vector<float> p0 = {0.5f, -1.25f, 2.0f, 0.0f, -0.375f, 3.0f, 1.0f};
  // One gradient vector per step. Some elements change sign between steps so m passes near 0;
  // the last one is of the order of eps, so a misplaced eps shows.
  const std::vector<std::vector<float>> grads = {
      {0.1f, -0.2f, 0.3f, 1.5f, -0.05f, 0.7f, 1e-8f},
      {0.12f, -0.1f, 0.25f, -0.5f, 0.06f, -0.9f, 2e-8f},
      {-0.3f, -0.15f, 0.2f, 0.75f, -0.07f, 0.4f, -1e-8f},
  };
  const size_t n = p0.size();
  std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
  std::vector<Reference> ref(n);
  for (size_t i = 0; i < n; ++i) ref[i] = {p0[i], 0.0, 0.0};

  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWStep hp = hyper_parameters(step);
    const std::vector<float>& g = grads[size_t(step - 1)];
    adamw_step_cpu(p.data(), m.data(), v.data(), g.data(), DType::kF32, int64_t(n), hp);
    for (size_t i = 0; i < n; ++i) {
      ref[i].step(g[i], hp);
      EXPECT_NEAR(p[i], ref[i].p, tolerance(ref[i].p)) << "param " << i << " step " << step;
      EXPECT_NEAR(m[i], ref[i].m, tolerance(ref[i].m)) << "m " << i << " step " << step;
      EXPECT_NEAR(v[i], ref[i].v, tolerance(ref[i].v)) << "v " << i << " step " << step;
    }
    if (step == 1) {
      // Sanity of the reference itself: at step 1, m_hat = g and v_hat = g^2, so the update is
      // lr * g / (|g| + eps): lr * sign(g) for large g, lr / 2 for the g = eps element.
      for (size_t i = 0; i < n; ++i) {
        const double g_i = g[i];
        const double expected = double(p0[i]) * (1.0 - hp.lr * hp.weight_decay) -
                                hp.lr * g_i / (std::abs(g_i) + hp.eps);
        EXPECT_NEAR(ref[i].p, expected, 1e-12) << i;
      }
    }
  }
}

TEST(AdamW, ZeroGradientOnlyDecaysWeights) {
  const std::vector<float> p0 = {1.0f, -2.5f, 0.125f, 100.0f, -3e-5f};
  const size_t n = p0.size();
  std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
  const std::vector<float> g(n, 0.0f);
  std::vector<float> expected = p0;
  for (int64_t step = 1; step <= 3; ++step) {
    AdamWStep hp = hyper_parameters(step);
    hp.lr = 0.05;
    hp.weight_decay = 0.2;
    adamw_step_cpu(p.data(), m.data(), v.data(), g.data(), DType::kF32, int64_t(n), hp);
    // The fp32 multiplier is 1 - lr * wd rounded to fp32, and the Adam part adds exactly 0.
    const float decay = float(1.0 - hp.lr * hp.weight_decay);
    for (size_t i = 0; i < n; ++i) {
      expected[i] *= decay;
      EXPECT_EQ(p[i], expected[i]) << i << " step " << step;
      EXPECT_EQ(m[i], 0.0f);
      EXPECT_EQ(v[i], 0.0f);
      // And the fp32 multiplier is within half an ulp of the exact (1 - lr wd)^step shrinkage.
      EXPECT_NEAR(p[i], p0[i] * std::pow(1.0 - hp.lr * hp.weight_decay, double(step)),
                  4.0 * FLT_EPSILON * std::abs(p0[i]));
    }
  }
}

TEST(AdamW, GradScaleEqualsPrescaledGradient) {
  const std::vector<float> g = {0.3f, -1.7f, 2.25f, 1e-3f, -4.0f};
  const float scale = 0.37f;
  const size_t n = g.size();
  std::vector<float> g_scaled(n);
  // The implementation multiplies in fp32, so the prescaled gradient is the fp32 product.
  for (size_t i = 0; i < n; ++i) g_scaled[i] = g[i] * scale;

  std::vector<float> p_a = {0.1f, 0.2f, -0.3f, 0.4f, 1.0f}, m_a(n, 0.0f), v_a(n, 0.0f);
  std::vector<float> p_b = p_a, m_b = m_a, v_b = v_a;
  for (int64_t step = 1; step <= 2; ++step) {
    AdamWStep hp = hyper_parameters(step);
    hp.grad_scale = scale;
    adamw_step_cpu(p_a.data(), m_a.data(), v_a.data(), g.data(), DType::kF32, int64_t(n), hp);
    hp.grad_scale = 1.0;
    adamw_step_cpu(p_b.data(), m_b.data(), v_b.data(), g_scaled.data(), DType::kF32, int64_t(n),
                   hp);
  }
  EXPECT_TRUE(same_bits(p_a, p_b));
  EXPECT_TRUE(same_bits(m_a, m_b));
  EXPECT_TRUE(same_bits(v_a, v_b));
}

// Runs two steps from fixed params with the gradient given in `dtype` (and in fp32 for comparison).
struct StepResult {
  std::vector<float> p, m, v;
};
StepResult two_steps(const void* grad, DType dtype, size_t n) {
  StepResult r{std::vector<float>(n), std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f)};
  for (size_t i = 0; i < n; ++i) r.p[i] = 0.25f * float(i) - 1.0f;
  for (int64_t step = 1; step <= 2; ++step) {
    AdamWStep hp = hyper_parameters(step);
    hp.grad_scale = 0.5;
    adamw_step_cpu(r.p.data(), r.m.data(), r.v.data(), grad, dtype, int64_t(n), hp);
  }
  return r;
}

TEST(AdamW, HalfPrecisionGradientsMatchFp32OfSameValues) {
  // Includes values that bf16 / fp16 round, an fp16 subnormal (1e-6) and a zero.
  const std::vector<float> values = {0.1f, -0.3f, 1.0f / 3.0f, 7.5f, -1e-6f, 0.0f, 123.456f};
  const size_t n = values.size();
  std::vector<bf16> g_bf16(n);
  std::vector<f16> g_f16(n);
  std::vector<double> g_f64(n);
  std::vector<float> g_from_bf16(n), g_from_f16(n);
  for (size_t i = 0; i < n; ++i) {
    g_bf16[i] = float_to_bf16(values[i]);
    g_f16[i] = float_to_f16(values[i]);
    g_f64[i] = values[i];
    g_from_bf16[i] = bf16_to_float(g_bf16[i]);
    g_from_f16[i] = f16_to_float(g_f16[i]);
  }
  const StepResult from_bf16 = two_steps(g_bf16.data(), DType::kBF16, n);
  const StepResult ref_bf16 = two_steps(g_from_bf16.data(), DType::kF32, n);
  EXPECT_TRUE(same_bits(from_bf16.p, ref_bf16.p));
  EXPECT_TRUE(same_bits(from_bf16.m, ref_bf16.m));
  EXPECT_TRUE(same_bits(from_bf16.v, ref_bf16.v));

  const StepResult from_f16 = two_steps(g_f16.data(), DType::kF16, n);
  const StepResult ref_f16 = two_steps(g_from_f16.data(), DType::kF32, n);
  EXPECT_TRUE(same_bits(from_f16.p, ref_f16.p));
  EXPECT_TRUE(same_bits(from_f16.m, ref_f16.m));
  EXPECT_TRUE(same_bits(from_f16.v, ref_f16.v));

  // fp64 gradients holding fp32 values are read exactly.
  const StepResult from_f64 = two_steps(g_f64.data(), DType::kF64, n);
  const StepResult ref_f32 = two_steps(values.data(), DType::kF32, n);
  EXPECT_TRUE(same_bits(from_f64.p, ref_f32.p));
  EXPECT_TRUE(same_bits(from_f64.m, ref_f32.m));
  EXPECT_TRUE(same_bits(from_f64.v, ref_f32.v));
}

TEST(AdamW, Param16CopyIsRoundedFp32Result) {
  // Magnitudes from tiny to past fp16's range (70000 -> inf in fp16).
  const std::vector<float> p0 = {0.1f, -1.0f / 3.0f, 1e-7f, 70000.0f, -2.71828f, 1.00390625f,
                                 5e-5f};
  const std::vector<float> g = {0.5f, -0.25f, 1e-3f, 3.0f, 0.0f, -2.0f, 0.125f};
  const size_t n = p0.size();
  constexpr unsigned char kFill = 0xa5;  // marks bytes the copy must not touch
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
    std::vector<unsigned char> copy(n * sizeof(float), kFill);  // room for an fp32 copy
    for (int64_t step = 1; step <= 2; ++step) {
      adamw_step_cpu(p.data(), m.data(), v.data(), g.data(), DType::kF32, int64_t(n),
                     hyper_parameters(step), copy.data(), dtype);
      for (size_t i = 0; i < n; ++i) {
        if (dtype == DType::kF32) {
          uint32_t bits;
          std::memcpy(&bits, copy.data() + 4 * i, 4);
          EXPECT_EQ(bits, float_to_bits(p[i])) << i;
        } else {
          uint16_t bits;
          std::memcpy(&bits, copy.data() + 2 * i, 2);
          const uint16_t expected =
              dtype == DType::kBF16 ? float_to_bf16(p[i]).bits : float_to_f16(p[i]).bits;
          EXPECT_EQ(bits, expected) << dtype_name(dtype) << " " << i;
        }
      }
    }
    // A 16-bit copy writes 2n bytes and nothing past them.
    for (size_t b = n * dtype_size(dtype); b < copy.size(); ++b) EXPECT_EQ(copy[b], kFill) << b;
  }
}

// Deterministic inputs for the size sweep.
struct State {
  std::vector<float> p, m, v, g;
  std::vector<bf16> p16;
};
State make_state(size_t n) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  State s{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n),
          std::vector<float>(n), std::vector<bf16>(n)};
  for (size_t i = 0; i < n; ++i) {
    s.p[i] = dist(rng);
    s.m[i] = 0.1f * dist(rng);
    s.v[i] = 0.01f * std::abs(dist(rng));
    s.g[i] = dist(rng);
  }
  return s;
}

void run_steps(State& s, int64_t first_step, int64_t count) {
  for (int64_t step = first_step; step < first_step + count; ++step) {
    adamw_step_cpu(s.p.data(), s.m.data(), s.v.data(), s.g.data(), DType::kF32,
                   int64_t(s.p.size()), hyper_parameters(step), s.p16.data(), DType::kBF16);
  }
}

TEST(AdamW, SizesAndThreadCountsGiveIdenticalBits) {
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1000003)}) {
    State one = make_state(n);
    State two = make_state(n);
    {
      ThreadCount threads(1);
      run_steps(one, 5, 2);
    }
    {
      ThreadCount threads(2);
      run_steps(two, 5, 2);
    }
    EXPECT_TRUE(same_bits(one.p, two.p)) << n;
    EXPECT_TRUE(same_bits(one.m, two.m)) << n;
    EXPECT_TRUE(same_bits(one.v, two.v)) << n;
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(one.p16[i].bits, two.p16[i].bits) << n << " " << i;

    // Elements updated one call at a time (no vector body, no threads) give the same bits, so
    // the result of an element does not depend on where it sits in the range.
    const State start = make_state(n);
    std::vector<size_t> probes;
    for (size_t i = 0; i < n; i += 997) probes.push_back(i);
    for (size_t i : {size_t(4095), size_t(4096), size_t(4097), n - 1}) {
      if (i < n) probes.push_back(i);
    }
    for (size_t i : probes) {
      State single{{start.p[i]}, {start.m[i]}, {start.v[i]}, {start.g[i]}, {bf16{0}}};
      run_steps(single, 5, 2);
      ASSERT_EQ(float_to_bits(single.p[0]), float_to_bits(one.p[i])) << n << " " << i;
      ASSERT_EQ(float_to_bits(single.m[0]), float_to_bits(one.m[i])) << n << " " << i;
      ASSERT_EQ(float_to_bits(single.v[0]), float_to_bits(one.v[i])) << n << " " << i;
      ASSERT_EQ(single.p16[0].bits, one.p16[i].bits) << n << " " << i;
    }
  }
}

TEST(AdamW, ChecksPreconditions) {
  float p = 1.0f, m = 0.0f, v = 0.0f, g = 0.5f;
  // Empty ranges may pass null pointers.
  EXPECT_NO_THROW(adamw_step_cpu(nullptr, nullptr, nullptr, nullptr, DType::kF32, 0,
                                 hyper_parameters(1)));
  EXPECT_THROW(adamw_step_cpu(&p, &m, &v, &g, DType::kF32, -1, hyper_parameters(1)), Error);
  EXPECT_THROW(adamw_step_cpu(&p, &m, &v, &g, DType::kF32, 1, hyper_parameters(0)), Error);
  EXPECT_THROW(adamw_step_cpu(&p, &m, nullptr, &g, DType::kF32, 1, hyper_parameters(1)), Error);
  EXPECT_THROW(adamw_step_cpu(&p, &m, &v, nullptr, DType::kF32, 1, hyper_parameters(1)), Error);
  EXPECT_EQ(p, 1.0f);  // failed checks changed nothing
}

}  // namespace
}  // namespace zt::optim
