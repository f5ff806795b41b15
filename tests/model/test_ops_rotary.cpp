// Tests of rotary_forward/backward: hand-computed values (interleaved pairs, rotary_dim equal to
// and smaller than head_dim), float against double, finite-difference gradient, and inversion.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::dot;
using testing::expect_gradient;
using testing::kFloatUnit;
using testing::random_float_values;
using testing::random_values;

// x[B=1, T=3, H=2, Dh=4]: head h at position p holds {1 + p, 2 - h, -0.5 + h, 3 + 0.25 p}.
std::vector<double> hand_input() {
  std::vector<double> x;
  for (int p = 0; p < 3; ++p) {
    for (int h = 0; h < 2; ++h) {
      x.insert(x.end(), {1.0 + p, 2.0 - h, -0.5 + h, 3.0 + 0.25 * p});
    }
  }
  return x;
}

TEST(OpsRotary, ForwardHandValuesFullRotaryDim) {
  // rotary_dim = 4: inv_freq = [1/10000^0, 1/10000^(2/4)] = [1, 0.01], so the angles of
  // positions 0, 1, 2 are (0, 0), (1, 0.01), (2, 0.02). Pairs are interleaved: (0,1) and (2,3).
  const double angle0[3] = {0.0, 1.0, 2.0};
  const double angle1[3] = {0.0, 0.01, 0.02};
  const std::vector<double> x = hand_input();
  std::vector<double> expected(x.size());
  for (int p = 0; p < 3; ++p) {
    for (int h = 0; h < 2; ++h) {
      const double* in = x.data() + (p * 2 + h) * 4;
      double* out = expected.data() + (p * 2 + h) * 4;
      out[0] = in[0] * std::cos(angle0[p]) - in[1] * std::sin(angle0[p]);
      out[1] = in[1] * std::cos(angle0[p]) + in[0] * std::sin(angle0[p]);
      out[2] = in[2] * std::cos(angle1[p]) - in[3] * std::sin(angle1[p]);
      out[3] = in[3] * std::cos(angle1[p]) + in[2] * std::sin(angle1[p]);
    }
  }
  // Spot-check one value written out: position 1, head 0, dim 0 = 2 cos(1) - 2 sin(1).
  EXPECT_NEAR(expected[4 * 2], 2.0 * std::cos(1.0) - 2.0 * std::sin(1.0), 1e-15);

  std::vector<double> got = x;
  rotary_forward<double>(got.data(), 1, 3, 2, 4, 4);
  // double: the code's angles equal the literals up to an ulp or two.
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-14) << i;

  std::vector<float> got_f = testing::to_float(x);
  rotary_forward<float>(got_f.data(), 1, 3, 2, 4, 4);
  // float: inv_freq, the angle and sin/cos are fp32 (a few ulps each); with |x| <= 4 and
  // angles <= 2, each output is within 16 * 2^-24 * (|x0| + |x1|) of the exact value.
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(got_f[i], expected[i], 16 * kFloatUnit * 8) << i;
}

TEST(OpsRotary, ForwardHandValuesPartialRotaryDimPassesRest) {
  // rotary_dim = 2 < head_dim = 4: inv_freq = [1]; dims 2 and 3 pass through unchanged.
  const double angle0[3] = {0.0, 1.0, 2.0};
  const std::vector<double> x = hand_input();
  std::vector<double> got = x;
  rotary_forward<double>(got.data(), 1, 3, 2, 4, 2);
  for (int p = 0; p < 3; ++p) {
    for (int h = 0; h < 2; ++h) {
      const size_t o = size_t((p * 2 + h) * 4);
      EXPECT_NEAR(got[o], x[o] * std::cos(angle0[p]) - x[o + 1] * std::sin(angle0[p]), 1e-15);
      EXPECT_NEAR(got[o + 1], x[o + 1] * std::cos(angle0[p]) + x[o] * std::sin(angle0[p]), 1e-15);
      EXPECT_EQ(got[o + 2], x[o + 2]);
      EXPECT_EQ(got[o + 3], x[o + 3]);
    }
  }
}

TEST(OpsRotary, FloatForwardAgreesWithDouble) {
  const int64_t batch = 2, seq = 7, heads = 3, head_dim = 10, rotary_dim = 6;
  const auto x = random_float_values(size_t(batch * seq * heads * head_dim), 1);
  std::vector<double> y = x;
  rotary_forward<double>(y.data(), batch, seq, heads, head_dim, rotary_dim);
  std::vector<float> yf = testing::to_float(x);
  rotary_forward<float>(yf.data(), batch, seq, heads, head_dim, rotary_dim);
  // fp32 error: inv_freq (powf and a division) is within 2u relatively and the product
  // pos * inv_freq adds u, so the angle is off by <= 3u pos; cosf/sinf add about u each, the
  // two products and the sum 2u. Per element: (|x0| + |x1|) (3 pos + 6) u, doubled for slack.
  for (int64_t row = 0; row < batch * seq * heads; ++row) {
    const int64_t pos = (row / heads) % seq;
    for (int64_t i = 0; i < head_dim; ++i) {
      const size_t k = size_t(row * head_dim + i);
      const size_t pair = size_t(row * head_dim + (i & ~int64_t(1)));
      const double tol =
          2.0 * (std::abs(x[pair]) + std::abs(x[pair + 1])) * double(3 * pos + 6) * kFloatUnit;
      EXPECT_NEAR(yf[k], y[k], tol) << "row " << row << " dim " << i;
      if (i >= rotary_dim) {
        EXPECT_EQ(double(yf[k]), x[k]);  // past rotary_dim: unchanged
      }
    }
  }
}

TEST(OpsRotary, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  const int64_t batch = 2, seq = 5, heads = 3, head_dim = 6, rotary_dim = 4;
  const size_t size = size_t(batch * seq * heads * head_dim);
  auto x = random_values(size, 1);
  const auto dy = random_values(size, 2);  // L = sum(dy * rotary(x))
  auto loss = [&] {
    std::vector<double> y = x;
    rotary_forward<double>(y.data(), batch, seq, heads, head_dim, rotary_dim);
    return dot(dy, y);
  };
  std::vector<double> dx = dy;
  rotary_backward<double>(dx.data(), batch, seq, heads, head_dim, rotary_dim);
  expect_gradient("dx", x, dx, loss);

  // The rotation is orthogonal: backward undoes forward.
  std::vector<double> round_trip = x;
  rotary_forward<double>(round_trip.data(), batch, seq, heads, head_dim, rotary_dim);
  rotary_backward<double>(round_trip.data(), batch, seq, heads, head_dim, rotary_dim);
  for (size_t i = 0; i < size; ++i) EXPECT_NEAR(round_trip[i], x[i], 1e-15);
}

TEST(OpsRotary, RejectsOddOrTooLargeRotaryDim) {
  std::vector<double> x(8, 0.0);
  EXPECT_THROW(rotary_forward<double>(x.data(), 1, 2, 1, 4, 3), zt::Error);
  EXPECT_THROW(rotary_forward<double>(x.data(), 1, 2, 1, 4, 6), zt::Error);
}

}  // namespace
}  // namespace zt::model::cpu
