// AdamW on the CPU: the plain fp32 reference of optim/adamw.h's update (OpenMP over the range).
#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

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

// Elements per OpenMP work item. The range is cut into fixed blocks rather than one slice per
// thread so that each element goes through the same code path (vectorised body or scalar tail of
// the inner loop) whatever the thread count: results then stay bitwise identical across thread
// counts even in a build that lets the compiler contract a*b+c differently in the two paths.
constexpr int64_t kBlock = 4096;

// The buffers of one call (param16 is nullptr when no 16-bit copy is written).
struct Buffers {
  float* param;
  float* m;
  float* v;
  const void* grad;
  void* param16;
};

// The update of elements [begin, end). The dtypes are template constants, so the dtype switches
// of load_as_double / store_from_double fold away and the loop body has no branch on them.
// sqrt(v_hat) is computed as sqrt(v) / sqrt(1 - beta2^step), the order torch uses.
// Note: GCC vectorises this loop only with -fno-math-errno (std::sqrt may set errno otherwise);
// that flag changes no result.
template <DType kGrad, bool kWrite16, DType kParam16>
void update_range(const Buffers& b, int64_t begin, int64_t end, const AdamWConstants& c) {
  float* param = b.param;
  float* m = b.m;
  float* v = b.v;
  for (int64_t i = begin; i < end; ++i) {
    const float g = float(load_as_double(b.grad, kGrad, size_t(i))) * c.grad_scale;
    const float m_i = c.beta1 * m[i] + c.one_minus_beta1 * g;
    const float v_i = c.beta2 * v[i] + c.one_minus_beta2 * g * g;
    const float denom = std::sqrt(v_i) / c.bias2_sqrt + c.eps;
    const float p = param[i] * c.decay - c.step_size * (m_i / denom);
    m[i] = m_i;
    v[i] = v_i;
    param[i] = p;
    // double(p) is exact, so the store rounds fp32 -> param16 dtype once (nearest even).
    if constexpr (kWrite16) store_from_double(b.param16, kParam16, size_t(i), double(p));
  }
}

template <DType kGrad, bool kWrite16, DType kParam16>
void update_all(const Buffers& b, int64_t n, const AdamWConstants& c) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t k = 0; k < blocks; ++k) {
    update_range<kGrad, kWrite16, kParam16>(b, k * kBlock, std::min(n, (k + 1) * kBlock), c);
  }
}

template <DType kGrad>
void dispatch_param16(const Buffers& b, DType param16_dtype, int64_t n, const AdamWConstants& c) {
  if (b.param16 == nullptr) return update_all<kGrad, false, DType::kF32>(b, n, c);
  switch (param16_dtype) {
    case DType::kBF16: return update_all<kGrad, true, DType::kBF16>(b, n, c);
    case DType::kF16: return update_all<kGrad, true, DType::kF16>(b, n, c);
    case DType::kF32: return update_all<kGrad, true, DType::kF32>(b, n, c);
    case DType::kF64: return update_all<kGrad, true, DType::kF64>(b, n, c);
  }
  ZT_FAIL("adamw_step_cpu: unknown param16 dtype ", int(param16_dtype));
}

}  // namespace

void adamw_step_cpu(float* param, float* m, float* v, const void* grad, DType grad_dtype,
                    int64_t n, const AdamWStep& hp, void* param16, DType param16_dtype) {
  ZT_CHECK(n >= 0, "adamw_step_cpu: element count must be >= 0, got ", n);
  ZT_CHECK(hp.step >= 1, "adamw_step_cpu: step is 1-based, got ", hp.step);
  if (n == 0) return;
  ZT_CHECK(param != nullptr && m != nullptr && v != nullptr && grad != nullptr,
           "adamw_step_cpu: null buffer for ", n, " elements");
  const Buffers b{param, m, v, grad, param16};
  const AdamWConstants c = adamw_constants(hp);
  switch (grad_dtype) {
    case DType::kF32: return dispatch_param16<DType::kF32>(b, param16_dtype, n, c);
    case DType::kBF16: return dispatch_param16<DType::kBF16>(b, param16_dtype, n, c);
    case DType::kF16: return dispatch_param16<DType::kF16>(b, param16_dtype, n, c);
    case DType::kF64: return dispatch_param16<DType::kF64>(b, param16_dtype, n, c);
  }
  ZT_FAIL("adamw_step_cpu: unknown gradient dtype ", int(grad_dtype));
}

}  // namespace zt::optim
