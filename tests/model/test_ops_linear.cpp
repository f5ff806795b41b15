// Tests of linear_forward/backward: a naive reference, finite-difference gradients of x, w and b,
// the write/add semantics of dx, dw, db, and float against double.
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

constexpr int64_t kN = 5, kIn = 7, kOut = 3;

TEST(OpsLinear, ForwardMatchesNaiveAndFloatAgrees) {
  const auto x = random_float_values(kN * kIn, 1);
  const auto w = random_float_values(kOut * kIn, 2);
  const auto b = random_float_values(kOut, 3);
  std::vector<double> y(kN * kOut), y_nobias(kN * kOut);
  linear_forward<double>(x.data(), w.data(), b.data(), y.data(), kN, kIn, kOut);
  linear_forward<double>(x.data(), w.data(), nullptr, y_nobias.data(), kN, kIn, kOut);
  std::vector<float> yf(kN * kOut);
  const auto xf = testing::to_float(x), wf = testing::to_float(w), bf = testing::to_float(b);
  linear_forward<float>(xf.data(), wf.data(), bf.data(), yf.data(), kN, kIn, kOut);
  for (int64_t i = 0; i < kN; ++i) {
    for (int64_t o = 0; o < kOut; ++o) {
      double ref = 0.0, mag = std::abs(b[o]);
      for (int64_t j = 0; j < kIn; ++j) {
        ref += x[i * kIn + j] * w[o * kIn + j];
        mag += std::abs(x[i * kIn + j] * w[o * kIn + j]);
      }
      EXPECT_NEAR(y_nobias[i * kOut + o], ref, 1e-14);
      EXPECT_NEAR(y[i * kOut + o], ref + b[o], 1e-14);
      // fp32: in products and in + 1 sums, each rounding by at most 2^-24 of the magnitude.
      EXPECT_NEAR(yf[i * kOut + o], y[i * kOut + o], double(kIn + 2) * kFloatUnit * mag);
    }
  }
}

TEST(OpsLinear, GradientsMatchFiniteDifferencesAndAccumulate) {
  auto x = random_values(kN * kIn, 11);
  auto w = random_values(kOut * kIn, 12);
  auto b = random_values(kOut, 13);
  const auto dy = random_values(kN * kOut, 14);  // L = sum(dy * y)
  auto loss = [&] {
    std::vector<double> y(kN * kOut);
    linear_forward<double>(x.data(), w.data(), b.data(), y.data(), kN, kIn, kOut);
    return dot(dy, y);
  };

  // dx is written (NaN garbage must vanish); dw and db are added into pre-filled values.
  std::vector<double> dx(kN * kIn, std::numeric_limits<double>::quiet_NaN());
  const auto dw0 = random_values(kOut * kIn, 15), db0 = random_values(kOut, 16);
  auto dw = dw0, db = db0;
  linear_backward<double>(dy.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), kN, kIn,
                          kOut, false);
  std::vector<double> gw(dw.size()), gb(db.size());
  for (size_t i = 0; i < dw.size(); ++i) gw[i] = dw[i] - dw0[i];
  for (size_t i = 0; i < db.size(); ++i) gb[i] = db[i] - db0[i];
  expect_gradient("dx", x, dx, loss);
  expect_gradient("dw", w, gw, loss);
  expect_gradient("db", b, gb, loss);

  // accumulate_dx adds into dx; with db == nullptr the bias gradient is skipped.
  const auto dx0 = random_values(kN * kIn, 17);
  auto dx_acc = dx0;
  auto dw2 = dw0;
  linear_backward<double>(dy.data(), x.data(), w.data(), dx_acc.data(), dw2.data(), nullptr, kN,
                          kIn, kOut, true);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx_acc[i], dx0[i] + dx[i], 1e-14);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_EQ(dw2[i], dw[i]);

  // dx == nullptr skips the input gradient.
  auto dw3 = dw0, db3 = db0;
  linear_backward<double>(dy.data(), x.data(), w.data(), nullptr, dw3.data(), db3.data(), kN, kIn,
                          kOut, false);
  EXPECT_EQ(dw3, dw);
  EXPECT_EQ(db3, db);
}

TEST(OpsLinear, NoBiasGradientMatchesFiniteDifferences) {
  // Odd sizes and a single token.
  const int64_t n = 1, in = 4, out = 5;
  auto x = random_values(n * in, 21);
  auto w = random_values(out * in, 22);
  const auto dy = random_values(n * out, 23);
  auto loss = [&] {
    std::vector<double> y(n * out);
    linear_forward<double>(x.data(), w.data(), nullptr, y.data(), n, in, out);
    return dot(dy, y);
  };
  std::vector<double> dx(n * in), dw(out * in, 0.0);
  linear_backward<double>(dy.data(), x.data(), w.data(), dx.data(), dw.data(), nullptr, n, in, out,
                          false);
  expect_gradient("dx", x, dx, loss);
  expect_gradient("dw", w, dw, loss);
}

}  // namespace
}  // namespace zt::model::cpu
