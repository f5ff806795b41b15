// Private to the fused attention kernels (model/cuda/attention.cu, attention_sm90.cu): PTX
// wrappers (cp.async, ldmatrix, mma.sync), 16-bit packing, quad reductions, and the tile and
// fragment helpers that move [rows][Dh] tiles between global memory, shared memory and registers.
// Fragment layouts are described at the top of attention.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "model/cuda/kernels_common.cuh"

namespace zt::model::cuda::attention_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------------------------
// PTX wrappers

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1; when !valid nothing is read and the 16 bytes
// are zero-filled (rows past T, columns past head_dim). `src` must be a mapped address anyway.
__device__ __forceinline__ void cp_async_16(uint32_t dst_smem, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst_smem), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(smem_address(dst), src, valid);
}

__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
}

// Named barriers (0 is __syncthreads): `count` threads take part, a multiple of 32. sync waits
// until all have arrived; arrive counts this thread without waiting (a producer's signal).
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most kPending of this thread's committed groups are still in flight. Other
// threads' copies become visible only after a following __syncthreads().
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}

// c += a * b for one 16x8x16 tile; fp32 accumulators.
template <class Elem>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to nearest even into one register; `lo` is the lower column.
template <class Elem>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

using detail::to_float;  // bf16/fp16 -> fp32, shared with the other kernels

// 2^x; 2^-inf = 0. Max relative error about 2 ulp; results below 2^-126 flush to zero.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Reductions over the 4 lanes (c = 0..3) that hold one accumulator row; fixed order.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ---------------------------------------------------------------------------------------------
// Tiles and fragments

// Shared-memory row stride (elements) of a tile with kCols columns.
template <int kCols>
constexpr int padded_stride() {
  return kCols + 8;
}

// Starts cp.async copies of a [kRows, kDh] tile of one head: global rows are tokens t0.. of
// head (b, h) (`src` points at (b, t0, h, 0), consecutive tokens `row_stride` elements apart).
// Rows >= rows_valid and columns >= head_dim are zero-filled, so padded columns add nothing to
// dot products and padded rows contribute 0 * 0.
template <int kRows, int kDh, int kThreads, class Elem>
__device__ __forceinline__ void load_tile(Elem* dst, const Elem* src, int64_t row_stride,
                                          int rows_valid, int head_dim) {
  constexpr int kStride = padded_stride<kDh>();
  constexpr int kChunksPerRow = kDh / 8;  // 16-byte chunks
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int chunk = i * kThreads + int(threadIdx.x);
    const int row = chunk / kChunksPerRow;
    const int col = (chunk % kChunksPerRow) * 8;
    const bool valid = row < rows_valid && col < head_dim;
    const Elem* from = valid ? src + row * row_stride + col : src;
    cp_async_16(dst + row * kStride + col, from, valid);
  }
}

// Copies a [kRows, kDh] tile from shared memory (stride padded_stride<kDh>) to global rows
// t0.. of one head with 16-byte stores; rows >= rows_valid and columns >= head_dim are skipped.
// The calling threads are `lane_count` consecutive threads numbered by `lane`.
template <int kRows, int kDh, int kLanes, class Elem>
__device__ __forceinline__ void store_tile(Elem* dst, const Elem* src, int64_t row_stride,
                                           int rows_valid, int head_dim, int lane) {
  constexpr int kStride = padded_stride<kDh>();
  constexpr int kChunksPerRow = kDh / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kLanes == 0, "tile chunks must split evenly over the lanes");
#pragma unroll
  for (int i = 0; i < kChunks / kLanes; ++i) {
    const int chunk = i * kLanes + lane;
    const int row = chunk / kChunksPerRow;
    const int col = (chunk % kChunksPerRow) * 8;
    if (row < rows_valid && col < head_dim)
      *reinterpret_cast<uint4*>(dst + row * row_stride + col) =
          *reinterpret_cast<const uint4*>(src + row * kStride + col);
  }
}

// A fragment of the 16x16 block at (row0, col0) of a row-major tile. ldmatrix matrix m (lanes
// 8m..8m+7 give its row addresses) is a_m: rows +8 for m odd, columns +8 for m >= 2.
template <int kStride, class Elem>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const Elem* tile, int row0, int col0,
                                       int lane) {
  ldmatrix_x4(a, tile + (row0 + (lane % 16)) * kStride + col0 + (lane / 16) * 8);
}

// B fragments of two neighbouring n-tiles (n0..n0+7, n0+8..n0+15) of a 16-deep k-step at k0,
// from a tile stored [n][k] (B^T row-major, e.g. K for Q K^T): b[0], b[1] for n-tile 0 and
// b[2], b[3] for n-tile 1. Matrices: (n0, k0), (n0, k0+8), (n0+8, k0), (n0+8, k0+8).
template <int kStride, class Elem>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const Elem* tile, int n0, int k0,
                                          int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane % 8) + (lane / 16) * 8) * kStride + k0 + ((lane / 8) % 2) * 8);
}

// The same fragments from a tile stored [k][n] (B row-major, e.g. V for P V), transposed by
// ldmatrix.trans. Matrices: (k0, n0), (k0+8, n0), (k0, n0+8), (k0+8, n0+8).
template <int kStride, class Elem>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const Elem* tile, int k0, int n0,
                                          int lane) {
  ldmatrix_x4_trans(
      b, tile + (k0 + (lane % 8) + ((lane / 8) % 2) * 8) * kStride + n0 + (lane / 16) * 8);
}

// Sets kTiles accumulator fragments (8 columns each, of an mma.sync or a wgmma tile) to zero.
template <int kTiles>
__device__ __forceinline__ void zero_tiles(float (&c)[kTiles][4]) {
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) c[nt][e] = 0.0f;
}

// The A fragment of k-step kk from C fragments c[2kk], c[2kk+1] (16 rows x 16 columns of P or
// dS), rounded to the MMA's 16-bit type.
template <class Elem, int kTiles>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c)[kTiles][4], int kk) {
  a[0] = pack2<Elem>(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack2<Elem>(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack2<Elem>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack2<Elem>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// Writes one warp's C fragments c[nt][*] (rows row0 + g, row0 + g + 8; columns col0 + 8 nt +
// 2c..) to a row-major shared tile, scaled and rounded. Lanes of one store hit 4 g + c + const:
// no bank conflicts with the padded stride.
template <int kStride, int kTiles, class Elem>
__device__ __forceinline__ void store_c(Elem* tile, const float (&c)[kTiles][4], int row0, int col0,
                                        float scale, int lane) {
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
    const int col = col0 + nt * 8 + 2 * q;
    *reinterpret_cast<uint32_t*>(tile + (row0 + g) * kStride + col) =
        pack2<Elem>(c[nt][0] * scale, c[nt][1] * scale);
    *reinterpret_cast<uint32_t*>(tile + (row0 + g + 8) * kStride + col) =
        pack2<Elem>(c[nt][2] * scale, c[nt][3] * scale);
  }
}

// Offset of element (b, t, h, 0) of a [B, T, H, Dh] tensor.
__device__ __forceinline__ int64_t token_offset(int b, int t, int h, int seq, int heads,
                                                int head_dim) {
  return ((int64_t(b) * seq + t) * heads + h) * int64_t(head_dim);
}


// ---------------------------------------------------------------------------------------------
// Softmax pieces shared by the mma.sync and wgmma kernels. A warp's scores are a [16, 8 kTiles]
// accumulator tile in the C layout above: rows row0 + g and row0 + g + 8 (r = 0, 1), columns
// (keys) k0 + 8 nt + 2c and + 1.

// -inf where key > query (causal) or key >= seq.
template <int kTiles>
__device__ __forceinline__ void mask_scores(float (&s)[kTiles][4], int row0, int k0, int seq,
                                            int lane) {
  const int g = lane / 4, c = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + nt * 8 + 2 * c + (e & 1);
      const int query = row0 + g + (e >> 1) * 8;
      if (key > query || key >= seq) s[nt][e] = -INFINITY;
    }
  }
}

// One online-softmax step in base 2 (x = score * scale * log2(e)): updates the running row max
// and this lane's share of the running row sum, turns s into 2^(x - max), and gives in
// correction[r] the factor 2^(old max - new max) for the output accumulated so far.
template <int kTiles>
__device__ __forceinline__ void softmax_probs(float (&s)[kTiles][4], float (&row_max)[2],
                                              float (&row_sum)[2], float scale_log2,
                                              float (&correction)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float m = row_max[r];
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt)
      m = fmaxf(m, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]) * scale_log2);
    m = quad_max(m);
    // A row with every key so far masked keeps max -inf; subtracting 0 keeps exp2 at 0
    // instead of NaN (-inf - -inf).
    const float m_use = m == -INFINITY ? 0.0f : m;
    correction[r] = exp2_approx(row_max[r] - m_use);
    row_max[r] = m;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        s[nt][e] = exp2_approx(fmaf(s[nt][e], scale_log2, -m_use));
        sum += s[nt][e];
      }
    }
    row_sum[r] = row_sum[r] * correction[r] + sum;
  }
}

// acc_o rows r (= 0, 1) times correction[r]: the output accumulated so far, rescaled to the
// running maximum softmax_probs moved to.
template <int kOutTiles>
__device__ __forceinline__ void rescale_rows(float (&acc_o)[kOutTiles][4],
                                             const float (&correction)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int nt = 0; nt < kOutTiles; ++nt) {
      acc_o[nt][2 * r] *= correction[r];
      acc_o[nt][2 * r + 1] *= correction[r];
    }
}

// softmax_probs, then rescale_rows of acc_o.
template <int kTiles, int kOutTiles>
__device__ __forceinline__ void online_softmax_step(float (&s)[kTiles][4],
                                                    float (&acc_o)[kOutTiles][4],
                                                    float (&row_max)[2], float (&row_sum)[2],
                                                    float scale_log2) {
  float correction[2];
  softmax_probs(s, row_max, row_sum, scale_log2, correction);
  rescale_rows(acc_o, correction);
}

// After the last step: divides the output rows by their sums and writes lse (natural log) of
// rows row0 + g, row0 + g + 8 that are < seq to lse_head[row] (lse of one (b, h)).
template <int kOutTiles>
__device__ __forceinline__ void finish_softmax(float (&acc_o)[kOutTiles][4],
                                               const float (&row_max)[2], const float (&row_sum)[2],
                                               float* lse_head, int row0, int seq, int lane) {
  const int g = lane / 4, c = lane % 4;
  float inv_sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = quad_sum(row_sum[r]);
    inv_sum[r] = 1.0f / total;
    const int query = row0 + g + r * 8;
    if (c == 0 && query < seq) lse_head[query] = (row_max[r] + log2f(total)) * kLn2;
  }
#pragma unroll
  for (int nt = 0; nt < kOutTiles; ++nt) {
    acc_o[nt][0] *= inv_sum[0];
    acc_o[nt][1] *= inv_sum[0];
    acc_o[nt][2] *= inv_sum[1];
    acc_o[nt][3] *= inv_sum[1];
  }
}

// Backward: s (scores) becomes dS = P (dP - D), with P = 2^(s scale log2(e) - lse log2(e)), and
// P = 0 where key > query or either is past the sequence (checked only when need_mask).
// row_lse2: the rows' lse times log2(e); row_d: the rows' D = dout . out.
template <int kTiles>
__device__ __forceinline__ void scores_to_ds(float (&s)[kTiles][4], const float (&dp)[kTiles][4],
                                             const float (&row_lse2)[2], const float (&row_d)[2],
                                             bool need_mask, int row0, int k0, int seq,
                                             float scale_log2, int lane) {
  const int g = lane / 4, c = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + nt * 8 + 2 * c + (e & 1);
      const int query = row0 + g + (e >> 1) * 8;
      const bool masked = need_mask && (key > query || key >= seq || query >= seq);
      const float p = masked ? 0.0f : exp2_approx(fmaf(s[nt][e], scale_log2, -row_lse2[e >> 1]));
      s[nt][e] = p * (dp[nt][e] - row_d[e >> 1]);
    }
  }
}

}  // namespace zt::model::cuda::attention_detail
