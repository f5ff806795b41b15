// Tests of cross_entropy_forward/backward: uniform logits, the ignore index, target checking,
// float against double, the finite-difference gradient and in-place (aliased) backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"
#include "tests/model/gradcheck.h"

namespace zt::model::cpu {
namespace {

using testing::expect_gradient;
using testing::kFloatUnit;
using testing::random_float_values;
using testing::random_values;

constexpr int64_t kN = 6, kV = 7;
// Two ignored tokens, and targets at both ends of the vocabulary.
const std::vector<int32_t> kTargets = {3, kIgnoreIndex, 0, 6, kIgnoreIndex, 3};

TEST(OpsCrossEntropy, UniformLogitsGiveLogVPerCountedToken) {
  const std::vector<double> logits(kN * kV, 0.37);
  int64_t count = -1;
  const double sum = cross_entropy_forward<double>(logits.data(), kTargets.data(), kN, kV, &count);
  EXPECT_EQ(count, 4);
  EXPECT_NEAR(sum, 4.0 * std::log(double(kV)), 1e-14);
  const std::vector<float> logits_f(kN * kV, 0.37f);
  const double sum_f =
      cross_entropy_forward<float>(logits_f.data(), kTargets.data(), kN, kV, &count);
  EXPECT_EQ(count, 4);
  // fp32: log(sum of 7 ones) per row, within (V + 2) u of log V each.
  EXPECT_NEAR(sum_f, 4.0 * std::log(double(kV)),
              4.0 * (kV + 2) * kFloatUnit * std::log(double(kV)));
}

TEST(OpsCrossEntropy, AllIgnoredCountsNothing) {
  const std::vector<int32_t> targets(3, kIgnoreIndex);
  const auto logits = random_values(3 * kV, 1);
  int64_t count = -1;
  EXPECT_EQ(cross_entropy_forward<double>(logits.data(), targets.data(), 3, kV, &count), 0.0);
  EXPECT_EQ(count, 0);
}

TEST(OpsCrossEntropy, OutOfRangeTargetThrows) {
  const auto logits = random_values(2 * kV, 1);
  std::vector<double> d(2 * kV);
  int64_t count = 0;
  for (int32_t bad : {int32_t(kV), -1, -99, -101}) {
    const std::vector<int32_t> targets = {0, bad};
    EXPECT_THROW(cross_entropy_forward<double>(logits.data(), targets.data(), 2, kV, &count),
                 zt::Error)
        << bad;
    EXPECT_THROW(
        cross_entropy_backward<double>(logits.data(), targets.data(), d.data(), 2, kV, 1.0),
        zt::Error)
        << bad;
  }
}

TEST(OpsCrossEntropy, FloatForwardAgreesWithDouble) {
  const auto logits = random_float_values(kN * kV, 2, -3.0, 3.0);
  int64_t count = 0;
  const double sum = cross_entropy_forward<double>(logits.data(), kTargets.data(), kN, kV, &count);
  const auto logits_f = testing::to_float(logits);
  const double sum_f =
      cross_entropy_forward<float>(logits_f.data(), kTargets.data(), kN, kV, &count);
  // fp32 error per counted row: x_j - max is off by <= u |x_j - max| <= 6u (logits in [-3, 3]),
  // exp adds u relatively, so each term is within 7u relatively and their sum s of V terms
  // within (V + 6) u; log turns that into an absolute error, plus u |log s| (1 <= s <= V);
  // x_t - max adds <= 6u and the final subtraction u |loss| (|loss| <= log V + 6). With V = 7
  // that is (13 + 2 + 6 + 8) u < 40u per row; 2 * 40u per counted row is asserted.
  EXPECT_NEAR(sum_f, sum, double(count) * 80.0 * kFloatUnit);
}

TEST(OpsCrossEntropy, BackwardMatchesFiniteDifferencesAndZeroesIgnoredRows) {
  auto logits = random_values(kN * kV, 3, -3.0, 3.0);
  const double dloss = 0.37;  // d(total)/d(sum), e.g. 1 / count for a mean
  auto loss = [&] {
    int64_t count = 0;
    return dloss * cross_entropy_forward<double>(logits.data(), kTargets.data(), kN, kV, &count);
  };
  std::vector<double> d(kN * kV, std::numeric_limits<double>::quiet_NaN());  // written
  cross_entropy_backward<double>(logits.data(), kTargets.data(), d.data(), kN, kV, dloss);
  expect_gradient("dlogits", logits, d, loss);
  for (int64_t i = 0; i < kN; ++i) {
    double row_sum = 0.0;
    for (int64_t j = 0; j < kV; ++j) row_sum += d[size_t(i * kV + j)];
    EXPECT_NEAR(row_sum, 0.0, 1e-15);  // softmax sums to 1, the one-hot too
    if (kTargets[size_t(i)] == kIgnoreIndex) {
      for (int64_t j = 0; j < kV; ++j) EXPECT_EQ(d[size_t(i * kV + j)], 0.0);
    }
  }

  // In place: dlogits aliasing logits gives the same bits, in double and float.
  std::vector<double> in_place = logits;
  cross_entropy_backward<double>(in_place.data(), kTargets.data(), in_place.data(), kN, kV, dloss);
  EXPECT_EQ(in_place, d);
  const auto logits_f = testing::to_float(logits);
  std::vector<float> d_f(kN * kV), in_place_f = logits_f;
  cross_entropy_backward<float>(logits_f.data(), kTargets.data(), d_f.data(), kN, kV, dloss);
  cross_entropy_backward<float>(in_place_f.data(), kTargets.data(), in_place_f.data(), kN, kV,
                                dloss);
  EXPECT_EQ(in_place_f, d_f);
}

}  // namespace
}  // namespace zt::model::cpu
