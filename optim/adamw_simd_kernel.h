// Internal to optim/: the loop of the SIMD AdamW range kernels, written once for every vector
// width. A traits struct per ISA (optim/adamw_simd_avx2.cpp, optim/adamw_simd_avx512.cpp) holds
// the vector types and the intrinsics; this header holds the order of the work: the AdamW
// operations (note "AdamW bit identity" in optim/adamw_simd.h), where the gradients are widened
// and the copies rounded, and the head/body/tail split of a range.
//
// Only those two files include it, each after defining ZT_SIMD_TARGET as its target attribute:
// the functions below carry it (the intrinsics inline only into functions of the same target),
// so the ISA code stays in the file that asked for it.
//
// What a traits struct T provides (all static, all carrying the includer's target attribute):
//   Vec                      fp32 vector of kLanes lanes
//   Vec16                    kLanes 16-bit values (one Vec's gradients or copies)
//   Pair16                   2 * kLanes 16-bit values (the copies of two Vecs)
//   Mask, kAll               lanes a load/store touches; kAll: every lane
//   kMaskedTail              true: the tail runs as masked vectors (first_lanes(left) picks the
//                            lanes); false: full vectors, then the scalar update per element
//   kStreamCopy              true: the body writes an aligned 16-bit copy with non-temporal
//                            stores of one Pair16 (64 bytes, one cache line)
//   set1(float), sqrt(Vec)   (+ - * / are Vec's own operators)
//   load(const float*[, Mask]), store(float*, Vec[, Mask])   no Mask: every lane
//   load16(const uint16_t*, Mask), store16(uint16_t*, Vec16, Mask)
//   widen_f16(Vec16)         exact conversion to fp32
//   round_f16(Vec)           float_to_f16 of each lane
//   join16(Vec16 lo, Vec16 hi)
//   store_pair16(uint16_t*, Pair16); stream_pair16(uint16_t*, Pair16) where kStreamCopy
//   U32                      kLanes uint32 lanes (a GCC / Clang vector type: its operators)
//   widen_u16(Vec16)         zero-extended to U32
//   narrow_u16(U32)          low 16 bits of each lane (all lanes are < 2^16 where it is used)
// and may provide round_bf16(Vec) and round_bf16_pair(Vec lo, Vec hi): float_to_bf16 by the
// ISA's own instructions (without them, round_bf16 below does it with integer operations).
#pragma once

#ifndef ZT_SIMD_TARGET
#error "define ZT_SIMD_TARGET (the includer's target attribute) before including this header"
#endif

#include <immintrin.h>

#include <cstdint>

#include "optim/adamw_simd.h"
#include "runtime/dtype.h"

namespace zt::optim::detail {
// Internal linkage: each includer compiles these templates with its own target attribute, so
// each file's copy must be its own entity (one template with external linkage and two differing
// definitions would break the one-definition rule). The traits types are distinct per file too.
namespace {

enum class Copy { kNone, kBF16, kF16, kF32 };

template <class T>
struct Consts {
  typename T::Vec grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, step_size,
      bias2_sqrt, eps;
};

template <class T>
ZT_SIMD_TARGET Consts<T> broadcast(const AdamWConstants& c) {
  return {T::set1(c.grad_scale), T::set1(c.beta1),           T::set1(c.one_minus_beta1),
          T::set1(c.beta2),      T::set1(c.one_minus_beta2), T::set1(c.decay),
          T::set1(c.step_size),  T::set1(c.bias2_sqrt),      T::set1(c.eps)};
}

// adamw_update_element on kLanes lanes, written as the same expression: the operators of GCC's
// and Clang's vector types are the separate IEEE operations (the mul/add/sub/div intrinsics are
// defined with them), and -ffp-contract=off keeps them unfused.
template <class T, class V = typename T::Vec>
ZT_SIMD_TARGET inline void update(V& p, V& m, V& v, V grad, const Consts<T>& c) {
  const V g = grad * c.grad_scale;
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * g * g;
  const V denom = T::sqrt(v) / c.bias2_sqrt + c.eps;
  p = p * c.decay - c.step_size * (m / denom);
}

// float_to_bf16 of each lane with integer operations: u + 0x7fff + ((u >> 16) & 1), top half;
// NaN lanes: (u >> 16) | 0x40 (quiet, sign and upper payload kept).
template <class T>
ZT_SIMD_TARGET inline typename T::Vec16 round_bf16_int(typename T::Vec p) {
  using U = typename T::U32;
  const U u = reinterpret_cast<U>(p);
  const U high = u >> 16;
  const U rounded = (u + 0x7fff + (high & 1)) >> 16;
  const U quiet = high | 0x40;
  return T::narrow_u16(p != p ? quiet : rounded);  // p != p: the NaN lanes
}

template <class T>
ZT_SIMD_TARGET inline typename T::Vec16 round_bf16(typename T::Vec p) {
  if constexpr (requires { T::round_bf16(p); }) {
    return T::round_bf16(p);
  } else {
    return round_bf16_int<T>(p);
  }
}

// The bf16 copies of two vectors (lo then hi) as one Pair16.
template <class T>
ZT_SIMD_TARGET inline typename T::Pair16 round_bf16_pair(typename T::Vec lo, typename T::Vec hi) {
  if constexpr (requires { T::round_bf16_pair(lo, hi); }) {
    return T::round_bf16_pair(lo, hi);
  } else {
    return T::join16(round_bf16<T>(lo), round_bf16<T>(hi));
  }
}

// kLanes gradients from element i on, as fp32 (exact). Lanes outside k read nothing.
template <class T, DType kGrad>
ZT_SIMD_TARGET inline typename T::Vec load_grad(const void* grad, int64_t i, typename T::Mask k) {
  if constexpr (kGrad == DType::kF32) {
    return T::load(static_cast<const float*>(grad) + i, k);
  } else {
    const typename T::Vec16 h = T::load16(static_cast<const uint16_t*>(grad) + i, k);
    if constexpr (kGrad == DType::kBF16) {
      return reinterpret_cast<typename T::Vec>(T::widen_u16(h) << 16);  // exact: the top half
    } else {
      return T::widen_f16(h);
    }
  }
}

// The copy of kLanes lanes from element i on, lanes outside k untouched.
template <class T, Copy kCopy>
ZT_SIMD_TARGET inline void store_copy(void* out, int64_t i, typename T::Vec p,
                                      typename T::Mask k) {
  if constexpr (kCopy == Copy::kF32) {
    T::store(static_cast<float*>(out) + i, p, k);
  } else if constexpr (kCopy == Copy::kBF16) {
    T::store16(static_cast<uint16_t*>(out) + i, round_bf16<T>(p), k);
  } else if constexpr (kCopy == Copy::kF16) {
    T::store16(static_cast<uint16_t*>(out) + i, T::round_f16(p), k);
  }
}

// One vector of elements [i, i + kLanes), lanes outside k neither read nor written.
template <class T, DType kGrad, Copy kCopy>
ZT_SIMD_TARGET inline void step_one(const AdamWBuffers& b, int64_t i, typename T::Mask k,
                                    const Consts<T>& c) {
  typename T::Vec p = T::load(b.param + i, k);
  typename T::Vec m = T::load(b.m + i, k);
  typename T::Vec v = T::load(b.v + i, k);
  update<T>(p, m, v, load_grad<T, kGrad>(b.grad, i, k), c);
  T::store(b.param + i, p, k);
  T::store(b.m + i, m, k);
  T::store(b.v + i, v, k);
  store_copy<T, kCopy>(b.param16, i, p, k);
}

// Two full vectors [i, i + 2 kLanes): the main loop body. A 16-bit copy goes out as one Pair16;
// kStream16: with a non-temporal store (the caller checked its alignment): the copy is only read
// later by the upload to the GPU, and a streaming store skips reading the line first (2 of the
// 28 bytes per parameter of a bf16 step).
template <class T, DType kGrad, Copy kCopy, bool kStream16>
ZT_SIMD_TARGET inline void step_pair(const AdamWBuffers& b, int64_t i, const Consts<T>& c) {
  constexpr int kLanes = T::kLanes;
  constexpr typename T::Mask kAll = T::kAll;
  typename T::Vec p0 = T::load(b.param + i);
  typename T::Vec p1 = T::load(b.param + i + kLanes);
  typename T::Vec m0 = T::load(b.m + i);
  typename T::Vec m1 = T::load(b.m + i + kLanes);
  typename T::Vec v0 = T::load(b.v + i);
  typename T::Vec v1 = T::load(b.v + i + kLanes);
  update<T>(p0, m0, v0, load_grad<T, kGrad>(b.grad, i, kAll), c);
  update<T>(p1, m1, v1, load_grad<T, kGrad>(b.grad, i + kLanes, kAll), c);
  T::store(b.param + i, p0);
  T::store(b.param + i + kLanes, p1);
  T::store(b.m + i, m0);
  T::store(b.m + i + kLanes, m1);
  T::store(b.v + i, v0);
  T::store(b.v + i + kLanes, v1);
  if constexpr (kCopy == Copy::kBF16 || kCopy == Copy::kF16) {
    uint16_t* out = static_cast<uint16_t*>(b.param16) + i;
    typename T::Pair16 bits;
    if constexpr (kCopy == Copy::kBF16) {
      bits = round_bf16_pair<T>(p0, p1);
    } else {
      bits = T::join16(T::round_f16(p0), T::round_f16(p1));
    }
    if constexpr (kStream16) {
      T::stream_pair16(out, bits);
    } else {
      T::store_pair16(out, bits);
    }
  } else {
    store_copy<T, kCopy>(b.param16, i, p0, kAll);
    store_copy<T, kCopy>(b.param16, i + kLanes, p1, kAll);
  }
}

// Elements [begin, end) that step_pair and step_one left: the shared scalar update and dtype.h's
// conversions (same bits).
template <DType kGrad, Copy kCopy>
ZT_SIMD_TARGET void step_scalar(const AdamWBuffers& b, int64_t begin, int64_t end,
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

template <class T, DType kGrad, Copy kCopy>
ZT_SIMD_TARGET void range(const AdamWBuffers& b, int64_t begin, int64_t end,
                          const AdamWConstants& hc) {
  constexpr int kLanes = T::kLanes;
  const Consts<T> c = broadcast<T>(hc);
  int64_t i = begin;
  constexpr bool k16 = kCopy == Copy::kBF16 || kCopy == Copy::kF16;
  if constexpr (T::kStreamCopy && k16) {
    constexpr uintptr_t kLine = sizeof(typename T::Pair16);
    if (reinterpret_cast<uintptr_t>(static_cast<uint16_t*>(b.param16) + begin) % kLine == 0) {
      for (; i + 2 * kLanes <= end; i += 2 * kLanes) step_pair<T, kGrad, kCopy, true>(b, i, c);
      _mm_sfence();  // streaming stores are weakly ordered: done before the caller's barrier
    }
  }
  // All pairs when the copy was not streamed (none left when it was).
  for (; i + 2 * kLanes <= end; i += 2 * kLanes) step_pair<T, kGrad, kCopy, false>(b, i, c);
  if constexpr (T::kMaskedTail) {
    for (; i < end; i += kLanes) step_one<T, kGrad, kCopy>(b, i, T::first_lanes(end - i), c);
  } else {
    for (; i + kLanes <= end; i += kLanes) step_one<T, kGrad, kCopy>(b, i, T::kAll, c);
    step_scalar<kGrad, kCopy>(b, i, end, hc);
  }
}

// TBF16: the traits for bf16 copies (a variant of T that rounds them with other instructions;
// only those ranges are instantiated with it).
template <class T, class TBF16, DType kGrad>
ZT_SIMD_TARGET void range_grad(const AdamWBuffers& b, DType param16_dtype, int64_t begin,
                               int64_t end, const AdamWConstants& c) {
  if (b.param16 == nullptr) return range<T, kGrad, Copy::kNone>(b, begin, end, c);
  switch (param16_dtype) {
    case DType::kBF16: return range<TBF16, kGrad, Copy::kBF16>(b, begin, end, c);
    case DType::kF16: return range<T, kGrad, Copy::kF16>(b, begin, end, c);
    case DType::kF32: return range<T, kGrad, Copy::kF32>(b, begin, end, c);
    case DType::kF64: break;
  }
}

// The includer's exported function (declared in adamw_simd.h) calls this one: it cannot carry
// the target attribute itself, or GCC would take it for a multiversioned redeclaration.
template <class T, class TBF16 = T>
ZT_SIMD_TARGET void range_any(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                              int64_t begin, int64_t end, const AdamWConstants& c) {
  switch (grad_dtype) {
    case DType::kF32: return range_grad<T, TBF16, DType::kF32>(b, param16_dtype, begin, end, c);
    case DType::kBF16: return range_grad<T, TBF16, DType::kBF16>(b, param16_dtype, begin, end, c);
    case DType::kF16: return range_grad<T, TBF16, DType::kF16>(b, param16_dtype, begin, end, c);
    case DType::kF64: break;
  }
}

}  // namespace
}  // namespace zt::optim::detail
