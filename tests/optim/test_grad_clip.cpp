// Tests of sum_of_squares_cpu (every dtype, thread-count independence) and clip_coefficient.
#include "optim/grad_clip.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "runtime/error.h"
#include "tests/support/thread_count.h"

namespace zt::optim {
namespace {

using zt::testing::ThreadCount;

// The same values stored in each dtype.
struct AllDtypes {
  std::vector<float> f32;
  std::vector<bf16> b16;
  std::vector<f16> h16;
  std::vector<double> f64;
  explicit AllDtypes(const std::vector<float>& values)
      : f32(values), f64(values.begin(), values.end()) {
    for (float x : values) {
      b16.push_back(float_to_bf16(x));
      h16.push_back(float_to_f16(x));
    }
  }
  double sum(DType dtype) const {
    const int64_t n = int64_t(f32.size());
    switch (dtype) {
      case DType::kF32: return sum_of_squares_cpu(f32.data(), dtype, n);
      case DType::kBF16: return sum_of_squares_cpu(b16.data(), dtype, n);
      case DType::kF16: return sum_of_squares_cpu(h16.data(), dtype, n);
      case DType::kF64: return sum_of_squares_cpu(f64.data(), dtype, n);
    }
    return 0.0;
  }
};

constexpr DType kDtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF64};

TEST(SumOfSquares, SmallKnownVector) {
  // Every value is exact in each dtype and every square and partial sum is exact in fp64.
  const AllDtypes data({3.0f, -4.0f, 0.0f, 0.5f, 1.5f, -2.0f});
  for (DType dtype : kDtypes) EXPECT_EQ(data.sum(dtype), 31.5) << dtype_name(dtype);
}

TEST(SumOfSquares, IntegersAcrossBlocksAreExact) {
  // 12345 elements: several 4096-element blocks and a tail that is not a multiple of 8.
  // Integers in [-8, 8] are exact in every dtype and the sum is an integer below 2^53: exact.
  std::vector<float> values;
  double expected = 0.0;
  for (int i = 0; i < 12345; ++i) {
    const int k = (i * 7) % 17 - 8;
    values.push_back(float(k));
    expected += double(k * k);
  }
  const AllDtypes data(values);
  for (DType dtype : kDtypes) EXPECT_EQ(data.sum(dtype), expected) << dtype_name(dtype);
}

TEST(SumOfSquares, ReadsRoundedValuesOfEachDtype) {
  // 0.1 is inexact in every dtype; each dtype must square its own rounded value. 1001 equal
  // terms summed in fp64 carry a relative error below 1001 * 2^-53, so 1e-12 relative is ample.
  const std::vector<float> values(1001, 0.1f);
  const AllDtypes data(values);
  const double expected_f32 = 1001.0 * double(0.1f) * double(0.1f);
  const double b = bf16_to_float(float_to_bf16(0.1f));
  const double h = f16_to_float(float_to_f16(0.1f));
  EXPECT_NEAR(data.sum(DType::kF32), expected_f32, 1e-12 * expected_f32);
  EXPECT_NEAR(data.sum(DType::kBF16), 1001.0 * b * b, 1e-12 * expected_f32);
  EXPECT_NEAR(data.sum(DType::kF16), 1001.0 * h * h, 1e-12 * expected_f32);
  EXPECT_NEAR(data.sum(DType::kF64), expected_f32, 1e-12 * expected_f32);
  EXPECT_NE(b, double(0.1f));  // the bf16 case really differs from fp32
}

TEST(SumOfSquares, ThreadCountDoesNotChangeBits) {
  const size_t n = 1000003;  // odd, many blocks, a partial last block
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(n);
  for (float& x : values) x = dist(rng);
  const AllDtypes data(values);
  for (DType dtype : kDtypes) {
    double one, two;
    {
      ThreadCount threads(1);
      one = data.sum(dtype);
    }
    {
      ThreadCount threads(2);
      two = data.sum(dtype);
    }
    EXPECT_EQ(std::memcmp(&one, &two, sizeof(double)), 0) << dtype_name(dtype) << " " << one
                                                           << " vs " << two;
  }
  // And the blocked sum is the sum: compare with a long double serial sum. ~1e6 fp64 additions
  // of positive terms: relative error below 1e6 * 2^-53 ~ 1.1e-10.
  long double serial = 0.0L;
  for (float x : values) serial += (long double)x * x;
  EXPECT_NEAR(data.sum(DType::kF32), double(serial), 1.2e-10 * double(serial));
}

TEST(SumOfSquares, NonFiniteValuesPropagate) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sum_of_squares_cpu(std::vector<float>{1.0f, -inf, 2.0f}.data(), DType::kF32, 3),
            std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(sum_of_squares_cpu(
      std::vector<float>{1.0f, std::nanf(""), 2.0f}.data(), DType::kF32, 3)));
  EXPECT_TRUE(std::isnan(sum_of_squares_cpu(
      std::vector<float>{inf, std::nanf(""), 2.0f}.data(), DType::kF32, 3)));
}

TEST(SumOfSquares, EmptyAndInvalidRanges) {
  EXPECT_EQ(sum_of_squares_cpu(nullptr, DType::kBF16, 0), 0.0);
  const float x = 1.0f;
  EXPECT_THROW(sum_of_squares_cpu(&x, DType::kF32, -1), Error);
  EXPECT_THROW(sum_of_squares_cpu(nullptr, DType::kF32, 1), Error);
}

TEST(ClipCoefficient, BelowOrAtMaxIsOne) {
  EXPECT_EQ(clip_coefficient(0.0, 1.0), 1.0);
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_coefficient(1.0, 1.0), 1.0);
}

TEST(ClipCoefficient, AboveMaxScalesToMax) {
  EXPECT_DOUBLE_EQ(clip_coefficient(2.0, 1.0), 1.0 / (2.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_coefficient(10.0, 0.5), 0.5 / (10.0 + 1e-6));
  for (double norm : {1.0000001, 3.0, 1e6}) {
    const double c = clip_coefficient(norm, 1.0);
    EXPECT_LT(c, 1.0) << norm;
    EXPECT_LE(norm * c, 1.0) << norm;  // the + 1e-6 keeps the clipped norm just under max_norm
  }
}

TEST(ClipCoefficient, NonPositiveMaxDisables) {
  EXPECT_EQ(clip_coefficient(5.0, 0.0), 1.0);
  EXPECT_EQ(clip_coefficient(5.0, -1.0), 1.0);
}

TEST(ClipCoefficient, NonFiniteNormIsOne) {
  EXPECT_EQ(clip_coefficient(std::numeric_limits<double>::infinity(), 1.0), 1.0);
  EXPECT_EQ(clip_coefficient(std::numeric_limits<double>::quiet_NaN(), 1.0), 1.0);
  EXPECT_EQ(clip_coefficient(-std::numeric_limits<double>::infinity(), 1.0), 1.0);
}

}  // namespace
}  // namespace zt::optim
