// Tests of gelu_forward/backward: hand values of the tanh form, float against double, and the
// finite-difference derivative.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/ops_cpu.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::dot;
using testing::expect_gradient;
using testing::kFloatUnit;
using testing::random_float_values;
using testing::random_values;

TEST(OpsGelu, ForwardHandValues) {
  const std::vector<double> x = {0.0, 1.0, -1.0, 2.5, 10.0, -10.0};
  std::vector<double> y(x.size());
  gelu_forward<double>(x.data(), y.data(), int64_t(x.size()));
  const double c = std::sqrt(2.0 / M_PI);
  EXPECT_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.5 * (1.0 + std::tanh(c * (1.0 + 0.044715))), 1e-15);
  EXPECT_NEAR(y[2], -0.5 * (1.0 - std::tanh(c * (1.0 + 0.044715))), 1e-15);
  EXPECT_NEAR(y[3], 1.25 * (1.0 + std::tanh(c * (2.5 + 0.044715 * 15.625))), 1e-15);
  EXPECT_NEAR(y[4], 10.0, 1e-12);  // tanh saturates: gelu(x) -> x
  EXPECT_NEAR(y[5], 0.0, 1e-12);   // and -> 0 for large negative x
}

TEST(OpsGelu, FloatForwardAgreesWithDouble) {
  const auto x = random_float_values(1001, 1, -4.0, 4.0);
  std::vector<double> y(x.size());
  gelu_forward<double>(x.data(), y.data(), int64_t(x.size()));
  const auto xf = testing::to_float(x);
  std::vector<float> yf(x.size());
  gelu_forward<float>(xf.data(), yf.data(), int64_t(x.size()));
  // fp32 error: the tanh argument a = c (x + 0.044715 x^3) is within 4u relatively (no
  // cancellation: both terms share x's sign), so tanh(a) is within 4u |a| + u (tanh' <= 1, one
  // ulp for tanhf); 0.5 x (1 + tanh) then adds 2u relatively:
  // |y - y_exact| <= 0.5 |x| (4u |a| + 3u) + 2u |y|. Twice the bound is asserted.
  const double c = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < x.size(); ++i) {
    const double a = std::abs(c * (x[i] + 0.044715 * x[i] * x[i] * x[i]));
    const double tol =
        2.0 * (0.5 * std::abs(x[i]) * (4.0 * a + 3.0) + 2.0 * std::abs(y[i])) * kFloatUnit;
    EXPECT_NEAR(yf[i], y[i], tol) << "x = " << x[i];
  }
}

TEST(OpsGelu, BackwardMatchesFiniteDifferences) {
  auto x = random_values(37, 2, -4.0, 4.0);
  const auto dy = random_values(x.size(), 3);  // L = sum(dy * gelu(x))
  auto loss = [&] {
    std::vector<double> y(x.size());
    gelu_forward<double>(x.data(), y.data(), int64_t(x.size()));
    return dot(dy, y);
  };
  std::vector<double> dx(x.size(), std::numeric_limits<double>::quiet_NaN());  // written
  gelu_backward<double>(x.data(), dy.data(), dx.data(), int64_t(x.size()));
  expect_gradient("dx", x, dx, loss);
}

}  // namespace
}  // namespace zt::model::cpu
