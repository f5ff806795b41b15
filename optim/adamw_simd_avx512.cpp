// The AVX-512 AdamW range kernel (F/BW/VL/DQ, optionally AVX512_BF16 for the bf16 copy), built
// with per-function target attributes so the library needs no -march flag; adamw_step_cpu calls
// it only when cpuid reports the features. Operation order and rounding: note "AdamW bit
// identity" in optim/adamw_simd.h.
// GCC 12's _mm512_sqrt_ps / _mm512_cvtph_ps pass _mm512_undefined_ps() (a self-initialised
// variable) as the merge source, which -Wmaybe-uninitialized reports once inlined (GCC bug
// 105593, fixed in GCC 13); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "optim/adamw_simd.h"

// Everything below is internal and carries its own target attribute (lambdas and functions
// from other headers would not inherit it).
#define ZT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
#define ZT_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,avx512bf16")))

namespace zt::optim::detail {
namespace {

constexpr int kLanes = 16;

enum class Copy { kNone, kBF16, kF16, kF32 };

struct Consts {
  __m512 grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, step_size,
      bias2_sqrt, eps;
};

ZT_AVX512 Consts broadcast(const AdamWConstants& c) {
  return {_mm512_set1_ps(c.grad_scale),      _mm512_set1_ps(c.beta1),
          _mm512_set1_ps(c.one_minus_beta1), _mm512_set1_ps(c.beta2),
          _mm512_set1_ps(c.one_minus_beta2), _mm512_set1_ps(c.decay),
          _mm512_set1_ps(c.step_size),       _mm512_set1_ps(c.bias2_sqrt),
          _mm512_set1_ps(c.eps)};
}

// adamw_update_element on 16 lanes: separate mul/add/sub/sqrt/div, operands in the same order.
ZT_AVX512 inline void update(__m512& p, __m512& m, __m512& v, __m512 grad, const Consts& c) {
  const __m512 g = _mm512_mul_ps(grad, c.grad_scale);
  m = _mm512_add_ps(_mm512_mul_ps(c.beta1, m), _mm512_mul_ps(c.one_minus_beta1, g));
  v = _mm512_add_ps(_mm512_mul_ps(c.beta2, v), _mm512_mul_ps(_mm512_mul_ps(c.one_minus_beta2, g), g));
  const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), c.bias2_sqrt), c.eps);
  p = _mm512_sub_ps(_mm512_mul_ps(p, c.decay), _mm512_mul_ps(c.step_size, _mm512_div_ps(m, denom)));
}

// 16 gradients from element i on, as fp32 (exact). Masked lanes read nothing and give 0.
template <DType kGrad>
ZT_AVX512 inline __m512 load_grad(const void* grad, int64_t i, __mmask16 k) {
  if constexpr (kGrad == DType::kF32) {
    return _mm512_maskz_loadu_ps(k, static_cast<const float*>(grad) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(grad) + i);
    if constexpr (kGrad == DType::kBF16) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(h);
    }
  }
}

// float_to_bf16 of 16 lanes with integer operations: u + 0x7fff + ((u >> 16) & 1), top half;
// NaN lanes: (u >> 16) | 0x40 (quiet, sign and upper payload kept).
ZT_AVX512 inline __m256i bf16_rounded_int(__m512 p) {
  const __m512i u = _mm512_castps_si512(p);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(high, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(p, p, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);  // vpmovdw: low 16 bits of each lane
}

// Lanes holding fp32 subnormals (exponent 0, mantissa != 0), which vcvtneps2bf16 flushes to 0.
ZT_AVX512 inline __mmask16 subnormal_lanes(__m512 p) {
  const __m512i a = _mm512_and_si512(_mm512_castps_si512(p), _mm512_set1_epi32(0x7fffffff));
  // a - 1 < 0x7fffff (unsigned) <=> 1 <= a <= 0x7fffff
  return _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, _mm512_set1_epi32(1)),
                                 _mm512_set1_epi32(0x7fffff));
}

ZT_AVX512_BF16 inline __m256i bf16_rounded_insn(__m512 p) {
  const __m256i r = (__m256i)_mm512_cvtneps_pbh(p);
  const __mmask16 sub = subnormal_lanes(p);
  if (sub == 0) return r;
  return _mm256_mask_mov_epi16(r, sub, bf16_rounded_int(p));
}

// Two vectors (32 lanes: lo then hi) with one vcvtne2ps2bf16.
ZT_AVX512_BF16 inline __m512i bf16_rounded_insn_pair(__m512 lo, __m512 hi) {
  const __m512i r = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lanes 0-15 from lo, 16-31 from hi
  const __mmask32 sub = __mmask32(subnormal_lanes(lo)) | (__mmask32(subnormal_lanes(hi)) << 16);
  if (sub == 0) return r;
  const __m512i exact =
      _mm512_inserti64x4(_mm512_castsi256_si512(bf16_rounded_int(lo)), bf16_rounded_int(hi), 1);
  return _mm512_mask_mov_epi16(r, sub, exact);
}

template <bool kBf16Insn>
ZT_AVX512_BF16 inline __m256i bf16_rounded(__m512 p) {
  if constexpr (kBf16Insn) {
    return bf16_rounded_insn(p);
  } else {
    return bf16_rounded_int(p);
  }
}

// The 16-bit (or fp32) copy of 16 lanes, masked lanes untouched.
template <Copy kCopy, bool kBf16Insn>
ZT_AVX512_BF16 inline void store_copy(void* out, int64_t i, __m512 p, __mmask16 k) {
  if constexpr (kCopy == Copy::kF32) {
    _mm512_mask_storeu_ps(static_cast<float*>(out) + i, k, p);
  } else if constexpr (kCopy == Copy::kBF16) {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, k, bf16_rounded<kBf16Insn>(p));
  } else if constexpr (kCopy == Copy::kF16) {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, k,
                             _mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT));
  }
}

// One masked vector of elements [i, i + 16) (lanes outside k are neither read nor written).
template <DType kGrad, Copy kCopy, bool kBf16Insn>
ZT_AVX512_BF16 inline void step_masked(const AdamWBuffers& b, int64_t i, __mmask16 k,
                                       const Consts& c) {
  __m512 p = _mm512_maskz_loadu_ps(k, b.param + i);
  __m512 m = _mm512_maskz_loadu_ps(k, b.m + i);
  __m512 v = _mm512_maskz_loadu_ps(k, b.v + i);
  update(p, m, v, load_grad<kGrad>(b.grad, i, k), c);
  _mm512_mask_storeu_ps(b.param + i, k, p);
  _mm512_mask_storeu_ps(b.m + i, k, m);
  _mm512_mask_storeu_ps(b.v + i, k, v);
  store_copy<kCopy, kBf16Insn>(b.param16, i, p, k);
}

// The 16-bit copies of 32 lanes (lo then hi) as one 64-byte vector.
template <Copy kCopy, bool kBf16Insn>
ZT_AVX512_BF16 inline __m512i copy_pair(__m512 lo, __m512 hi) {
  if constexpr (kCopy == Copy::kBF16 && kBf16Insn) {
    return bf16_rounded_insn_pair(lo, hi);
  } else if constexpr (kCopy == Copy::kBF16) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_rounded_int(lo)), bf16_rounded_int(hi),
                              1);
  } else {
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT)),
        _mm512_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT), 1);
  }
}

// Two full vectors [i, i + 32): the main loop body. kStream16: the 16-bit copy's 64-byte line is
// written with a non-temporal store (the caller checked its alignment): the copy is only read
// later by the upload to the GPU, and a streaming store skips reading the line first (2 of the
// 28 bytes per parameter of a bf16 step).
template <DType kGrad, Copy kCopy, bool kBf16Insn, bool kStream16>
ZT_AVX512_BF16 inline void step_pair(const AdamWBuffers& b, int64_t i, const Consts& c) {
  constexpr __mmask16 kAll = 0xffff;
  __m512 p0 = _mm512_loadu_ps(b.param + i);
  __m512 p1 = _mm512_loadu_ps(b.param + i + kLanes);
  __m512 m0 = _mm512_loadu_ps(b.m + i);
  __m512 m1 = _mm512_loadu_ps(b.m + i + kLanes);
  __m512 v0 = _mm512_loadu_ps(b.v + i);
  __m512 v1 = _mm512_loadu_ps(b.v + i + kLanes);
  update(p0, m0, v0, load_grad<kGrad>(b.grad, i, kAll), c);
  update(p1, m1, v1, load_grad<kGrad>(b.grad, i + kLanes, kAll), c);
  _mm512_storeu_ps(b.param + i, p0);
  _mm512_storeu_ps(b.param + i + kLanes, p1);
  _mm512_storeu_ps(b.m + i, m0);
  _mm512_storeu_ps(b.m + i + kLanes, m1);
  _mm512_storeu_ps(b.v + i, v0);
  _mm512_storeu_ps(b.v + i + kLanes, v1);
  if constexpr (kCopy == Copy::kBF16 || kCopy == Copy::kF16) {
    uint16_t* out = static_cast<uint16_t*>(b.param16) + i;
    const __m512i bits = copy_pair<kCopy, kBf16Insn>(p0, p1);
    if constexpr (kStream16) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(out), bits);
    } else {
      _mm512_storeu_si512(out, bits);
    }
  } else {
    store_copy<kCopy, kBf16Insn>(b.param16, i, p0, kAll);
    store_copy<kCopy, kBf16Insn>(b.param16, i + kLanes, p1, kAll);
  }
}

template <DType kGrad, Copy kCopy, bool kBf16Insn>
ZT_AVX512_BF16 void range(const AdamWBuffers& b, int64_t begin, int64_t end,
                          const AdamWConstants& hc) {
  const Consts c = broadcast(hc);
  int64_t i = begin;
  constexpr bool k16 = kCopy == Copy::kBF16 || kCopy == Copy::kF16;
  const bool stream16 =
      k16 && reinterpret_cast<uintptr_t>(static_cast<uint16_t*>(b.param16) + begin) % 64 == 0;
  if (stream16) {
    for (; i + 2 * kLanes <= end; i += 2 * kLanes) step_pair<kGrad, kCopy, kBf16Insn, true>(b, i, c);
    _mm_sfence();  // streaming stores are weakly ordered: done before the caller's barrier
  } else {
    for (; i + 2 * kLanes <= end; i += 2 * kLanes) step_pair<kGrad, kCopy, kBf16Insn, false>(b, i, c);
  }
  for (; i < end; i += kLanes) {
    const int64_t left = end - i;
    const __mmask16 k = left >= kLanes ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
    step_masked<kGrad, kCopy, kBf16Insn>(b, i, k, c);
  }
}

// The AVX512_BF16 variants are only instantiated for bf16 copies; the others never execute an
// AVX512_BF16 instruction, so they run on any AVX-512 F/BW/VL/DQ CPU.
template <DType kGrad>
ZT_AVX512 void range_grad(const AdamWBuffers& b, DType param16_dtype, int64_t begin,
                          int64_t end, const AdamWConstants& c, bool use_bf16_insn) {
  if (b.param16 == nullptr) return range<kGrad, Copy::kNone, false>(b, begin, end, c);
  switch (param16_dtype) {
    case DType::kBF16:
      if (use_bf16_insn) return range<kGrad, Copy::kBF16, true>(b, begin, end, c);
      return range<kGrad, Copy::kBF16, false>(b, begin, end, c);
    case DType::kF16: return range<kGrad, Copy::kF16, false>(b, begin, end, c);
    case DType::kF32: return range<kGrad, Copy::kF32, false>(b, begin, end, c);
    case DType::kF64: break;
  }
}

// Not inlined into the exported function below (it has no target attribute, so GCC would not
// take this one for a multiversioned redeclaration of it).
ZT_AVX512 void range_any(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                         int64_t begin, int64_t end, const AdamWConstants& c, bool use_bf16_insn) {
  switch (grad_dtype) {
    case DType::kF32:
      return range_grad<DType::kF32>(b, param16_dtype, begin, end, c, use_bf16_insn);
    case DType::kBF16:
      return range_grad<DType::kBF16>(b, param16_dtype, begin, end, c, use_bf16_insn);
    case DType::kF16:
      return range_grad<DType::kF16>(b, param16_dtype, begin, end, c, use_bf16_insn);
    case DType::kF64: break;
  }
}

}  // namespace

void adamw_range_avx512(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                        int64_t begin, int64_t end, const AdamWConstants& c, bool use_bf16_insn) {
  range_any(b, grad_dtype, param16_dtype, begin, end, c, use_bf16_insn);
}

}  // namespace zt::optim::detail
