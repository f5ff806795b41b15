// Fused cross-entropy on CUDA: one block per row computes the row's max and sum of exponentials in
// one online pass, the fp32 loss, and (when asked) overwrites the logits with their gradient.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "model/cuda/kernels_common.cuh"
#include "model/ops_cpu.h"
#include "model/ops_cuda.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using detail::from_float;
using detail::kPack;
using detail::kWarp;
using detail::Pack8;
using detail::to_float;

// 512 threads: a 50400-wide row is 6300 packs of 8, about 12 per thread.
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarp;

// Running (max, sum of exp(x - max)) of a set of logits.
struct SoftmaxStats {
  float max;
  float sum;
};

__device__ __forceinline__ void add_logit(SoftmaxStats& s, float x) {
  if (x > s.max) {
    s.sum = s.sum * expf(s.max - x) + 1.0f;  // expf(-inf) = 0 for the first finite logit
    s.max = x;
  } else if (s.max != -INFINITY) {
    s.sum += expf(x - s.max);
  }
}

__device__ __forceinline__ SoftmaxStats combine(SoftmaxStats a, SoftmaxStats b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

// Block-wide combine in a fixed tree; every thread gets the block's stats. Contains
// __syncthreads: all threads must call it.
__device__ SoftmaxStats block_combine(SoftmaxStats s, SoftmaxStats* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const SoftmaxStats other{__shfl_down_sync(0xffffffffu, s.max, offset),
                             __shfl_down_sync(0xffffffffu, s.sum, offset)};
    s = combine(s, other);
  }
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kWarps ? scratch[lane] : SoftmaxStats{-INFINITY, 0.0f};
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const SoftmaxStats other{__shfl_down_sync(0xffffffffu, s.max, offset),
                               __shfl_down_sync(0xffffffffu, s.sum, offset)};
      s = combine(s, other);
    }
    if (lane == 0) scratch[kWarps] = s;
  }
  __syncthreads();
  return scratch[kWarps];
}

// logits[N, V] (dt), targets[N], losses[N] fp32; one block per row. kVec: V % 8 == 0 and 16-byte
// aligned logits, so every row is read and written in 16-byte packs.
template <class T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(T* logits, const int32_t* __restrict__ targets, float* __restrict__ losses,
                         int64_t v, float dloss) {
  __shared__ SoftmaxStats scratch[kWarps + 1];
  const int64_t row = blockIdx.x;
  T* x = logits + row * v;
  const int32_t target = targets[row];
  const bool ignored = target == model::cpu::kIgnoreIndex;
  const bool valid = target >= 0 && int64_t(target) < v;
  if (ignored || !valid) {
    // Ignored rows: loss 0 and a zero gradient. A target outside [0, V) (the caller's to prevent)
    // gives a NaN loss and gradient, so the error shows instead of a read outside the row.
    const float fill = ignored ? 0.0f : NAN;
    if (threadIdx.x == 0) losses[row] = fill;
    if (dloss != 0.0f) {
      for (int64_t j = threadIdx.x; j < v; j += kThreads) x[j] = from_float<T>(fill);
    }
    return;  // the whole block takes this branch
  }
  // Read before any thread can overwrite the row (the writes follow block_combine's barriers).
  const float x_target = to_float(x[target]);

  SoftmaxStats s{-INFINITY, 0.0f};
  if constexpr (kVec) {
    for (int64_t j = int64_t(threadIdx.x) * kPack; j < v; j += int64_t(kThreads) * kPack) {
      const Pack8<T> p = detail::load_pack(x + j);
#pragma unroll
      for (int k = 0; k < kPack; ++k) add_logit(s, to_float(p.v[k]));
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kThreads) add_logit(s, to_float(x[j]));
  }
  s = block_combine(s, scratch);
  const float m = s.max;
  const float sum = s.sum;
  // loss = logsumexp(x) - x[target] = log(sum) - (x[target] - max), as the CPU twin.
  if (threadIdx.x == 0) losses[row] = logf(sum) - (x_target - m);
  if (dloss == 0.0f) return;
  // dlogits = dloss (softmax - onehot); each element is read, then written, by one thread.
  if constexpr (kVec) {
    for (int64_t j = int64_t(threadIdx.x) * kPack; j < v; j += int64_t(kThreads) * kPack) {
      Pack8<T> p = detail::load_pack(x + j);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float prob = expf(to_float(p.v[k]) - m) / sum;
        p.v[k] = from_float<T>(j + k == target ? dloss * (prob - 1.0f) : dloss * prob);
      }
      detail::store_pack(x + j, p);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kThreads) {
      const float prob = expf(to_float(x[j]) - m) / sum;
      x[j] = from_float<T>(j == target ? dloss * (prob - 1.0f) : dloss * prob);
    }
  }
}

}  // namespace

void cross_entropy(const CudaContext& ctx, void* logits, const int32_t* targets, float* losses,
                   int64_t n, int64_t v, float dloss, DType dt) {
  ZT_CHECK(n >= 0 && v > 0, "cross_entropy: bad size n=", n, " v=", v);
  ZT_CHECK(n <= INT32_MAX, "cross_entropy: ", n, " rows is more than one launch takes");
  if (n == 0) return;
  const bool vec = v % kPack == 0 && detail::is_aligned(logits, 16);
  detail::dispatch_16bit(dt, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    if (vec) {
      cross_entropy_kernel<T, true><<<unsigned(n), kThreads, 0, ctx.stream()>>>(
          static_cast<T*>(logits), targets, losses, v, dloss);
    } else {
      cross_entropy_kernel<T, false><<<unsigned(n), kThreads, 0, ctx.stream()>>>(
          static_cast<T*>(logits), targets, losses, v, dloss);
    }
  });
  detail::check_launch();
}

}  // namespace zt::model::cuda
