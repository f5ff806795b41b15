// The AVX2 + F16C AdamW range kernel, built with per-function target attributes so the library
// needs no -march flag; adamw_step_cpu calls it only when cpuid reports the features. The loop is
// optim/adamw_simd_kernel.h's; this file holds the 8-lane intrinsics it runs on. Operation order
// and rounding: note "AdamW bit identity" in optim/adamw_simd.h.
#include <immintrin.h>

#include <cstdint>

#include "optim/adamw_simd.h"

// Everything below is internal and carries its own target attribute (lambdas would not inherit
// it). No "fma" here: the kernel must not fuse (see the note).
#define ZT_AVX2 __attribute__((target("avx2,f16c")))
#define ZT_SIMD_TARGET ZT_AVX2
#include "optim/adamw_simd_kernel.h"

namespace zt::optim::detail {
namespace {

// AVX2 has no masked 16-bit loads, so every vector is full and the tail runs scalar.
struct Avx2 {
  using Vec = __m256;
  using Vec16 = __m128i;
  using Pair16 = __m256i;
  struct Mask {};
  static constexpr Mask kAll{};
  static constexpr int kLanes = 8;
  static constexpr bool kMaskedTail = false;
  static constexpr bool kStreamCopy = false;

  ZT_AVX2 static Vec set1(float x) { return _mm256_set1_ps(x); }
  ZT_AVX2 static Vec sqrt(Vec a) { return _mm256_sqrt_ps(a); }

  ZT_AVX2 static Vec load(const float* p, Mask = kAll) { return _mm256_loadu_ps(p); }
  ZT_AVX2 static void store(float* p, Vec x, Mask = kAll) { _mm256_storeu_ps(p, x); }
  ZT_AVX2 static Vec16 load16(const uint16_t* p, Mask) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  }
  ZT_AVX2 static void store16(uint16_t* p, Vec16 x, Mask) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), x);
  }
  ZT_AVX2 static void store_pair16(uint16_t* p, Pair16 x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
  }

  ZT_AVX2 static Vec widen_f16(Vec16 h) { return _mm256_cvtph_ps(h); }
  ZT_AVX2 static Vec16 round_f16(Vec p) { return _mm256_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT); }
  ZT_AVX2 static Pair16 join16(Vec16 lo, Vec16 hi) { return _mm256_set_m128i(hi, lo); }

  using U32 = uint32_t __attribute__((vector_size(32)));
  ZT_AVX2 static U32 widen_u16(Vec16 h) { return U32(_mm256_cvtepu16_epi32(h)); }
  // Lanes < 2^16: the unsigned-saturating pack is exact.
  ZT_AVX2 static Vec16 narrow_u16(U32 x) {
    const __m256i r = __m256i(x);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  }
};

}  // namespace

void adamw_range_avx2(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                      int64_t begin, int64_t end, const AdamWConstants& c) {
  range_any<Avx2>(b, grad_dtype, param16_dtype, begin, end, c);
}

}  // namespace zt::optim::detail
