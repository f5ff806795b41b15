// gelu_new (the tanh approximation GPT-J uses), elementwise forward and exact derivative.
#include <cmath>
#include <cstdint>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kCubic = 0.044715;
constexpr int64_t kParallelMinWork = int64_t(1) << 14;

}  // namespace

template <class T>
void gelu_forward(const T* x, T* y, int64_t n) {
  ZT_CHECK(n >= 0, "gelu_forward: negative size ", n);
  const T c = T(kSqrt2OverPi);
  const T a = T(kCubic);
  // y = 0.5 x (1 + tanh(c (x + a x^3)))
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + std::tanh(c * (v + a * (v * v * v))));
  }
}

template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t n) {
  ZT_CHECK(n >= 0, "gelu_backward: negative size ", n);
  const T c = T(kSqrt2OverPi);
  const T a = T(kCubic);
  // With u = c (x + a x^3), th = tanh(u):
  //   gelu'(x) = 0.5 (1 + th) + 0.5 x (1 - th^2) c (1 + 3 a x^2).
#pragma omp parallel for schedule(static) if (n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T th = std::tanh(c * (v + a * (v * v * v)));
    const T grad =
        T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * c * (T(1) + T(3) * a * v * v);
    dx[i] = dy[i] * grad;
  }
}

template void gelu_forward<float>(const float*, float*, int64_t);
template void gelu_forward<double>(const double*, double*, int64_t);
template void gelu_backward<float>(const float*, const float*, float*, int64_t);
template void gelu_backward<double>(const double*, const double*, double*, int64_t);

}  // namespace zt::model::cpu
