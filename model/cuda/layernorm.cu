// LayerNorm over the last dim on CUDA: one warp per row with two-pass fp32 statistics (as the CPU
// twin), and a backward whose dw/db column sums are reduced in a fixed order (deterministic).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using detail::from_float;
using detail::kPack;
using detail::kWarp;
using detail::Pack8;
using detail::to_float;

constexpr int kRowsPerBlock = 8;  // one warp per row, 256 threads
constexpr int kThreads = kRowsPerBlock * kWarp;

// Calls f(j, value) for every element of one row of `d` values, lanes striding the row; with kVec
// (d % 8 == 0 and 16-byte aligned rows) each lane takes 8 consecutive values per 16-byte load.
template <bool kVec, class T, class F>
__device__ __forceinline__ void for_row(const T* row, int64_t d, int lane, F&& f) {
  if constexpr (kVec) {
    for (int64_t j = int64_t(lane) * kPack; j < d; j += kWarp * kPack) {
      const Pack8<T> p = detail::load_pack(row + j);
#pragma unroll
      for (int k = 0; k < kPack; ++k) f(j + k, to_float(p.v[k]));
    }
  } else {
    for (int64_t j = lane; j < d; j += kWarp) f(j, to_float(row[j]));
  }
}

// x, y: [N, D]; w, b: [D]; mean, rstd: [N] fp32.
template <class T, bool kVec>
__global__ void layernorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                         const T* __restrict__ b, T* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd,
                                         int64_t n, int64_t d, float eps) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;  // whole warps leave together; no block barriers below
  const T* xr = x + row * d;
  // Two passes over the row (the second from cache): mean, then centred squares, so the variance
  // stays accurate when |mean| >> std.
  float sum = 0.0f;
  for_row<kVec>(xr, d, lane, [&](int64_t, float v) { sum += v; });
  const float mu = detail::warp_sum(sum) / float(d);
  float sq = 0.0f;
  for_row<kVec>(xr, d, lane, [&](int64_t, float v) {
    const float c = v - mu;
    sq += c * c;
  });
  const float r = 1.0f / sqrtf(detail::warp_sum(sq) / float(d) + eps);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = r;
  }
  T* yr = y + row * d;
  if constexpr (kVec) {
    for (int64_t j = int64_t(lane) * kPack; j < d; j += kWarp * kPack) {
      const Pack8<T> xp = detail::load_pack(xr + j);
      const Pack8<T> wp = detail::load_pack(w + j);
      const Pack8<T> bp = detail::load_pack(b + j);
      Pack8<T> yp;
#pragma unroll
      for (int k = 0; k < kPack; ++k)
        yp.v[k] =
            from_float<T>((to_float(xp.v[k]) - mu) * r * to_float(wp.v[k]) + to_float(bp.v[k]));
      detail::store_pack(yr + j, yp);
    }
  } else {
    for (int64_t j = lane; j < d; j += kWarp)
      yr[j] = from_float<T>((to_float(xr[j]) - mu) * r * to_float(w[j]) + to_float(b[j]));
  }
}

// dx[N, D] += rstd (g - mean_j(g) - xhat mean_j(g xhat)), g = dy w, xhat = (x - mean) rstd.
template <class T, bool kVec>
__global__ void layernorm_backward_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                             const T* __restrict__ w,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ rstd, T* __restrict__ dx,
                                             int64_t n, int64_t d) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xr = x + row * d;
  const T* dyr = dy + row * d;
  T* dxr = dx + row * d;
  const float mu = mean[row];
  const float r = rstd[row];
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  if constexpr (kVec) {
    for (int64_t j = int64_t(lane) * kPack; j < d; j += kWarp * kPack) {
      const Pack8<T> xp = detail::load_pack(xr + j);
      const Pack8<T> dyp = detail::load_pack(dyr + j);
      const Pack8<T> wp = detail::load_pack(w + j);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float g = to_float(dyp.v[k]) * to_float(wp.v[k]);
        sum_g += g;
        sum_g_xhat += g * ((to_float(xp.v[k]) - mu) * r);
      }
    }
  } else {
    for (int64_t j = lane; j < d; j += kWarp) {
      const float g = to_float(dyr[j]) * to_float(w[j]);
      sum_g += g;
      sum_g_xhat += g * ((to_float(xr[j]) - mu) * r);
    }
  }
  const float mean_g = detail::warp_sum(sum_g) / float(d);
  const float mean_g_xhat = detail::warp_sum(sum_g_xhat) / float(d);
  if constexpr (kVec) {
    for (int64_t j = int64_t(lane) * kPack; j < d; j += kWarp * kPack) {
      const Pack8<T> xp = detail::load_pack(xr + j);
      const Pack8<T> dyp = detail::load_pack(dyr + j);
      const Pack8<T> wp = detail::load_pack(w + j);
      Pack8<T> dxp = detail::load_pack(dxr + j);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float xhat = (to_float(xp.v[k]) - mu) * r;
        const float g = to_float(dyp.v[k]) * to_float(wp.v[k]);
        dxp.v[k] = from_float<T>(to_float(dxp.v[k]) + r * (g - mean_g - xhat * mean_g_xhat));
      }
      detail::store_pack(dxr + j, dxp);
    }
  } else {
    for (int64_t j = lane; j < d; j += kWarp) {
      const float xhat = (to_float(xr[j]) - mu) * r;
      const float g = to_float(dyr[j]) * to_float(w[j]);
      dxr[j] = from_float<T>(to_float(dxr[j]) + r * (g - mean_g - xhat * mean_g_xhat));
    }
  }
}

// Rows of at most kHeldPacks x 256 values (GPT-J-6B's 4096), 16-byte aligned with D % 8 == 0: the
// forward with the row's packs held in registers after one read from memory, where the loop
// version above reads the row three times (twice from cache) with one 16-byte load in flight per
// lane. Lane l holds the packs at values (k * 32 + l) * 8, k < kHeldPacks: the order in which
// for_row visits them, so both versions sum in the same order and give the same bits. GPT-J-6B's
// rows on an H200: 0.044 ms against 0.056 (3.0 against 2.4 TB/s). The backward's dx kernel held
// dy and x the same way (166 registers, one block per SM) and ran slower, 0.197 against 0.177 ms
// for the whole backward, so it keeps its loop.
constexpr int kHeldPacks = 16;

// Makes the compiler treat the held packs as changed, so that each pass converts them to fp32
// again instead of keeping all 128 converted values live from the first pass (for bf16 it did:
// 162 registers, against 93 now).
template <class T>
__device__ __forceinline__ void keep_packed(Pack8<T> (&packs)[kHeldPacks]) {
#pragma unroll
  for (int k = 0; k < kHeldPacks; ++k) {
    uint32_t* w = reinterpret_cast<uint32_t*>(&packs[k]);
    asm volatile("" : "+r"(w[0]), "+r"(w[1]), "+r"(w[2]), "+r"(w[3]));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    layernorm_forward_held_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ b, T* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd, int64_t n,
                                  int64_t d, float eps) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= n) return;
  const T* xr = x + row * d;
  Pack8<T> xp[kHeldPacks];
#pragma unroll
  for (int k = 0; k < kHeldPacks; ++k) {
    const int64_t j = (int64_t(k) * kWarp + lane) * kPack;
    if (j < d) xp[k] = detail::load_pack(xr + j);
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kHeldPacks; ++k) {
    if ((int64_t(k) * kWarp + lane) * kPack >= d) break;
#pragma unroll
    for (int q = 0; q < kPack; ++q) sum += to_float(xp[k].v[q]);
  }
  const float mu = detail::warp_sum(sum) / float(d);
  keep_packed(xp);
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kHeldPacks; ++k) {
    if ((int64_t(k) * kWarp + lane) * kPack >= d) break;
#pragma unroll
    for (int q = 0; q < kPack; ++q) {
      const float c = to_float(xp[k].v[q]) - mu;
      sq += c * c;
    }
  }
  const float r = 1.0f / sqrtf(detail::warp_sum(sq) / float(d) + eps);
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = r;
  }
  keep_packed(xp);
  T* yr = y + row * d;
#pragma unroll
  for (int k = 0; k < kHeldPacks; ++k) {
    const int64_t j = (int64_t(k) * kWarp + lane) * kPack;
    if (j >= d) break;
    const Pack8<T> wp = detail::load_pack(w + j);
    const Pack8<T> bp = detail::load_pack(b + j);
    Pack8<T> yp;
#pragma unroll
    for (int q = 0; q < kPack; ++q)
      yp.v[q] = from_float<T>((to_float(xp[k].v[q]) - mu) * r * to_float(wp.v[q]) + to_float(bp.v[q]));
    detail::store_pack(yr + j, yp);
  }
}

// Per-chunk column sums of dy * xhat (for dw) and dy (for db): partial_w, partial_b [chunks, D].
template <class T>
__global__ void layernorm_backward_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                  const float* __restrict__ mean,
                                                  const float* __restrict__ rstd, int64_t n,
                                                  int64_t d, float* __restrict__ partial_w,
                                                  float* __restrict__ partial_b) {
  __shared__ float tile[detail::kColumnRowThreads][detail::kColumnTile + 1];
  const int64_t col = int64_t(blockIdx.x) * detail::kColumnTile + threadIdx.x;
  const int64_t row_begin = int64_t(blockIdx.y) * detail::kColumnSumRows;
  const int64_t row_end = std::min(n, row_begin + detail::kColumnSumRows);
  float sum_w = 0.0f, sum_b = 0.0f;
  if (col < d) {
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += detail::kColumnRowThreads) {
      const float g = to_float(dy[r * d + col]);
      sum_w += g * ((to_float(x[r * d + col]) - mean[r]) * rstd[r]);
      sum_b += g;
    }
  }
  detail::write_column_partial(sum_w, tile, partial_w, d);
  __syncthreads();  // the tile is reused
  detail::write_column_partial(sum_b, tile, partial_b, d);
}

bool rows_vectorisable(int64_t d, std::initializer_list<const void*> pointers) {
  if (d % kPack != 0) return false;
  for (const void* p : pointers)
    if (!detail::is_aligned(p, 16)) return false;
  return true;
}

}  // namespace

void layernorm_forward(const CudaContext& ctx, const void* x, const void* w, const void* b, void* y,
                       float* mean, float* rstd, int64_t n, int64_t d, double eps, DType dt) {
  ZT_CHECK(n >= 0 && d > 0, "layernorm_forward: bad size n=", n, " d=", d);
  if (n == 0) return;
  const bool vec = rows_vectorisable(d, {x, w, b, y});
  const unsigned blocks = unsigned((n + kRowsPerBlock - 1) / kRowsPerBlock);
  detail::dispatch_16bit(dt, "layernorm_forward", [&](auto tag) {
    using T = decltype(tag);
    auto* xt = static_cast<const T*>(x);
    auto* wt = static_cast<const T*>(w);
    auto* bt = static_cast<const T*>(b);
    auto* yt = static_cast<T*>(y);
    if (vec && d <= kHeldPacks * kWarp * kPack) {
      layernorm_forward_held_kernel<T>
          <<<blocks, kThreads, 0, ctx.stream()>>>(xt, wt, bt, yt, mean, rstd, n, d, float(eps));
    } else if (vec) {
      layernorm_forward_kernel<T, true>
          <<<blocks, kThreads, 0, ctx.stream()>>>(xt, wt, bt, yt, mean, rstd, n, d, float(eps));
    } else {
      layernorm_forward_kernel<T, false>
          <<<blocks, kThreads, 0, ctx.stream()>>>(xt, wt, bt, yt, mean, rstd, n, d, float(eps));
    }
  });
  detail::check_launch();
}

void layernorm_backward(const CudaContext& ctx, const void* dy, const void* x, const void* w,
                        const float* mean, const float* rstd, void* dx, void* dw, void* db,
                        int64_t n, int64_t d, DType dt) {
  ZT_CHECK(n >= 0 && d > 0, "layernorm_backward: bad size n=", n, " d=", d);
  if (n == 0) return;
  const int64_t chunks = detail::column_chunks(n);
  ZT_CHECK(chunks <= 65535, "layernorm_backward: ", n, " rows is more than the dw/db reduction ",
           "supports");
  const bool vec = rows_vectorisable(d, {dy, x, w, dx});
  const unsigned row_blocks = unsigned((n + kRowsPerBlock - 1) / kRowsPerBlock);
  // Scratch: partial_w and partial_b, [chunks, D] fp32 each.
  const size_t partial_bytes = detail::round_up(size_t(chunks * d) * sizeof(float), 256);
  detail::StreamScratch scratch(ctx.stream(), 2 * partial_bytes);
  float* partial_w = scratch.at<float>(0);
  float* partial_b = scratch.at<float>(partial_bytes);
  detail::dispatch_16bit(dt, "layernorm_backward", [&](auto tag) {
    using T = decltype(tag);
    auto* dyt = static_cast<const T*>(dy);
    auto* xt = static_cast<const T*>(x);
    auto* wt = static_cast<const T*>(w);
    auto* dxt = static_cast<T*>(dx);
    if (vec) {
      layernorm_backward_dx_kernel<T, true>
          <<<row_blocks, kThreads, 0, ctx.stream()>>>(dyt, xt, wt, mean, rstd, dxt, n, d);
    } else {
      layernorm_backward_dx_kernel<T, false>
          <<<row_blocks, kThreads, 0, ctx.stream()>>>(dyt, xt, wt, mean, rstd, dxt, n, d);
    }
    detail::check_launch();
    const dim3 block(detail::kColumnTile, detail::kColumnRowThreads);
    const dim3 grid(unsigned((d + detail::kColumnTile - 1) / detail::kColumnTile),
                    unsigned(chunks));
    layernorm_backward_partial_kernel<<<grid, block, 0, ctx.stream()>>>(dyt, xt, mean, rstd, n, d,
                                                                        partial_w, partial_b);
    detail::check_launch();
    constexpr int kSumThreads = 256;
    const unsigned sum_blocks = unsigned((d + kSumThreads - 1) / kSumThreads);
    detail::add_column_partials_kernel<<<sum_blocks, kSumThreads, 0, ctx.stream()>>>(
        partial_w, chunks, d, static_cast<T*>(dw));
    detail::check_launch();
    detail::add_column_partials_kernel<<<sum_blocks, kSumThreads, 0, ctx.stream()>>>(
        partial_b, chunks, d, static_cast<T*>(db));
    detail::check_launch();
  });
}

}  // namespace zt::model::cuda
