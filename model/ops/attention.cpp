// Causal self-attention over [B, T, H, Dh] tensors: softmax(q k^T / sqrt(Dh) + mask) v, forward
// and backward, with the probabilities saved for backward.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

constexpr int64_t kParallelMinWork = int64_t(1) << 14;

// Dot product with kLanes independent partial sums combined in a fixed order: GCC vectorises it
// without -ffast-math (the order is written out, not reassociated) and it is deterministic.
constexpr int kLanes = 8;
template <class T>
T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += a[i + l] * b[i + l];
  }
  for (int64_t l = 0; i < n; ++i, ++l) part[l] += a[i] * b[i];
  T sum = T(0);
  for (int l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

// y[0:n] += alpha * x[0:n]
template <class T>
void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t batch,
                       int64_t seq, int64_t heads, int64_t head_dim) {
  ZT_CHECK(batch >= 0 && seq >= 0 && heads >= 0 && head_dim > 0,
           "attention_forward: bad size batch=", batch, " seq=", seq, " heads=", heads,
           " head_dim=", head_dim);
  const T scale = std::sqrt(T(head_dim));
  const int64_t stride = heads * head_dim;  // between consecutive tokens of one head
  const int64_t rows = batch * heads * seq;
  // One work item = one query row (b, h, t): it writes probs[b, h, t, :] and out[b, t, h, :]
  // and nothing else, so rows are independent.
#pragma omp parallel for schedule(static) if (rows * seq * head_dim >= kParallelMinWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t t = row % seq;
    const int64_t bh = row / seq;
    const int64_t b = bh / heads;
    const int64_t h = bh % heads;
    const int64_t base = b * seq * stride + h * head_dim;  // token 0 of (b, h)
    const T* qt = q + base + t * stride;
    T* p = probs + row * seq;  // [T] row of probs[b, h, t, :]
    // scores[j] = q_t . k_j / sqrt(Dh) for j <= t (the causal mask drops j > t)
    T max_score = -INFINITY;
    for (int64_t j = 0; j <= t; ++j) {
      p[j] = dot(qt, k + base + j * stride, head_dim) / scale;
      max_score = std::max(max_score, p[j]);
    }
    T sum = T(0);
    for (int64_t j = 0; j <= t; ++j) {
      p[j] = std::exp(p[j] - max_score);
      sum += p[j];
    }
    for (int64_t j = 0; j <= t; ++j) p[j] /= sum;
    for (int64_t j = t + 1; j < seq; ++j) p[j] = T(0);
    // out_t = sum_j p[j] v_j
    T* ot = out + base + t * stride;
    std::fill(ot, ot + head_dim, T(0));
    for (int64_t j = 0; j <= t; ++j) axpy(p[j], v + base + j * stride, ot, head_dim);
  }
}

template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  ZT_CHECK(batch >= 0 && seq >= 0 && heads >= 0 && head_dim > 0,
           "attention_backward: bad size batch=", batch, " seq=", seq, " heads=", heads,
           " head_dim=", head_dim);
  const T scale = std::sqrt(T(head_dim));
  const int64_t stride = heads * head_dim;
  const int64_t pairs = batch * heads;
  // One work item = one (b, h): dk and dv rows sum over all queries t >= j, so the item walks
  // the queries in order and owns every dq, dk, dv row of its head.
  //   dv_j += P[t, j] dout_t
  //   dP[t, j] = dout_t . v_j
  //   dS[t, j] = P[t, j] (dP[t, j] - sum_j' dP[t, j'] P[t, j'])
  //   dq_t = sum_j dS[t, j] k_j / sqrt(Dh),  dk_j += dS[t, j] q_t / sqrt(Dh)
#pragma omp parallel if (pairs * seq * seq * head_dim >= kParallelMinWork)
  {
    std::vector<T> dp(static_cast<size_t>(seq));  // dP[t, 0..t] of the current query row
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / heads;
      const int64_t h = bh % heads;
      const int64_t base = b * seq * stride + h * head_dim;
      for (int64_t t = 0; t < seq; ++t) {
        std::fill(dk + base + t * stride, dk + base + t * stride + head_dim, T(0));
        std::fill(dv + base + t * stride, dv + base + t * stride + head_dim, T(0));
      }
      for (int64_t t = 0; t < seq; ++t) {
        const T* p = probs + (bh * seq + t) * seq;
        const T* dout_t = dout + base + t * stride;
        const T* qt = q + base + t * stride;
        T row_sum = T(0);  // sum_j dP[t, j] P[t, j]
        for (int64_t j = 0; j <= t; ++j) {
          dp[size_t(j)] = dot(dout_t, v + base + j * stride, head_dim);
          row_sum += dp[size_t(j)] * p[j];
        }
        T* dqt = dq + base + t * stride;
        std::fill(dqt, dqt + head_dim, T(0));
        for (int64_t j = 0; j <= t; ++j) {
          const T gj = p[j] * (dp[size_t(j)] - row_sum) / scale;  // dS[t, j] / sqrt(Dh)
          axpy(p[j], dout_t, dv + base + j * stride, head_dim);
          axpy(gj, k + base + j * stride, dqt, head_dim);
          axpy(gj, qt, dk + base + j * stride, head_dim);
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*, float*, float*,
                                       int64_t, int64_t, int64_t, int64_t);
template void attention_forward<double>(const double*, const double*, const double*, double*,
                                        double*, int64_t, int64_t, int64_t, int64_t);
template void attention_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*, int64_t, int64_t,
                                        int64_t, int64_t);
template void attention_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int64_t, int64_t,
                                         int64_t, int64_t);

}  // namespace zt::model::cpu
