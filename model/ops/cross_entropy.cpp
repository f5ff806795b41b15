// Cross-entropy over logits [N, V] with an ignore index: summed loss and its logits gradient.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/ops_cpu.h"
#include "runtime/error.h"

namespace zt::model::cpu {
namespace {

constexpr int64_t kParallelMinWork = int64_t(1) << 14;

void check_targets(const int32_t* targets, int64_t n, int64_t v, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    ZT_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < v), what, ": target ",
             targets[i], " at position ", i, " is neither ", kIgnoreIndex, " nor in [0, ", v, ")");
  }
}

// max and sum_j exp(x_j - max) of one row of V logits (in T, sequential: fixed order).
template <class T>
void row_softmax_stats(const T* x, int64_t v, T* max_out, T* sum_out) {
  T m = -INFINITY;
  for (int64_t j = 0; j < v; ++j) m = std::max(m, x[j]);
  T s = T(0);
  for (int64_t j = 0; j < v; ++j) s += std::exp(x[j] - m);
  *max_out = m;
  *sum_out = s;
}

}  // namespace

template <class T>
double cross_entropy_forward(const T* logits, const int32_t* targets, int64_t n, int64_t v,
                             int64_t* count) {
  ZT_CHECK(n >= 0 && v > 0, "cross_entropy_forward: bad size n=", n, " v=", v);
  check_targets(targets, n, v, "cross_entropy_forward");
  // loss_i = logsumexp(x_i) - x_i[target_i] = log(sum_j exp(x_ij - max_i)) - (x_i[t] - max_i).
  // Per-row losses land in a buffer and are summed serially afterwards, so the total does not
  // depend on the thread count.
  std::vector<double> row_loss(size_t(n), 0.0);
#pragma omp parallel for schedule(static) if (n * v >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] == kIgnoreIndex) continue;
    const T* x = logits + i * v;
    T m, s;
    row_softmax_stats(x, v, &m, &s);
    row_loss[size_t(i)] = double(std::log(s) - (x[targets[i]] - m));
  }
  double total = 0.0;
  int64_t counted = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] == kIgnoreIndex) continue;
    total += row_loss[size_t(i)];
    ++counted;
  }
  if (count != nullptr) *count = counted;
  return total;
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, T* dlogits, int64_t n,
                            int64_t v, double dloss) {
  ZT_CHECK(n >= 0 && v > 0, "cross_entropy_backward: bad size n=", n, " v=", v);
  check_targets(targets, n, v, "cross_entropy_backward");
  const T scale = T(dloss);
  // dlogits[i, :] = dloss * (softmax(x_i) - onehot(target_i)); 0 for ignored rows. dlogits may
  // alias logits: the row's max and sum are taken first, then each element is read before it
  // is written at the same index.
#pragma omp parallel for schedule(static) if (n * v >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    T* d = dlogits + i * v;
    if (targets[i] == kIgnoreIndex) {
      std::fill(d, d + v, T(0));
      continue;
    }
    const T* x = logits + i * v;
    T m, s;
    row_softmax_stats(x, v, &m, &s);
    const int32_t target = targets[i];
    const T x_target = x[target];  // read before the row is overwritten (aliasing)
    for (int64_t j = 0; j < v; ++j) d[j] = scale * (std::exp(x[j] - m) / s);
    d[target] = scale * (std::exp(x_target - m) / s - T(1));
  }
}

template double cross_entropy_forward<float>(const float*, const int32_t*, int64_t, int64_t,
                                             int64_t*);
template double cross_entropy_forward<double>(const double*, const int32_t*, int64_t, int64_t,
                                              int64_t*);
template void cross_entropy_backward<float>(const float*, const int32_t*, float*, int64_t, int64_t,
                                            double);
template void cross_entropy_backward<double>(const double*, const int32_t*, double*, int64_t,
                                             int64_t, double);

}  // namespace zt::model::cpu
