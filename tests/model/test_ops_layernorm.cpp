// Tests of layernorm_forward/backward: hand values, float against double, finite-difference
// gradients of x, w and b, and that backward adds into dx, dw and db.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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

constexpr double kEps = 1e-5;

TEST(OpsLayerNorm, ForwardHandValues) {
  // Row [1, 2, 3, 4]: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
  const std::vector<double> x = {1, 2, 3, 4}, w = {1.0, 2.0, -1.0, 0.5}, b = {0.0, 1.0, 0.0, -2.0};
  std::vector<double> y(4), mean(1), rstd(1);
  layernorm_forward<double>(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), 1, 4,
                            kEps);
  const double r = 1.0 / std::sqrt(1.25 + kEps);
  EXPECT_DOUBLE_EQ(mean[0], 2.5);
  EXPECT_DOUBLE_EQ(rstd[0], r);
  for (int j = 0; j < 4; ++j)
    EXPECT_NEAR(y[size_t(j)], (x[size_t(j)] - 2.5) * r * w[size_t(j)] + b[size_t(j)], 1e-15);
}

TEST(OpsLayerNorm, FloatForwardAgreesWithDouble) {
  const int64_t n = 5, d = 37;
  const auto x = random_float_values(size_t(n * d), 1);
  const auto w = random_float_values(size_t(d), 2, 0.5, 1.5);
  const auto b = random_float_values(size_t(d), 3);
  std::vector<double> y(size_t(n * d)), mean(static_cast<size_t>(n)), rstd(static_cast<size_t>(n));
  layernorm_forward<double>(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d,
                            kEps);
  const auto xf = testing::to_float(x), wf = testing::to_float(w), bf = testing::to_float(b);
  std::vector<float> yf(size_t(n * d)), meanf(static_cast<size_t>(n)),
      rstdf(static_cast<size_t>(n));
  layernorm_forward<float>(xf.data(), wf.data(), bf.data(), yf.data(), meanf.data(), rstdf.data(),
                           n, d, kEps);
  // fp32 error budget per element: the mean (a sum of d terms) is off by <= d u max|x|; the
  // variance by <= (d + 3) u relatively (its first-order dependence on the mean vanishes), so
  // rstd by <= (d/2 + 4) u; xhat = (x - mean) rstd then by |xhat| (d/2 + 6) u + rstd d u max|x|;
  // y = xhat w + b adds 2 u (|xhat w| + |b|). Twice that bound is asserted.
  for (int64_t i = 0; i < n; ++i) {
    double max_abs_x = 0.0;
    for (int64_t j = 0; j < d; ++j) max_abs_x = std::max(max_abs_x, std::abs(x[size_t(i * d + j)]));
    const double r = rstd[size_t(i)];
    EXPECT_NEAR(meanf[size_t(i)], mean[size_t(i)], double(d) * kFloatUnit * max_abs_x);
    EXPECT_NEAR(rstdf[size_t(i)], r, (double(d) / 2 + 4) * kFloatUnit * r);
    for (int64_t j = 0; j < d; ++j) {
      const size_t k = size_t(i * d + j);
      const double xhat = std::abs((x[k] - mean[size_t(i)]) * r);
      const double err_xhat =
          xhat * (double(d) / 2 + 6) * kFloatUnit + r * double(d) * kFloatUnit * max_abs_x;
      const double tol =
          2.0 * (std::abs(w[size_t(j)]) * err_xhat +
                 2.0 * kFloatUnit * (xhat * std::abs(w[size_t(j)]) + std::abs(b[size_t(j)])));
      EXPECT_NEAR(yf[k], y[k], tol) << "row " << i << " col " << j;
    }
  }
}

void check_gradients(int64_t n, int64_t d, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "n=" << n << " d=" << d);
  auto x = random_values(size_t(n * d), seed, -2.0, 2.0);
  auto w = random_values(size_t(d), seed + 1, 0.5, 1.5);
  auto b = random_values(size_t(d), seed + 2);
  const auto dy = random_values(size_t(n * d), seed + 3);  // L = sum(dy * y)
  std::vector<double> mean(static_cast<size_t>(n)), rstd(static_cast<size_t>(n));
  auto loss = [&] {
    std::vector<double> y(size_t(n * d)), m(static_cast<size_t>(n)), r(static_cast<size_t>(n));
    layernorm_forward<double>(x.data(), w.data(), b.data(), y.data(), m.data(), r.data(), n, d,
                              kEps);
    return dot(dy, y);
  };
  std::vector<double> y(size_t(n * d));
  layernorm_forward<double>(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d,
                            kEps);
  // dx, dw and db all accumulate: start them from random values and subtract those afterwards.
  const auto dx0 = random_values(size_t(n * d), seed + 4);
  const auto dw0 = random_values(size_t(d), seed + 5);
  const auto db0 = random_values(size_t(d), seed + 6);
  auto dx = dx0, dw = dw0, db = db0;
  layernorm_backward<double>(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                             dw.data(), db.data(), n, d);
  for (size_t i = 0; i < dx.size(); ++i) dx[i] -= dx0[i];
  for (size_t i = 0; i < dw.size(); ++i) dw[i] -= dw0[i];
  for (size_t i = 0; i < db.size(); ++i) db[i] -= db0[i];
  expect_gradient("dx", x, dx, loss);
  expect_gradient("dw", w, dw, loss);
  expect_gradient("db", b, db, loss);
}

TEST(OpsLayerNorm, GradientsMatchFiniteDifferencesAndAccumulate) {
  check_gradients(1, 7, 10);
  check_gradients(5, 13, 20);
  check_gradients(3, 2, 30);
}

}  // namespace
}  // namespace zt::model::cpu
