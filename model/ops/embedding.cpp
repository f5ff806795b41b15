// Token embedding lookup (wte) and its gradient scatter-add.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

// Columns per work unit of the backward scatter-add (four cache lines of floats).
constexpr int64_t kColumnChunk = 64;

void check_ids(const int32_t* ids, int64_t n, int64_t vocab, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    ZT_CHECK(ids[i] >= 0 && ids[i] < vocab, what, ": token id ", ids[i], " at position ", i,
             " is outside the vocabulary [0, ", vocab, ")");
  }
}

}  // namespace

template <class T>
void embedding_forward(const int32_t* ids, const T* wte, T* out, int64_t n, int64_t d,
                       int64_t vocab) {
  ZT_CHECK(n >= 0 && d >= 0 && vocab >= 0, "embedding_forward: negative size n=", n, " d=", d,
           " vocab=", vocab);
  // All ids are checked before anything is written.
  check_ids(ids, n, vocab, "embedding_forward");
  // out[N, D] = wte[V, D][ids]
#pragma omp parallel for schedule(static) if (n * d >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * d, wte + int64_t(ids[i]) * d, size_t(d) * sizeof(T));
  }
}

template <class T>
void embedding_backward(const int32_t* ids, const T* dout, T* dwte, int64_t n, int64_t d,
                        int64_t vocab) {
  ZT_CHECK(n >= 0 && d >= 0 && vocab >= 0, "embedding_backward: negative size n=", n, " d=", d,
           " vocab=", vocab);
  check_ids(ids, n, vocab, "embedding_backward");
  // dwte[ids[i], :] += dout[i, :]. A repeated id adds several rows into one: each thread owns
  // a range of columns and walks the tokens in order, so the sum order is fixed and no two
  // threads touch the same element.
  const int64_t chunks = (d + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static) if (n * d >= (int64_t(1) << 16))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t j0 = c * kColumnChunk;
    const int64_t cols = std::min(kColumnChunk, d - j0);
    for (int64_t i = 0; i < n; ++i) {
      T* dst = dwte + int64_t(ids[i]) * d + j0;
      const T* src = dout + i * d + j0;
      for (int64_t j = 0; j < cols; ++j) dst[j] += src[j];
    }
  }
}

template void embedding_forward<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                       int64_t);
template void embedding_forward<double>(const int32_t*, const double*, double*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(const int32_t*, const double*, double*, int64_t, int64_t,
                                         int64_t);

}  // namespace zt::model::cpu
