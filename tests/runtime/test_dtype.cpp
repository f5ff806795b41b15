// dtype conversions: exact round-to-nearest-even on edge values, and exhaustive round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/rng.h"

namespace zt {
namespace {

float from_bits(uint32_t u) { return bits_to_float(u); }
uint16_t bf(float f) { return float_to_bf16(f).bits; }
uint16_t h(float f) { return float_to_f16(f).bits; }

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(bf(1.0f), 0x3f80);
  EXPECT_EQ(bf(from_bits(0x3f808000)), 0x3f80);  // exactly halfway, even below: stays
  EXPECT_EQ(bf(from_bits(0x3f818000)), 0x3f82);  // exactly halfway, odd below: rounds up
  EXPECT_EQ(bf(from_bits(0x3f808001)), 0x3f81);  // just above halfway: up
  EXPECT_EQ(bf(from_bits(0x3f807fff)), 0x3f80);  // just below halfway: down
  EXPECT_EQ(bf(-1.5f), 0xbfc0);
  EXPECT_EQ(bf(-0.0f), 0x8000);
}

TEST(Bf16, OverflowInfAndNan) {
  EXPECT_EQ(bf(std::numeric_limits<float>::max()), 0x7f80);  // rounds past the largest bf16
  EXPECT_EQ(bf(from_bits(0x7f7f7fff)), 0x7f7f);              // below the midpoint: largest bf16
  EXPECT_EQ(bf(from_bits(0x7f7f8000)), 0x7f80);              // tie with odd LSB: up to inf
  EXPECT_EQ(bf(INFINITY), 0x7f80);
  EXPECT_EQ(bf(-INFINITY), 0xff80);
  const uint16_t nan = bf(std::nanf(""));
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);  // still a NaN, not inf
  // A NaN whose payload lives only in the low 16 bits must not become inf.
  const uint16_t low_nan = bf(from_bits(0xff800001));
  EXPECT_EQ(low_nan & 0x8000, 0x8000);
  EXPECT_TRUE(std::isnan(bf16_to_float(bf16{low_nan})));
}

TEST(Bf16, Subnormals) {
  EXPECT_EQ(bf(from_bits(0x00000001)), 0x0000);  // far below half an ulp of bf16
  EXPECT_EQ(bf(from_bits(0x00008000)), 0x0000);  // tie, even below
  EXPECT_EQ(bf(from_bits(0x00018000)), 0x0002);  // tie, odd below
  EXPECT_EQ(bf(from_bits(0x00010000)), 0x0001);  // exactly representable
  EXPECT_EQ(bf16_to_float(bf16{0x0001}), from_bits(0x00010000));
}

TEST(Bf16, EveryPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_float(bf16{uint16_t(b)});
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(bf(f), b) << "pattern " << b;
  }
}

// Reference: the nearest bf16 by comparing the two neighbouring candidates in double.
TEST(Bf16, MatchesNearestEvenReferenceOnRandomFloats) {
  for (uint64_t i = 0; i < 200000; ++i) {
    const uint32_t u = uint32_t(random_bits(7, 1, i));
    const float f = from_bits(u);
    if (!std::isfinite(f)) continue;
    const uint16_t lo = uint16_t(u >> 16);  // truncation toward zero
    const uint16_t hi = uint16_t(lo + 1);   // next magnitude up (may be inf)
    const double d_lo = std::fabs(double(f) - double(bf16_to_float(bf16{lo})));
    // IEEE rounding treats the step past the largest finite value as 2^128 (then inf).
    const double hi_value = (hi & 0x7fff) == 0x7f80 ? std::copysign(std::ldexp(1.0, 128), f)
                                                    : double(bf16_to_float(bf16{hi}));
    const double d_hi = std::fabs(double(f) - hi_value);
    uint16_t expect = d_lo < d_hi ? lo : hi;
    if (d_lo == d_hi) expect = (lo & 1) ? hi : lo;
    if (double(f) == double(bf16_to_float(bf16{lo}))) expect = lo;
    ASSERT_EQ(bf(f), expect) << "bits " << std::hex << u;
  }
}

TEST(F16, RoundsToNearestEven) {
  EXPECT_EQ(h(1.0f), 0x3c00);
  EXPECT_EQ(h(-2.0f), 0xc000);
  EXPECT_EQ(h(0.1f), 0x2e66);
  EXPECT_EQ(h(1.0f + 1.0f / 2048), 0x3c00);  // halfway between 1 and 1 + 2^-10: even
  EXPECT_EQ(h(1.0f + 3.0f / 2048), 0x3c02);  // halfway, odd below: up
  EXPECT_EQ(h(-0.0f), 0x8000);
}

TEST(F16, OverflowInfAndNan) {
  EXPECT_EQ(h(65504.0f), 0x7bff);
  EXPECT_EQ(h(65519.99f), 0x7bff);  // below the midpoint to 65536
  EXPECT_EQ(h(65520.0f), 0x7c00);   // the midpoint, odd below: overflows to inf
  EXPECT_EQ(h(1e6f), 0x7c00);
  EXPECT_EQ(h(-1e30f), 0xfc00);
  EXPECT_EQ(h(INFINITY), 0x7c00);
  EXPECT_EQ(h(-INFINITY), 0xfc00);
  const uint16_t nan = h(-std::nanf(""));
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_EQ(nan & 0x8000, 0x8000);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(from_bits(0x7f800001)))));  // low payload
}

TEST(F16, Subnormals) {
  EXPECT_EQ(h(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(h(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(h(std::ldexp(1.0f, -25)), 0x0000);  // half of it: tie to even (zero)
  EXPECT_EQ(h(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(h(std::ldexp(3.0f, -26)), 0x0001);     // 0.75 of the smallest: up
  EXPECT_EQ(h(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 units: tie, odd below: up to 2
  EXPECT_EQ(h(std::ldexp(5.0f, -25)), 0x0002);     // 2.5 units: tie, even below: 2
  EXPECT_EQ(h(std::ldexp(1023.0f, -24)), 0x03ff);  // largest subnormal
  EXPECT_EQ(h(std::ldexp(2047.0f, -25)), 0x0400);  // 1023.5 units: tie, odd: carries to normal
  EXPECT_EQ(h(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(h(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f16_to_float(f16{0x0001}), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(f16{0x03ff}), std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_float(f16{0x8200}), -std::ldexp(1.0f, -15));
}

TEST(F16, EveryPatternRoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = f16_to_float(f16{uint16_t(b)});
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
      continue;
    }
    ASSERT_EQ(h(f), b) << "pattern " << b;
  }
}

// Reference: the nearest fp16 found by binary search over every finite positive fp16 value.
TEST(F16, MatchesNearestEvenReferenceOnRandomFloats) {
  std::vector<double> values;  // index == bit pattern for 0x0000..0x7bff
  for (uint32_t b = 0; b < 0x7c00; ++b) values.push_back(f16_to_float(f16{uint16_t(b)}));
  const double max_half = 65504.0, overflow_at = 65520.0;
  for (uint64_t i = 0; i < 200000; ++i) {
    // Exponents spread around the fp16 range so subnormal, normal and overflow cases all occur.
    const double mag = std::ldexp(random_uniform(3, 2, i), int(random_bits(3, 3, i) % 48) - 30);
    const float f = float(random_bits(3, 4, i) & 1 ? -mag : mag);
    const double a = std::fabs(double(f));
    uint16_t expect;
    if (a >= overflow_at) {
      expect = 0x7c00;
    } else if (a >= max_half) {
      expect = 0x7bff;
    } else {
      const size_t hi = size_t(std::lower_bound(values.begin(), values.end(), a) - values.begin());
      if (values[hi] == a || hi == 0) {
        expect = uint16_t(hi);
      } else {
        const double d_lo = a - values[hi - 1], d_hi = values[hi] - a;
        expect = uint16_t(d_lo < d_hi ? hi - 1 : d_hi < d_lo ? hi : ((hi - 1) % 2 == 0 ? hi - 1 : hi));
      }
    }
    if (std::signbit(f)) expect |= 0x8000;
    ASSERT_EQ(h(f), expect) << "value " << f;
  }
}

TEST(DType, NamesAndSizes) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64}) {
    DType parsed;
    ASSERT_TRUE(parse_dtype(dtype_name(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  DType ignored;
  EXPECT_FALSE(parse_dtype("float8", &ignored));
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF64), 8u);
}

TEST(DType, BulkConvertMatchesScalar) {
  const size_t n = 100003;  // odd and above the OpenMP threshold
  std::vector<float> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = float(random_normal(11, 0, i) * 1000.0);
  std::vector<bf16> b(n);
  std::vector<f16> hh(n);
  std::vector<double> d(n);
  convert_cpu(src.data(), DType::kF32, b.data(), DType::kBF16, n);
  convert_cpu(src.data(), DType::kF32, hh.data(), DType::kF16, n);
  convert_cpu(src.data(), DType::kF32, d.data(), DType::kF64, n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(b[i].bits, bf(src[i]));
    ASSERT_EQ(hh[i].bits, h(src[i]));
    ASSERT_EQ(d[i], double(src[i]));
  }
  std::vector<float> back(n);
  convert_cpu(b.data(), DType::kBF16, back.data(), DType::kF32, n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], bf16_to_float(b[i]));
}

TEST(DType, AccumulateRoundsOnceIntoTheDestination) {
  std::vector<float> src = {1.0f, 2.0f, -3.0f};
  std::vector<bf16> dst = {float_to_bf16(256.0f), float_to_bf16(0.5f), float_to_bf16(0.0f)};
  accumulate_cpu(src.data(), DType::kF32, dst.data(), DType::kBF16, 3, 0.5);
  // 256 + 0.5 = 256.5 is a tie between bf16 256 and 258 (spacing 2): even mantissa is 256.
  EXPECT_EQ(bf16_to_float(dst[0]), 256.0f);
  EXPECT_EQ(bf16_to_float(dst[1]), 1.5f);
  EXPECT_EQ(bf16_to_float(dst[2]), -1.5f);
}

}  // namespace
}  // namespace zt
