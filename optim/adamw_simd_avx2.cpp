// The AVX2 + F16C AdamW range kernel, built with per-function target attributes so the library
// needs no -march flag; adamw_step_cpu calls it only when cpuid reports the features. Operation
// order and rounding: note "AdamW bit identity" in optim/adamw_simd.h.
#include <immintrin.h>

#include <cstdint>

#include "optim/adamw_simd.h"

// Everything below is internal and carries its own target attribute (lambdas would not inherit
// it). No "fma" here: the kernel must not fuse (see the note).
#define ZT_AVX2 __attribute__((target("avx2,f16c")))

namespace zt::optim::detail {
namespace {

constexpr int kLanes = 8;

enum class Copy { kNone, kBF16, kF16, kF32 };

struct Consts {
  __m256 grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, step_size,
      bias2_sqrt, eps;
};

ZT_AVX2 Consts broadcast(const AdamWConstants& c) {
  return {_mm256_set1_ps(c.grad_scale),      _mm256_set1_ps(c.beta1),
          _mm256_set1_ps(c.one_minus_beta1), _mm256_set1_ps(c.beta2),
          _mm256_set1_ps(c.one_minus_beta2), _mm256_set1_ps(c.decay),
          _mm256_set1_ps(c.step_size),       _mm256_set1_ps(c.bias2_sqrt),
          _mm256_set1_ps(c.eps)};
}

// adamw_update_element on 8 lanes: separate mul/add/sub/sqrt/div, operands in the same order.
ZT_AVX2 inline void update(__m256& p, __m256& m, __m256& v, __m256 grad, const Consts& c) {
  const __m256 g = _mm256_mul_ps(grad, c.grad_scale);
  m = _mm256_add_ps(_mm256_mul_ps(c.beta1, m), _mm256_mul_ps(c.one_minus_beta1, g));
  v = _mm256_add_ps(_mm256_mul_ps(c.beta2, v), _mm256_mul_ps(_mm256_mul_ps(c.one_minus_beta2, g), g));
  const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), c.bias2_sqrt), c.eps);
  p = _mm256_sub_ps(_mm256_mul_ps(p, c.decay), _mm256_mul_ps(c.step_size, _mm256_div_ps(m, denom)));
}

// 8 gradients from element i on, as fp32 (exact).
template <DType kGrad>
ZT_AVX2 inline __m256 load_grad(const void* grad, int64_t i) {
  if constexpr (kGrad == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(grad) + i);
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(grad) + i));
    if constexpr (kGrad == DType::kBF16) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(h);
    }
  }
}

// float_to_bf16 of 8 lanes with integer operations: u + 0x7fff + ((u >> 16) & 1), top half;
// NaN lanes: (u >> 16) | 0x40 (quiet, sign and upper payload kept).
ZT_AVX2 inline __m128i bf16_rounded(__m256 p) {
  const __m256i u = _mm256_castps_si256(p);
  const __m256i high = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(high, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(p, p, _CMP_UNORD_Q));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  // All lanes are < 2^16, so the unsigned-saturating pack is exact.
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

template <Copy kCopy>
ZT_AVX2 inline void store_copy(void* out, int64_t i, __m256 p) {
  if constexpr (kCopy == Copy::kF32) {
    _mm256_storeu_ps(static_cast<float*>(out) + i, p);
  } else if constexpr (kCopy == Copy::kBF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i), bf16_rounded(p));
  } else if constexpr (kCopy == Copy::kF16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                     _mm256_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT));
  }
}

template <DType kGrad, Copy kCopy>
ZT_AVX2 inline void step_vector(const AdamWBuffers& b, int64_t i, const Consts& c) {
  __m256 p = _mm256_loadu_ps(b.param + i);
  __m256 m = _mm256_loadu_ps(b.m + i);
  __m256 v = _mm256_loadu_ps(b.v + i);
  update(p, m, v, load_grad<kGrad>(b.grad, i), c);
  _mm256_storeu_ps(b.param + i, p);
  _mm256_storeu_ps(b.m + i, m);
  _mm256_storeu_ps(b.v + i, v);
  store_copy<kCopy>(b.param16, i, p);
}

// The last < 8 elements: the shared scalar update and dtype.h's conversions (same bits).
template <DType kGrad, Copy kCopy>
ZT_AVX2 void step_tail(const AdamWBuffers& b, int64_t begin, int64_t end,
                       const AdamWConstants& c) {
  for (int64_t i = begin; i < end; ++i) {
    float g;
    if constexpr (kGrad == DType::kF32) {
      g = static_cast<const float*>(b.grad)[i];
    } else if constexpr (kGrad == DType::kBF16) {
      g = bf16_to_float(static_cast<const bf16*>(b.grad)[i]);
    } else {
      g = f16_to_float(static_cast<const f16*>(b.grad)[i]);
    }
    adamw_update_element(b.param[i], b.m[i], b.v[i], g, c);
    const float p = b.param[i];
    if constexpr (kCopy == Copy::kF32) static_cast<float*>(b.param16)[i] = p;
    if constexpr (kCopy == Copy::kBF16) static_cast<bf16*>(b.param16)[i] = float_to_bf16(p);
    if constexpr (kCopy == Copy::kF16) static_cast<f16*>(b.param16)[i] = float_to_f16(p);
  }
}

template <DType kGrad, Copy kCopy>
ZT_AVX2 void range(const AdamWBuffers& b, int64_t begin, int64_t end, const AdamWConstants& hc) {
  const Consts c = broadcast(hc);
  int64_t i = begin;
  for (; i + 2 * kLanes <= end; i += 2 * kLanes) {
    step_vector<kGrad, kCopy>(b, i, c);
    step_vector<kGrad, kCopy>(b, i + kLanes, c);
  }
  for (; i + kLanes <= end; i += kLanes) step_vector<kGrad, kCopy>(b, i, c);
  step_tail<kGrad, kCopy>(b, i, end, hc);
}

template <DType kGrad>
ZT_AVX2 void range_grad(const AdamWBuffers& b, DType param16_dtype, int64_t begin, int64_t end,
                        const AdamWConstants& c) {
  if (b.param16 == nullptr) return range<kGrad, Copy::kNone>(b, begin, end, c);
  switch (param16_dtype) {
    case DType::kBF16: return range<kGrad, Copy::kBF16>(b, begin, end, c);
    case DType::kF16: return range<kGrad, Copy::kF16>(b, begin, end, c);
    case DType::kF32: return range<kGrad, Copy::kF32>(b, begin, end, c);
    case DType::kF64: break;
  }
}

// Not inlined into the exported function below (it has no target attribute, so GCC would not
// take this one for a multiversioned redeclaration of it).
ZT_AVX2 void range_any(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                       int64_t begin, int64_t end, const AdamWConstants& c) {
  switch (grad_dtype) {
    case DType::kF32: return range_grad<DType::kF32>(b, param16_dtype, begin, end, c);
    case DType::kBF16: return range_grad<DType::kBF16>(b, param16_dtype, begin, end, c);
    case DType::kF16: return range_grad<DType::kF16>(b, param16_dtype, begin, end, c);
    case DType::kF64: break;
  }
}

}  // namespace

void adamw_range_avx2(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                      int64_t begin, int64_t end, const AdamWConstants& c) {
  range_any(b, grad_dtype, param16_dtype, begin, end, c);
}

}  // namespace zt::optim::detail
