// AdamW on the CPU: the hyper-parameter constants, the plain fp32 reference of optim/adamw.h's
// update, and the run-time choice between it and the SIMD kernels (optim/adamw_simd_*.cpp), with
// OpenMP over fixed tiles.
#include "optim/adamw.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cmath>

#include "optim/adamw_simd.h"
#include "runtime/error.h"

namespace zt::optim {

AdamWConstants adamw_constants(const AdamWStep& hp) {
  const double step = double(hp.step);
  AdamWConstants c;
  c.grad_scale = float(hp.grad_scale);
  c.beta1 = float(hp.beta1);
  c.one_minus_beta1 = float(1.0 - hp.beta1);
  c.beta2 = float(hp.beta2);
  c.one_minus_beta2 = float(1.0 - hp.beta2);
  c.decay = float(1.0 - hp.lr * hp.weight_decay);
  c.step_size = float(hp.lr / (1.0 - std::pow(hp.beta1, step)));
  c.bias2_sqrt = float(std::sqrt(1.0 - std::pow(hp.beta2, step)));
  c.eps = float(hp.eps);
  return c;
}

namespace {

using detail::AdamWBuffers;

// The range is cut into fixed tiles rather than one slice per thread, and the static schedule
// hands each thread one contiguous run of tiles (its own stream through memory). Results do not
// depend on the cut (note "AdamW bit identity" in optim/adamw_simd.h); fixed tiles keep it so
// even for a build whose compiler contracts the scalar path's vectorised body and tail
// differently.
constexpr int64_t kTile = kAdamWCpuTile;

// The reference update of elements [begin, end). The dtypes are template constants, so the dtype
// switches of load_as_double / store_from_double fold away and the loop body has no branch on
// them. sqrt(v_hat) is computed as sqrt(v) / sqrt(1 - beta2^step), the order torch uses.
// Note: GCC vectorises this loop only with -fno-math-errno (std::sqrt may set errno otherwise);
// that flag changes no result.
template <DType kGrad, bool kWrite16, DType kParam16>
void update_range(const AdamWBuffers& b, int64_t begin, int64_t end, const AdamWConstants& c) {
  float* param = b.param;
  float* m = b.m;
  float* v = b.v;
  for (int64_t i = begin; i < end; ++i) {
    detail::adamw_update_element(param[i], m[i], v[i],
                                 float(load_as_double(b.grad, kGrad, size_t(i))), c);
    // double(p) is exact, so the store rounds fp32 -> param16 dtype once (nearest even).
    if constexpr (kWrite16) store_from_double(b.param16, kParam16, size_t(i), double(param[i]));
  }
}

template <DType kGrad>
void scalar_range_grad(const AdamWBuffers& b, DType param16_dtype, int64_t begin, int64_t end,
                       const AdamWConstants& c) {
  if (b.param16 == nullptr) return update_range<kGrad, false, DType::kF32>(b, begin, end, c);
  switch (param16_dtype) {
    case DType::kBF16: return update_range<kGrad, true, DType::kBF16>(b, begin, end, c);
    case DType::kF16: return update_range<kGrad, true, DType::kF16>(b, begin, end, c);
    case DType::kF32: return update_range<kGrad, true, DType::kF32>(b, begin, end, c);
    case DType::kF64: return update_range<kGrad, true, DType::kF64>(b, begin, end, c);
  }
}

void scalar_range(const AdamWBuffers& b, DType grad_dtype, DType param16_dtype, int64_t begin,
                  int64_t end, const AdamWConstants& c) {
  switch (grad_dtype) {
    case DType::kF32: return scalar_range_grad<DType::kF32>(b, param16_dtype, begin, end, c);
    case DType::kBF16: return scalar_range_grad<DType::kBF16>(b, param16_dtype, begin, end, c);
    case DType::kF16: return scalar_range_grad<DType::kF16>(b, param16_dtype, begin, end, c);
    case DType::kF64: return scalar_range_grad<DType::kF64>(b, param16_dtype, begin, end, c);
  }
}

// One tile on the chosen path (simd is never kAuto here).
void tile_range(CpuSimd simd, const AdamWBuffers& b, DType grad_dtype, DType param16_dtype,
                int64_t begin, int64_t end, const AdamWConstants& c) {
  switch (simd) {
    case CpuSimd::kAvx512:
    case CpuSimd::kAvx512Bf16:
      return detail::adamw_range_avx512(b, grad_dtype, param16_dtype, begin, end, c,
                                        simd == CpuSimd::kAvx512Bf16);
    case CpuSimd::kAvx2:
      return detail::adamw_range_avx2(b, grad_dtype, param16_dtype, begin, end, c);
    case CpuSimd::kAuto:
    case CpuSimd::kScalar: break;
  }
  scalar_range(b, grad_dtype, param16_dtype, begin, end, c);
}

bool valid_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
         dtype == DType::kF64;
}

// What cpuid (and the OS's saved-state flags, which __builtin_cpu_supports also checks) report.
struct CpuFeatures {
  bool avx2_f16c = false;
  bool avx512 = false;
  bool avx512_bf16 = false;
};

CpuFeatures detect_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // F16C (CPUID leaf 1, ECX bit 29) and AVX512_BF16 (leaf 7 sub-leaf 1, EAX bit 5) are read
  // directly: not every compiler's __builtin_cpu_supports knows their names. The OS state
  // checks are those of avx2 / avx512f.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  f.avx2_f16c = __builtin_cpu_supports("avx2") && f16c;
  f.avx512 = f.avx2_f16c && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
  f.avx512_bf16 = f.avx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 &&
                  (eax & (1u << 5)) != 0;
#endif
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect_features();
  return f;
}

}  // namespace

CpuSimd best_cpu_simd() {
  const CpuFeatures& f = features();
  if (f.avx512_bf16) return CpuSimd::kAvx512Bf16;
  if (f.avx512) return CpuSimd::kAvx512;
  if (f.avx2_f16c) return CpuSimd::kAvx2;
  return CpuSimd::kScalar;
}

bool cpu_simd_supported(CpuSimd simd) {
  const CpuFeatures& f = features();
  switch (simd) {
    case CpuSimd::kAuto:
    case CpuSimd::kScalar: return true;
    case CpuSimd::kAvx2: return f.avx2_f16c;
    case CpuSimd::kAvx512: return f.avx512;
    case CpuSimd::kAvx512Bf16: return f.avx512_bf16;
  }
  return false;
}

const char* cpu_simd_name(CpuSimd simd) {
  switch (simd) {
    case CpuSimd::kAuto: return "auto";
    case CpuSimd::kScalar: return "scalar";
    case CpuSimd::kAvx2: return "avx2";
    case CpuSimd::kAvx512: return "avx512";
    case CpuSimd::kAvx512Bf16: return "avx512-bf16";
  }
  return "unknown";
}

void adamw_step_cpu(CpuSimd simd, float* param, float* m, float* v, const void* grad,
                    DType grad_dtype, int64_t n, const AdamWStep& hp, void* param16,
                    DType param16_dtype) {
  ZT_CHECK(n >= 0, "adamw_step_cpu: element count must be >= 0, got ", n);
  ZT_CHECK(hp.step >= 1, "adamw_step_cpu: step is 1-based, got ", hp.step);
  ZT_CHECK(cpu_simd_supported(simd), "adamw_step_cpu: this CPU cannot run the ",
           cpu_simd_name(simd), " path");
  ZT_CHECK(valid_dtype(grad_dtype), "adamw_step_cpu: unknown gradient dtype ", int(grad_dtype));
  ZT_CHECK(param16 == nullptr || valid_dtype(param16_dtype),
           "adamw_step_cpu: unknown param16 dtype ", int(param16_dtype));
  if (n == 0) return;
  ZT_CHECK(param != nullptr && m != nullptr && v != nullptr && grad != nullptr,
           "adamw_step_cpu: null buffer for ", n, " elements");
  const AdamWBuffers b{param, m, v, grad, param16};
  const AdamWConstants c = adamw_constants(hp);
  if (simd == CpuSimd::kAuto) simd = best_cpu_simd();
  if (!detail::simd_handles(grad_dtype, param16 != nullptr, param16_dtype)) simd = CpuSimd::kScalar;
  const int64_t tiles = (n + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (tiles > 1)
  for (int64_t k = 0; k < tiles; ++k) {
    tile_range(simd, b, grad_dtype, param16_dtype, k * kTile, std::min(n, (k + 1) * kTile), c);
  }
}

void adamw_step_cpu(float* param, float* m, float* v, const void* grad, DType grad_dtype,
                    int64_t n, const AdamWStep& hp, void* param16, DType param16_dtype) {
  adamw_step_cpu(CpuSimd::kAuto, param, m, v, grad, grad_dtype, n, hp, param16, param16_dtype);
}

}  // namespace zt::optim
