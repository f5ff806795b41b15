// Storage dtypes (fp32, bf16, fp16, fp64) and exact round-to-nearest-even conversions.
//
// The scalar conversions are inline and usable from host and device code, so CUDA kernels and
// the CPU reference round identically. fp64 exists for the CPU reference's gradient checks only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__CUDACC__)
#define ZT_HOST_DEVICE __host__ __device__
#else
#define ZT_HOST_DEVICE
#endif

namespace zt {

enum class DType : uint8_t { kF32, kBF16, kF16, kF64 };

size_t dtype_size(DType dtype);
// "fp32", "bf16", "fp16", "fp64": the spelling used in configs and logs.
std::string_view dtype_name(DType dtype);
// Parses dtype_name()'s spelling; returns false for anything else.
bool parse_dtype(std::string_view name, DType* out);

// 16-bit storage types: plain bit patterns, converted explicitly (never implicitly).
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

ZT_HOST_DEVICE inline uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

ZT_HOST_DEVICE inline float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

ZT_HOST_DEVICE inline float bf16_to_float(bf16 h) { return bits_to_float(uint32_t(h.bits) << 16); }

// Round to nearest even; NaN stays NaN (quiet, sign kept); finite values past the largest bf16
// round to inf as IEEE rounding says.
ZT_HOST_DEVICE inline bf16 float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

ZT_HOST_DEVICE inline float f16_to_float(f16 h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_to_float(sign);  // signed zero
  // Subnormal: value = mant * 2^-24; renormalise into an fp32 normal.
  int e = 113;  // exponent of 2^-14 plus bias 127 = 113 when the hidden bit sits at bit 10
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return bits_to_float(sign | (uint32_t(e) << 23) | ((mant & 0x3ffu) << 13));
}

// Round to nearest even, including into the subnormal range; overflow gives inf; NaN stays a
// quiet NaN with its sign.
ZT_HOST_DEVICE inline f16 float_to_f16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t x = u & 0x7fffffffu;
  if (x > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u | ((x >> 13) & 0x3ffu))};
  if (x >= 0x38800000u) {  // |f| >= 2^-14: normal fp16 (or overflow)
    if (x >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf
    const uint32_t r = x - (112u << 23);                          // rebias exponent 127 -> 15
    const uint32_t rounded = r + 0xfffu + ((r >> 13) & 1u);
    return f16{uint16_t(sign | (rounded >> 13))};
  }
  const uint32_t exp = x >> 23;
  if (exp < 102) return f16{sign};  // below 2^-25: rounds to zero
  // Subnormal fp16: value = m * 2^-24 with m = mant * 2^(exp - 126).
  const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - exp;  // 14..24
  uint32_t m = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (m & 1u))) ++m;  // may carry into the smallest normal: fine
  return f16{uint16_t(sign | m)};
}

// Scalar load/store of element i of a buffer of any storage dtype, through fp32 or fp64.
ZT_HOST_DEVICE inline double load_as_double(const void* p, DType dt, size_t i) {
  switch (dt) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kBF16: return bf16_to_float(static_cast<const bf16*>(p)[i]);
    case DType::kF16: return f16_to_float(static_cast<const f16*>(p)[i]);
    case DType::kF64: return static_cast<const double*>(p)[i];
  }
  return 0.0;
}

ZT_HOST_DEVICE inline void store_from_double(void* p, DType dt, size_t i, double v) {
  switch (dt) {
    case DType::kF32: static_cast<float*>(p)[i] = float(v); break;
    case DType::kBF16: static_cast<bf16*>(p)[i] = float_to_bf16(float(v)); break;
    case DType::kF16: static_cast<f16*>(p)[i] = float_to_f16(float(v)); break;
    case DType::kF64: static_cast<double*>(p)[i] = v; break;
  }
}

// Bulk conversions on the host (OpenMP above 65536 elements; up to that, on the calling thread
// alone). src and dst may not overlap unless they are the same buffer with the same dtype (then
// nothing is done).
void convert_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n);
// dst[i] = dst[i] + scale * src[i], dst rounded once to its dtype after the add in fp64/fp32.
void accumulate_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n,
                    double scale = 1.0);

}  // namespace zt
