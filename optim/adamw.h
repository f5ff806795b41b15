// AdamW on the CPU: decoupled weight decay and bias correction, as torch.optim.AdamW computes it.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace zt::optim {

// Hyper-parameters of one AdamW step over one contiguous range of parameters.
struct AdamWStep {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: param *= 1 - lr * weight_decay before the Adam update
  int64_t step = 1;           // 1-based count of optimizer steps taken, this one included
  double grad_scale = 1.0;    // multiplies every gradient first (loss-scale undo, clip coefficient)
};

// The step's hyper-parameters, computed in double and rounded once to fp32: every per-element
// operation is then fp32, as torch.optim.AdamW computes for fp32 parameters. The CPU and CUDA
// AdamW both take their constants from here, so they feed the same bits into the same operations.
struct AdamWConstants {
  float grad_scale;
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float decay;       // 1 - lr * weight_decay (decoupled weight decay)
  float step_size;   // lr / (1 - beta1^step)
  float bias2_sqrt;  // sqrt(1 - beta2^step)
  float eps;
};
AdamWConstants adamw_constants(const AdamWStep& hp);

// One AdamW update of n fp32 master values in place, with moments m and v (fp32, in place), from
// gradients of any storage dtype:
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   param = param * (1 - lr wd) - lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// When param16 is not nullptr, the updated values are also written there in param16_dtype
// (round to nearest even): the 16-bit copy the model reads. OpenMP over the range.
//
// The work is cut into fixed tiles of kAdamWCpuTile elements, spread over the OpenMP threads with
// a static schedule (each thread streams one contiguous run of tiles), and each tile runs the best
// SIMD path this CPU has (best_cpu_simd()). Every path computes the same fp32 operations in the
// same order, without fused multiply-adds, and rounds the 16-bit copy as runtime/dtype.h does, so
// all paths and all thread counts give the same bits (note "AdamW bit identity" in
// optim/adamw_simd.h).
void adamw_step_cpu(float* param, float* m, float* v, const void* grad, DType grad_dtype,
                    int64_t n, const AdamWStep& hp, void* param16 = nullptr,
                    DType param16_dtype = DType::kBF16);

// Elements per OpenMP work item of adamw_step_cpu.
inline constexpr int64_t kAdamWCpuTile = 16384;

// The CPU code paths of adamw_step_cpu, chosen at run time from what the CPU reports (cpuid),
// so the library needs no -march flag.
enum class CpuSimd {
  kAuto,        // the best one this CPU supports
  kScalar,      // the plain C++ reference (whatever the compiler makes of it)
  kAvx2,        // AVX2 + F16C; bf16 rounded with integer operations
  kAvx512,      // AVX-512 F/BW/VL/DQ; bf16 rounded with integer operations
  kAvx512Bf16,  // kAvx512 + AVX512_BF16: bf16 copies rounded by vcvtne2ps2bf16 / vcvtneps2bf16
};
// The best path of this CPU (never kAuto).
CpuSimd best_cpu_simd();
// Whether this CPU (and OS) can run `simd`; kAuto and kScalar are always supported.
bool cpu_simd_supported(CpuSimd simd);
// "auto", "scalar", "avx2", "avx512", "avx512-bf16".
const char* cpu_simd_name(CpuSimd simd);

// adamw_step_cpu on a chosen path (kAuto: best_cpu_simd()); an unsupported path is an error.
// Gradient dtypes fp32/bf16/fp16 with 16-bit copies none/bf16/fp16/fp32 run SIMD; the others
// (fp64, used by gradient checks) run the scalar path whatever `simd` says.
void adamw_step_cpu(CpuSimd simd, float* param, float* m, float* v, const void* grad,
                    DType grad_dtype, int64_t n, const AdamWStep& hp, void* param16 = nullptr,
                    DType param16_dtype = DType::kBF16);

}  // namespace zt::optim
