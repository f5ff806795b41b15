// Linear layer y = x @ w^T + b (weights stored [out, in] as in Hugging Face), built on gemm.
#include <algorithm>
#include <cstdint>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

// Columns per work unit of the bias-gradient reduction: 64 floats are four cache lines, enough
// for a vector loop, and small enough to split GPT-J widths over the threads.
constexpr int64_t kBiasColumnChunk = 64;

}  // namespace

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out) {
  ZT_CHECK(n >= 0 && in >= 0 && out >= 0, "linear_forward: negative size n=", n, " in=", in,
           " out=", out);
  if (n == 0 || out == 0) return;
  T beta = T(0);
  if (b != nullptr) {
    // y[N, out] starts as the broadcast bias; gemm then adds x @ w^T (like torch.addmm).
#pragma omp parallel for schedule(static) if (n * out >= (int64_t(1) << 16))
    for (int64_t i = 0; i < n; ++i) std::copy(b, b + out, y + i * out);
    beta = T(1);
  }
  // y[N, out] (+)= x[N, in] @ w[out, in]^T
  gemm<T>(false, true, n, out, in, T(1), x, in, w, in, beta, y, out);
}

template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int64_t n,
                     int64_t in, int64_t out, bool accumulate_dx) {
  ZT_CHECK(n >= 0 && in >= 0 && out >= 0, "linear_backward: negative size n=", n, " in=", in,
           " out=", out);
  // dx[N, in] (+)= dy[N, out] @ w[out, in]
  if (dx != nullptr) {
    gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, accumulate_dx ? T(1) : T(0), dx, in);
  }
  // dw[out, in] += dy[N, out]^T @ x[N, in]
  gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
  // db[out] += sum over rows of dy. Each thread owns a range of columns and walks the rows in
  // order, so every db element is summed in the same order whatever the thread count.
  if (db != nullptr && out > 0) {
    const int64_t chunks = (out + kBiasColumnChunk - 1) / kBiasColumnChunk;
#pragma omp parallel for schedule(static) if (n * out >= (int64_t(1) << 16))
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t j0 = c * kBiasColumnChunk;
      const int64_t cols = std::min(kBiasColumnChunk, out - j0);
      T sum[kBiasColumnChunk] = {};
      for (int64_t i = 0; i < n; ++i) {
        const T* row = dy + i * out + j0;
        for (int64_t j = 0; j < cols; ++j) sum[j] += row[j];
      }
      for (int64_t j = 0; j < cols; ++j) db[j0 + j] += sum[j];
    }
  }
}

template void linear_forward<float>(const float*, const float*, const float*, float*, int64_t,
                                    int64_t, int64_t);
template void linear_forward<double>(const double*, const double*, const double*, double*, int64_t,
                                     int64_t, int64_t);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*,
                                     float*, int64_t, int64_t, int64_t, bool);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*,
                                      double*, int64_t, int64_t, int64_t, bool);

}  // namespace zt::model::cpu
