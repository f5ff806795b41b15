// The AVX-512 AdamW range kernel (F/BW/VL/DQ, optionally AVX512_BF16 for the bf16 copy), built
// with per-function target attributes so the library needs no -march flag; adamw_step_cpu calls
// it only when cpuid reports the features. The loop is optim/adamw_simd_kernel.h's; this file
// holds the 16-lane intrinsics it runs on. Operation order and rounding: note "AdamW bit
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
// from other headers would not inherit it). The kernel loop carries the AVX512_BF16 one; it
// executes an AVX512_BF16 instruction only when instantiated with Avx512Bf16 below.
#define ZT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
#define ZT_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,avx512bf16")))
#define ZT_SIMD_TARGET ZT_AVX512_BF16
#include "optim/adamw_simd_kernel.h"

namespace zt::optim::detail {
namespace {

// Masked loads and stores: the tail runs as one masked vector (masked lanes read nothing and
// are not written; an all-ones mask compiles to a plain load or store).
struct Avx512 {
  using Vec = __m512;
  using Vec16 = __m256i;
  using Pair16 = __m512i;
  using Mask = __mmask16;
  static constexpr Mask kAll = 0xffff;
  static constexpr int kLanes = 16;
  static constexpr bool kMaskedTail = true;
  static constexpr bool kStreamCopy = true;

  ZT_AVX512 static Mask first_lanes(int64_t left) {
    return left >= kLanes ? kAll : Mask((1u << left) - 1u);
  }

  ZT_AVX512 static Vec set1(float x) { return _mm512_set1_ps(x); }
  ZT_AVX512 static Vec sqrt(Vec a) { return _mm512_sqrt_ps(a); }

  ZT_AVX512 static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  ZT_AVX512 static Vec load(const float* p, Mask k) { return _mm512_maskz_loadu_ps(k, p); }
  ZT_AVX512 static void store(float* p, Vec x) { _mm512_storeu_ps(p, x); }
  ZT_AVX512 static void store(float* p, Vec x, Mask k) { _mm512_mask_storeu_ps(p, k, x); }
  ZT_AVX512 static Vec16 load16(const uint16_t* p, Mask k) {
    return _mm256_maskz_loadu_epi16(k, p);
  }
  ZT_AVX512 static void store16(uint16_t* p, Vec16 x, Mask k) {
    _mm256_mask_storeu_epi16(p, k, x);
  }
  ZT_AVX512 static void store_pair16(uint16_t* p, Pair16 x) { _mm512_storeu_si512(p, x); }
  ZT_AVX512 static void stream_pair16(uint16_t* p, Pair16 x) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), x);
  }

  ZT_AVX512 static Vec widen_f16(Vec16 h) { return _mm512_cvtph_ps(h); }
  ZT_AVX512 static Vec16 round_f16(Vec p) { return _mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT); }
  ZT_AVX512 static Pair16 join16(Vec16 lo, Vec16 hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }

  using U32 = uint32_t __attribute__((vector_size(64)));
  ZT_AVX512 static U32 widen_u16(Vec16 h) { return U32(_mm512_cvtepu16_epi32(h)); }
  ZT_AVX512 static Vec16 narrow_u16(U32 x) { return _mm512_cvtepi32_epi16(__m512i(x)); }  // vpmovdw
};

// Avx512 with the bf16 copy rounded by AVX512_BF16's vcvtne(2)ps2bf16, which flush fp32
// subnormal inputs to +-0: those lanes are redone with the integer rounding.
struct Avx512Bf16 : Avx512 {
  // Lanes holding fp32 subnormals (exponent 0, mantissa != 0).
  ZT_AVX512 static Mask subnormal_lanes(Vec p) {
    const __m512i a = _mm512_and_si512(_mm512_castps_si512(p), _mm512_set1_epi32(0x7fffffff));
    // a - 1 < 0x7fffff (unsigned) <=> 1 <= a <= 0x7fffff
    return _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, _mm512_set1_epi32(1)),
                                   _mm512_set1_epi32(0x7fffff));
  }

  ZT_AVX512_BF16 static Vec16 round_bf16(Vec p) {
    const __m256i r = (__m256i)_mm512_cvtneps_pbh(p);
    const Mask sub = subnormal_lanes(p);
    if (sub == 0) return r;
    return _mm256_mask_mov_epi16(r, sub, round_bf16_int<Avx512>(p));
  }

  // Two vectors (32 lanes: lo then hi) with one vcvtne2ps2bf16.
  ZT_AVX512_BF16 static Pair16 round_bf16_pair(Vec lo, Vec hi) {
    const __m512i r = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lanes 0-15 from lo, 16-31 from hi
    const __mmask32 sub = __mmask32(subnormal_lanes(lo)) | (__mmask32(subnormal_lanes(hi)) << 16);
    if (sub == 0) return r;
    const Pair16 exact = join16(round_bf16_int<Avx512>(lo), round_bf16_int<Avx512>(hi));
    return _mm512_mask_mov_epi16(r, sub, exact);
  }
};

}  // namespace

// use_bf16_insn: only the bf16-copy ranges differ (see range_grad's TBF16).
void adamw_range_avx512(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                        int64_t begin, int64_t end, const AdamWConstants& c, bool use_bf16_insn) {
  if (use_bf16_insn) {
    return range_any<Avx512, Avx512Bf16>(b, grad_dtype, param16_dtype, begin, end, c);
  }
  range_any<Avx512>(b, grad_dtype, param16_dtype, begin, end, c);
}

}  // namespace zt::optim::detail
