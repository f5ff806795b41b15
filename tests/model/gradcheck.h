// Shared helpers of the CPU-op tests: seeded random tensors, float/double copies, and a
// central-difference gradient check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace zt::model::testing {

// Unit roundoff of fp32 (2^-24) and fp64 (2^-53): the tolerances of the float-vs-double and
// reference comparisons are written in these units.
inline constexpr double kFloatUnit = 0x1p-24;
inline constexpr double kDoubleUnit = 0x1p-53;

// Central-difference step and tolerance of every gradient check (T = double). The truncation
// error of (L(x+h) - L(x-h)) / 2h is h^2/6 |L'''| ~ 1e-13 for the O(1) smooth losses used here;
// the rounding error is ~ 2^-53 |L| / h ~ 1e-10 |L| with |L| <= ~100. Both are far below the
// bound 1e-6 * max(1, |g|), while a wrong gradient term is O(1) off.
inline constexpr double kGradStep = 1e-6;
inline constexpr double kGradTol = 1e-6;

// n values uniform in [lo, hi) from a fixed seed. The mapping from the 64-bit generator is
// written out (not std::uniform_real_distribution) so the values do not depend on the library.
inline std::vector<double> random_values(size_t n, uint64_t seed, double lo = -1.0,
                                         double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::vector<double> out(n);
  for (double& v : out) v = lo + (hi - lo) * double(gen() >> 11) * 0x1p-53;
  return out;
}

// Random values that are exactly representable in float, so float and double runs of an op
// see the same inputs.
inline std::vector<double> random_float_values(size_t n, uint64_t seed, double lo = -1.0,
                                               double hi = 1.0) {
  std::vector<double> out = random_values(n, seed, lo, hi);
  for (double& v : out) v = double(float(v));
  return out;
}

inline std::vector<float> to_float(const std::vector<double>& x) {
  return std::vector<float>(x.begin(), x.end());
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares analytic[i] with the central difference of loss() in x[i], for every i. loss() must
// read x (the vector is perturbed in place and restored bit for bit).
template <class Loss>
void expect_gradient(const std::string& name, std::vector<double>& x,
                     const std::vector<double>& analytic, Loss&& loss) {
  ASSERT_EQ(x.size(), analytic.size()) << name;
  int failures = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + kGradStep;
    const double up = loss();
    x[i] = saved - kGradStep;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * kGradStep);
    const double bound = kGradTol * std::max(1.0, std::abs(numeric));
    if (!(std::abs(numeric - analytic[i]) <= bound) && failures++ < 5) {
      ADD_FAILURE() << name << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric
                    << ", bound " << bound;
    }
  }
  EXPECT_EQ(failures, 0) << name << ": " << failures << " of " << x.size() << " entries off";
}

// Element-wise |a - b| <= tol[i], reporting the first few misses.
inline void expect_near_each(const std::string& name, const std::vector<double>& actual,
                             const std::vector<double>& expected, const std::vector<double>& tol) {
  ASSERT_EQ(actual.size(), expected.size()) << name;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!(std::abs(actual[i] - expected[i]) <= tol[i]) && failures++ < 5) {
      ADD_FAILURE() << name << "[" << i << "]: " << actual[i] << " vs " << expected[i]
                    << " (tolerance " << tol[i] << ")";
    }
  }
  EXPECT_EQ(failures, 0) << name << ": " << failures << " of " << actual.size() << " off";
}

}  // namespace zt::model::testing
