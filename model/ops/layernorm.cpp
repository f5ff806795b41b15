// LayerNorm over the last dim (biased variance, eps inside the square root), forward and backward.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

// Columns per work unit of the dw/db reduction over rows (four cache lines of floats).
constexpr int64_t kColumnChunk = 64;
constexpr int64_t kParallelMinWork = int64_t(1) << 14;

}  // namespace

template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t n,
                       int64_t d, double eps) {
  ZT_CHECK(n >= 0 && d > 0, "layernorm_forward: bad size n=", n, " d=", d);
  const T eps_t = T(eps);
  // x, y: [N, D]; w, b: [D]; mean, rstd: [N]. Two passes (mean, then centred squares) keep the
  // variance accurate when |mean| >> std.
#pragma omp parallel for schedule(static) if (n * d >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* xr = x + i * d;
    T sum = T(0);
    for (int64_t j = 0; j < d; ++j) sum += xr[j];
    const T mu = sum / T(d);
    T sq = T(0);
    for (int64_t j = 0; j < d; ++j) {
      const T c = xr[j] - mu;
      sq += c * c;
    }
    const T r = T(1) / std::sqrt(sq / T(d) + eps_t);
    mean[i] = mu;
    rstd[i] = r;
    T* yr = y + i * d;
    for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] - mu) * r * w[j] + b[j];
  }
}

template <class T>
void layernorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                        T* dw, T* db, int64_t n, int64_t d) {
  ZT_CHECK(n >= 0 && d > 0, "layernorm_backward: bad size n=", n, " d=", d);
  // dx[N, D] += rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)), g = dy * w,
  // xhat = (x - mean) * rstd. Rows are independent: one thread per row.
#pragma omp parallel for schedule(static) if (n * d >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const T* xr = x + i * d;
    const T* dyr = dy + i * d;
    const T mu = mean[i];
    const T r = rstd[i];
    T sum_g = T(0);
    T sum_g_xhat = T(0);
    for (int64_t j = 0; j < d; ++j) {
      const T g = dyr[j] * w[j];
      sum_g += g;
      sum_g_xhat += g * ((xr[j] - mu) * r);
    }
    const T mean_g = sum_g / T(d);
    const T mean_g_xhat = sum_g_xhat / T(d);
    T* dxr = dx + i * d;
    for (int64_t j = 0; j < d; ++j) {
      const T xhat = (xr[j] - mu) * r;
      dxr[j] += r * (dyr[j] * w[j] - mean_g - xhat * mean_g_xhat);
    }
  }
  // dw[D] += sum_n dy * xhat, db[D] += sum_n dy. Each thread owns a range of columns and walks
  // the rows in order, so the sums do not depend on the thread count.
  const int64_t chunks = (d + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static) if (n * d >= kParallelMinWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t j0 = c * kColumnChunk;
    const int64_t cols = std::min(kColumnChunk, d - j0);
    T sum_w[kColumnChunk] = {};
    T sum_b[kColumnChunk] = {};
    for (int64_t i = 0; i < n; ++i) {
      const T* xr = x + i * d + j0;
      const T* dyr = dy + i * d + j0;
      const T mu = mean[i];
      const T r = rstd[i];
      for (int64_t j = 0; j < cols; ++j) {
        sum_w[j] += dyr[j] * ((xr[j] - mu) * r);
        sum_b[j] += dyr[j];
      }
    }
    for (int64_t j = 0; j < cols; ++j) {
      dw[j0 + j] += sum_w[j];
      db[j0 + j] += sum_b[j];
    }
  }
}

template void layernorm_forward<float>(const float*, const float*, const float*, float*, float*,
                                       float*, int64_t, int64_t, double);
template void layernorm_forward<double>(const double*, const double*, const double*, double*,
                                        double*, double*, int64_t, int64_t, double);
template void layernorm_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*, int64_t, int64_t);
template void layernorm_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int64_t,
                                         int64_t);

}  // namespace zt::model::cpu
