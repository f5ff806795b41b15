// Internal to optim/: the per-ISA AdamW range kernels behind adamw_step_cpu, and the one scalar
// element update they all share (the reference expression tree).
//
// Note "AdamW bit identity". Every path (scalar, AVX2, AVX-512, the CUDA kernel) evaluates
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + ((1 - beta2) g) g
//   denom = sqrt(v) / sqrt(1 - beta2^step) + eps
//   p = p decay - step_size (m / denom)
// as separate IEEE fp32 operations in this order (mul, add, sqrt, div are correctly rounded in
// scalar and packed form alike; host code is built with -ffp-contract=off and the kernels use
// separate mul/add intrinsics, never FMA), with the constants of adamw_constants(). Subnormals
// are kept (the MXCSR default: no FTZ/DAZ). So a value's bits do not depend on the path, the
// vector width, whether it fell into a remainder, or the thread count. The loads and stores
// around the arithmetic are exact or match runtime/dtype.h bit for bit:
//  - bf16 grads: shift left 16 (exact); fp16 grads: vcvtph2ps (exact; it quiets a signalling
//    NaN where f16_to_float keeps it, but the grad_scale multiply quiets it on every path).
//  - fp16 copies: vcvtps2ph with round-to-nearest-even equals float_to_f16 for all 2^32 inputs.
//  - bf16 copies: the integer rounding of float_to_bf16 (u + 0x7fff + lsb, NaN -> quiet), or
//    vcvtneps2bf16, which equals it except that it flushes fp32 subnormal inputs to +-0: the
//    AVX512_BF16 path redoes those lanes with the integer rounding.
// NaN payloads: a NaN operand propagates its payload (quieted) through every operation; which
// payload wins when both operands of one operation are NaNs with different payloads follows
// the operand order, which the kernels keep as written above (the CUDA kernel returns a
// canonical NaN instead, so NaN bits are only compared between CPU paths).
#pragma once

#include <cmath>
#include <cstdint>

#include "optim/adamw.h"
#include "runtime/dtype.h"

namespace zt::optim::detail {

// The buffers of one adamw_step_cpu call (param16 is nullptr when no 16-bit copy is written).
struct AdamWBuffers {
  float* param;
  float* m;
  float* v;
  const void* grad;
  void* param16;
};

// One element of the update, in the operation order of the note above. `grad` is the gradient
// already converted (exactly) to fp32.
inline void adamw_update_element(float& p, float& m, float& v, float grad,
                                 const AdamWConstants& c) {
  const float g = grad * c.grad_scale;
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * g * g;
  const float denom = std::sqrt(v) / c.bias2_sqrt + c.eps;
  p = p * c.decay - c.step_size * (m / denom);
}

// Whether the SIMD kernels handle this dtype combination (param16 == nullptr: no copy):
// gradients fp32/bf16/fp16, copies none/bf16/fp16/fp32. Others run the scalar path.
inline bool simd_handles(DType grad_dtype, bool write16, DType param16_dtype) {
  const bool grad_ok =
      grad_dtype == DType::kF32 || grad_dtype == DType::kBF16 || grad_dtype == DType::kF16;
  const bool copy_ok = !write16 || param16_dtype == DType::kBF16 ||
                       param16_dtype == DType::kF16 || param16_dtype == DType::kF32;
  return grad_ok && copy_ok;
}

// Elements [begin, end) on one path; only call them where simd_handles() and the CPU supports
// the path. optim/adamw_simd_avx2.cpp and optim/adamw_simd_avx512.cpp hold them.
void adamw_range_avx2(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                      int64_t begin, int64_t end, const AdamWConstants& c);
// use_bf16_insn: round bf16 copies with AVX512_BF16's instructions (CPU must have them).
void adamw_range_avx512(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                        int64_t begin, int64_t end, const AdamWConstants& c, bool use_bf16_insn);

}  // namespace zt::optim::detail
