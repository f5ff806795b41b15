// Hopper (sm_90a) fused causal attention at head_dim 256: the forward and the backward's dK/dV
// and dQ kernels on warpgroup MMAs (model/cuda/wgmma.cuh). Same algorithms as the mma.sync
// kernels of attention.cu (FlashAttention-2 online softmax; a deterministic two-kernel backward
// in which every dK/dV row is summed by one block and every dQ row by one warpgroup, in a fixed
// order); what changes is the tile shapes and where the operands live:
//   - a forward or dQ block is 128 queries of one (b, h) and two warpgroups, each owning 64
//     query rows end to end (its scores, softmax state and accumulator); a dK/dV block is 64 keys
//     whose two warpgroups split the work by queries, then by head columns (see there);
//   - Q, K, V (and dO) stay in shared memory in the 128-byte swizzled layout wgmma reads, so the
//     score and output MMAs read them there instead of through ldmatrix into registers; P (or dS)
//     goes from the score accumulators to the next MMA as a register A operand;
//   - key tiles are 64 wide.
// Loads are cp.async by all 256 threads; the kernels run only on sm_90a (elsewhere the bodies
// trap, and attention_sm90_usable() keeps them from being launched).
#include "model/cuda/attention_sm90.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "model/cuda/attention_ptx.cuh"
#include "model/cuda/wgmma.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using namespace attention_detail;  // model/cuda/attention_ptx.cuh

constexpr int kThreads = 256;  // two warpgroups
constexpr int kBlockQ = 128;   // 64 query rows per warpgroup
constexpr int kBlockK = 64;
constexpr int kDh = 256;
constexpr int kQTileBytes = kBlockQ * kDh * 2;   // 64 KiB
constexpr int kKvTileBytes = kBlockK * kDh * 2;  // 32 KiB
constexpr int kScoreTiles = kBlockK / 8;         // 8-column accumulator tiles of S
constexpr int kOutTiles = kDh / 8;               // 8-column accumulator tiles of O or dQ
constexpr int kAlign = 1024;                     // swizzle atoms are 1024-byte aligned

// Forward: Q, then two stages of K and of V.
constexpr int kForwardSmem = kQTileBytes + 4 * kKvTileBytes + kAlign;
// dQ: Q and dO, then one K and one V tile.
constexpr int kDqSmem = 2 * kQTileBytes + 2 * kKvTileBytes + kAlign;

__device__ __forceinline__ unsigned char* align_smem(unsigned char* p) {
  return p + ((kAlign - (smem_address(p) & (kAlign - 1))) & (kAlign - 1));
}

// Starts cp.async copies of a [kRows, kDh] tile of one head into the swizzled layout of
// wgmma.cuh: `src` points at the tile's first token, tokens `row_stride` elements apart. Rows >=
// rows_valid and columns >= head_dim are zero-filled. Every thread of the block takes part: one
// 16-byte column chunk per thread, rows 8 apart (so the swizzle phase row % 8 is the same).
template <int kRows, class Elem>
__device__ __forceinline__ void load_sw128(unsigned char* dst, const Elem* src, int64_t row_stride,
                                           int rows_valid, int head_dim) {
  constexpr int kChunksPerRow = kDh / 8;  // 16-byte chunks
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0 && kRows % kRowsPerPass == 0 && kRowsPerPass % 8 == 0,
                "each thread keeps one column chunk and swizzle phase");
  const int row0 = int(threadIdx.x) / kChunksPerRow, cc = int(threadIdx.x) % kChunksPerRow;
  const bool col_valid = cc * 8 < head_dim;
  const uint32_t to = wgmma::opaque(smem_address(dst) + (cc / 8) * (kRows * 128) + row0 * 128 +
                                    (((cc % 8) ^ (row0 % 8)) << 4));
  const Elem* from = src + row0 * row_stride + cc * 8;
#pragma unroll
  for (int i = 0; i < kRows / kRowsPerPass; ++i) {
    const bool valid = col_valid && row0 + i * kRowsPerPass < rows_valid;
    cp_async_16(to + i * kRowsPerPass * 128, valid ? from + i * kRowsPerPass * row_stride : src,
                valid);
  }
}

// Low descriptor words (wgmma.cuh) of a swizzled [kRows, kDh] tile: read K-major from row row0
// (a multiple of 8) on, as the A operand or a B operand stored [N][K]; k-step kk is
// kmajor_step(kk) bytes further.
template <int kRows>
__device__ __forceinline__ uint32_t kmajor_desc_lo(const unsigned char* tile, int row0) {
  return wgmma::opaque(wgmma::sw128_desc_lo(smem_address(tile) + row0 * 128, 16));
}
template <int kRows>
__device__ __forceinline__ constexpr uint32_t kmajor_step(int kk) {
  return (kk / 4) * (kRows * 128) + (kk % 4) * 32;
}
// ... and read as an MN-major B operand [K = rows][N = kDh] (V in P V, K in dS K): k-step kk
// (rows 16 kk..) is kk * 16 * 128 bytes further; LBO is the column-block stride.
template <int kRows>
__device__ __forceinline__ uint32_t mnmajor_desc_lo(const unsigned char* tile) {
  return wgmma::opaque(wgmma::sw128_desc_lo(smem_address(tile), kRows * 128));
}

template <int kTiles>
__device__ __forceinline__ void zero_tiles(float (&d)[kTiles][4]) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) d[i][e] = 0.0f;
}

// d = A B^T over the full head dim: A rows row0.. of a swizzled [kBlockQ, kDh] tile, B a
// swizzled [kBlockK, kDh] tile (scores of 64 queries x 64 keys). Waits for the result. The first
// k-step ignores d's old value (scale_d = 0), so d needs no zeroing: writing registers between
// the wgmma fence and the MMAs would make ptxas insert another fence.
template <class Elem>
__device__ __forceinline__ void scores_mma(float (&d)[kScoreTiles][4], const unsigned char* a_tile,
                                           int row0, const unsigned char* b_tile) {
  const uint32_t a_lo = kmajor_desc_lo<kBlockQ>(a_tile, row0);
  const uint32_t b_lo = kmajor_desc_lo<kBlockK>(b_tile, 0);
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < kDh / 16; ++kk)
    wgmma::wgmma_m64n64k16_ss<0, Elem>(d, wgmma::sw128_desc(a_lo, kmajor_step<kBlockQ>(kk)),
                                       wgmma::sw128_desc(b_lo, kmajor_step<kBlockK>(kk)), kk > 0);
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::fence_registers(d);
}

// acc += P B with P the 64 x 64 probabilities (or dS) in s, rounded to Elem, and B a swizzled
// [kBlockK, kDh] tile read MN-major. Waits for the result.
template <class Elem>
__device__ __forceinline__ void accumulate_mma(float (&acc)[kOutTiles][4],
                                               const float (&s)[kScoreTiles][4],
                                               const unsigned char* b_tile) {
  uint32_t a[kBlockK / 16][4];
#pragma unroll
  for (int kk = 0; kk < kBlockK / 16; ++kk) c_to_a<Elem>(a[kk], s, kk);
  const uint32_t b_lo = mnmajor_desc_lo<kBlockK>(b_tile);
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < kBlockK / 16; ++kk)
    wgmma::wgmma_m64n256k16_rs<1, Elem>(acc, a[kk], wgmma::sw128_desc(b_lo, kk * 16 * 128), 1);
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::fence_registers(acc);
}

// Rounds the block's [kBlockQ, kDh] accumulators (times scale) into `stage` (row-major, padded
// rows; at least kBlockQ * (kDh + 8) elements of shared memory nobody reads any more) and
// writes rows < rows_valid to global memory with 16-byte stores.
template <class Elem>
__device__ __forceinline__ void store_rows(Elem* dst, Elem* stage, const float (&acc)[kOutTiles][4],
                                           float scale, int64_t row_stride, int rows_valid,
                                           int head_dim) {
  const int warp_row = (int(threadIdx.x) / 32) * 16;  // warpgroup w, warp i: rows 64 w + 16 i
  store_c<padded_stride<kDh>()>(stage, acc, warp_row, 0, scale, int(threadIdx.x) % 32);
  __syncthreads();
  store_tile<kBlockQ, kDh, kThreads>(dst, stage, row_stride, rows_valid, head_dim,
                                     int(threadIdx.x));
}

// ---------------------------------------------------------------------------------------------
// Forward. K_j+1 and V_j+1 are fetched into the other stage while tile j is computed.

template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_sm90_kernel(const Elem* __restrict__ q, const Elem* __restrict__ k,
                                  const Elem* __restrict__ v, Elem* __restrict__ out,
                                  float* __restrict__ lse, int seq, int heads, int head_dim,
                                  float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* s_q = align_smem(smem_raw);    // [kBlockQ, kDh] swizzled
  unsigned char* s_k = s_q + kQTileBytes;       // 2 stages of [kBlockK, kDh]
  unsigned char* s_v = s_k + 2 * kKvTileBytes;  // 2 stages of [kBlockK, kDh]

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int q0 = (int(gridDim.y) - 1 - int(blockIdx.y)) * kBlockQ;  // heaviest tiles first
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int wg = int(threadIdx.x) / 128, lane = int(threadIdx.x) % 32;
  const int wg_row = 64 * wg;                                 // within the block
  const int warp_query0 = q0 + (int(threadIdx.x) / 32) * 16;  // first query of this warp

  const int key_end = min(q0 + kBlockQ, seq);
  const int num_kv_tiles = (key_end + kBlockK - 1) / kBlockK;
  const int64_t head_off = token_offset(b, 0, h, seq, heads, head_dim);
  load_sw128<kBlockQ>(s_q, q + head_off + int64_t(q0) * row_stride, row_stride, seq - q0, head_dim);
  load_sw128<kBlockK>(s_k, k + head_off, row_stride, seq, head_dim);
  load_sw128<kBlockK>(s_v, v + head_off, row_stride, seq, head_dim);
  cp_async_commit();

  float acc_o[kOutTiles][4];
  zero_tiles(acc_o);
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kBlockK;
    const unsigned char* s_kj = s_k + (j & 1) * kKvTileBytes;
    const unsigned char* s_vj = s_v + (j & 1) * kKvTileBytes;
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();  // K_j, V_j visible; both warpgroups are past tile j - 1 and its stage
    if (j + 1 < num_kv_tiles) {
      const int k1 = k0 + kBlockK;
      const int stage = ((j + 1) & 1) * kKvTileBytes;
      load_sw128<kBlockK>(s_k + stage, k + head_off + int64_t(k1) * row_stride, row_stride,
                          seq - k1, head_dim);
      load_sw128<kBlockK>(s_v + stage, v + head_off + int64_t(k1) * row_stride, row_stride,
                          seq - k1, head_dim);
    }
    cp_async_commit();
    if (k0 > q0 + wg_row + 63) continue;  // every key is after every query of this warpgroup

    float s[kScoreTiles][4];
    scores_mma<Elem>(s, s_q, wg_row, s_kj);
    if (k0 + kBlockK - 1 > q0 + wg_row || k0 + kBlockK > seq)
      mask_scores(s, warp_query0, k0, seq, lane);
    online_softmax_step(s, acc_o, row_max, row_sum, scale_log2);
    accumulate_mma<Elem>(acc_o, s, s_vj);
  }
  cp_async_wait<0>();  // the last (empty) group

  finish_softmax(acc_o, row_max, row_sum, lse + int64_t(bh) * seq, warp_query0, seq, lane);
  __syncthreads();  // both warpgroups are done with s_k and s_v, which stage O
  store_rows(out + head_off + int64_t(q0) * row_stride, reinterpret_cast<Elem*>(s_k), acc_o, 1.0f,
             row_stride, seq - q0, head_dim);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// dQ. Per key tile: dP = dO V_j^T, S = Q K_j^T, dS = P (dP - D), dQ += dS K_j (scale at the
// end). V_j+1 is fetched during S and dS K_j; K_j+1 during dO V_j+1^T.

template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dq_sm90_kernel(const Elem* __restrict__ dout, const Elem* __restrict__ q,
                                      const Elem* __restrict__ k, const Elem* __restrict__ v,
                                      const float* __restrict__ lse, const float* __restrict__ dsum,
                                      Elem* __restrict__ dq, int seq, int heads, int head_dim,
                                      float scale, float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* s_q = align_smem(smem_raw);  // [kBlockQ, kDh] swizzled
  unsigned char* s_do = s_q + kQTileBytes;    // [kBlockQ, kDh] swizzled
  unsigned char* s_k = s_do + kQTileBytes;    // [kBlockK, kDh] swizzled
  unsigned char* s_v = s_k + kKvTileBytes;    // [kBlockK, kDh] swizzled

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int q0 = (int(gridDim.y) - 1 - int(blockIdx.y)) * kBlockQ;  // heaviest tiles first
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int wg = int(threadIdx.x) / 128, lane = int(threadIdx.x) % 32;
  const int wg_row = 64 * wg;
  const int warp_query0 = q0 + (int(threadIdx.x) / 32) * 16;

  const int key_end = min(q0 + kBlockQ, seq);
  const int num_kv_tiles = (key_end + kBlockK - 1) / kBlockK;
  const int64_t head_off = token_offset(b, 0, h, seq, heads, head_dim);

  // Groups: {Q, dO, V_0}, then {K_0}; per tile {V_j+1}, then {K_j+1}.
  load_sw128<kBlockQ>(s_q, q + head_off + int64_t(q0) * row_stride, row_stride, seq - q0, head_dim);
  load_sw128<kBlockQ>(s_do, dout + head_off + int64_t(q0) * row_stride, row_stride, seq - q0,
                      head_dim);
  load_sw128<kBlockK>(s_v, v + head_off, row_stride, seq, head_dim);
  cp_async_commit();
  load_sw128<kBlockK>(s_k, k + head_off, row_stride, seq, head_dim);
  cp_async_commit();

  // lse (log2-scaled) and D of the thread's two rows; rows past the sequence are masked.
  float row_lse2[2], row_d[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int query = warp_query0 + lane / 4 + r * 8;
    const bool valid = query < seq;
    row_lse2[r] = valid ? lse[int64_t(bh) * seq + query] * kLog2e : 0.0f;
    row_d[r] = valid ? dsum[int64_t(bh) * seq + query] : 0.0f;
  }

  float acc_dq[kOutTiles][4];
  zero_tiles(acc_dq);

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kBlockK;
    const bool active = k0 <= q0 + wg_row + 63;  // some key is not after every query
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();  // V_j (and Q, dO) visible

    float dp[kScoreTiles][4];
    if (active) scores_mma<Elem>(dp, s_do, wg_row, s_v);

    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();  // K_j visible; both warpgroups are done reading s_v
    if (j + 1 < num_kv_tiles) {
      const int k1 = k0 + kBlockK;
      load_sw128<kBlockK>(s_v, v + head_off + int64_t(k1) * row_stride, row_stride, seq - k1,
                          head_dim);
    }
    cp_async_commit();

    if (active) {
      float s[kScoreTiles][4];
      scores_mma<Elem>(s, s_q, wg_row, s_k);
      const bool need_mask =
          k0 + kBlockK - 1 > q0 + wg_row || k0 + kBlockK > seq || q0 + wg_row + 64 > seq;
      scores_to_ds(s, dp, row_lse2, row_d, need_mask, warp_query0, k0, seq, scale_log2, lane);
      accumulate_mma<Elem>(acc_dq, s, s_k);
    }

    __syncthreads();  // both warpgroups are done reading s_k
    if (j + 1 < num_kv_tiles) {
      const int k1 = k0 + kBlockK;
      load_sw128<kBlockK>(s_k, k + head_off + int64_t(k1) * row_stride, row_stride, seq - k1,
                          head_dim);
    }
    cp_async_commit();
  }
  cp_async_wait<0>();

  // Q and dO are no longer read (the loop ends with a barrier): they stage dQ.
  store_rows(dq + head_off + int64_t(q0) * row_stride, reinterpret_cast<Elem*>(s_q), acc_dq, scale,
             row_stride, seq - q0, head_dim);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// dK and dV. One block = 64 keys of one (b, h); it walks the 64-query tiles from the diagonal to
// the end, so each dK/dV row is summed by one block in a fixed order. Per query tile:
//   phase 1 (warpgroup w: the 64 keys x queries 32 w..32 w + 31 of the tile):
//     S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - D), rounded
//     into shared memory as swizzled [key][query] tiles (the A operands of phase 2);
//   phase 2 (warpgroup w: the 64 keys x head columns 128 w..128 w + 127):
//     dV += P^T dO, dK += dS^T Q (scale applied at the end).
// Q, dO, lse and D are double-buffered: tile i+1 is fetched during tile i.

constexpr int kDkvQuery = 64;                             // queries per tile
constexpr int kScoreTileBytes = kBlockK * kDkvQuery * 2;  // P^T or dS^T: 8 KiB
// K, V; two stages of Q and of dO; P^T, dS^T; two stages of lse and of D.
constexpr int kDkvSmem = 6 * kKvTileBytes + 2 * kScoreTileBytes + 4 * kDkvQuery * 4 + kAlign;
constexpr int kDkvHalf = kDh / 2;  // head columns per warpgroup in phase 2

template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dkv_sm90_kernel(const Elem* __restrict__ dout, const Elem* __restrict__ q,
                                       const Elem* __restrict__ k, const Elem* __restrict__ v,
                                       const float* __restrict__ lse,
                                       const float* __restrict__ dsum, Elem* __restrict__ dk,
                                       Elem* __restrict__ dv, int seq, int heads, int head_dim,
                                       float scale, float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(kBlockK == 64 && kDkvQuery == 64, "the layouts below assume 64 x 64 tiles");
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* s_k = align_smem(smem_raw);     // [kBlockK, kDh] swizzled
  unsigned char* s_v = s_k + kKvTileBytes;       // [kBlockK, kDh] swizzled
  unsigned char* s_q = s_v + kKvTileBytes;       // 2 stages of [kDkvQuery, kDh]
  unsigned char* s_do = s_q + 2 * kKvTileBytes;  // 2 stages of [kDkvQuery, kDh]
  unsigned char* s_p = s_do + 2 * kKvTileBytes;  // P^T [kBlockK, kDkvQuery] swizzled
  unsigned char* s_ds = s_p + kScoreTileBytes;   // dS^T, the same
  float* s_lse = reinterpret_cast<float*>(s_ds + kScoreTileBytes);  // [2][kDkvQuery]
  float* s_d = s_lse + 2 * kDkvQuery;                               // [2][kDkvQuery]

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int k0 = blockIdx.y * kBlockK;  // key tile 0 (the most query tiles) is launched first
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int tid = int(threadIdx.x), wg = tid / 128, lane = tid % 32;
  const int warp_key = ((tid / 32) % 4) * 16;  // first key row of this warp within the block
  const int g = lane / 4, c = lane % 4;
  const int64_t head_off = token_offset(b, 0, h, seq, heads, head_dim);

  // Query tiles that can see some key of this block: from the one holding query k0 to the end.
  const int first_q_tile = k0 / kDkvQuery;
  const int num_q_tiles = (seq + kDkvQuery - 1) / kDkvQuery - first_q_tile;

  auto load_query_tile = [&](int it, int buf) {
    const int t0 = (first_q_tile + it) * kDkvQuery;
    load_sw128<kDkvQuery>(s_q + buf * kKvTileBytes, q + head_off + int64_t(t0) * row_stride,
                          row_stride, seq - t0, head_dim);
    load_sw128<kDkvQuery>(s_do + buf * kKvTileBytes, dout + head_off + int64_t(t0) * row_stride,
                          row_stride, seq - t0, head_dim);
    if (tid < 2 * kDkvQuery) {
      const int r = tid % kDkvQuery;
      const bool valid = t0 + r < seq;
      const float* src = (tid < kDkvQuery ? lse : dsum) + int64_t(bh) * seq + (valid ? t0 + r : 0);
      cp_async_4((tid < kDkvQuery ? s_lse : s_d) + buf * kDkvQuery + r, src, valid);
    }
  };

  load_sw128<kBlockK>(s_k, k + head_off + int64_t(k0) * row_stride, row_stride, seq - k0, head_dim);
  load_sw128<kBlockK>(s_v, v + head_off + int64_t(k0) * row_stride, row_stride, seq - k0, head_dim);
  load_query_tile(0, 0);
  cp_async_commit();

  float acc_dk[kDkvHalf / 8][4], acc_dv[kDkvHalf / 8][4];
  zero_tiles(acc_dk);
  zero_tiles(acc_dv);

  for (int it = 0; it < num_q_tiles; ++it) {
    const int buf = it & 1;
    const int q0 = (first_q_tile + it) * kDkvQuery;
    const unsigned char* s_qb = s_q + buf * kKvTileBytes;
    const unsigned char* s_dob = s_do + buf * kKvTileBytes;
    const float* s_lseb = s_lse + buf * kDkvQuery;
    const float* s_db = s_d + buf * kDkvQuery;
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();  // tile it visible; both warpgroups are past phase 2 of it - 1
    if (it + 1 < num_q_tiles) load_query_tile(it + 1, buf ^ 1);
    cp_async_commit();

    // Phase 1: S^T and dP^T, 64 keys x the warpgroup's 32 queries.
    float st[4][4], dpt[4][4];  // written by the first k-step (scale_d = 0)
    {
      const uint32_t k_lo = kmajor_desc_lo<kBlockK>(s_k, 0);
      const uint32_t v_lo = kmajor_desc_lo<kBlockK>(s_v, 0);
      const uint32_t q_lo = kmajor_desc_lo<kDkvQuery>(s_qb, 32 * wg);
      const uint32_t do_lo = kmajor_desc_lo<kDkvQuery>(s_dob, 32 * wg);
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < kDh / 16; ++kk)
        wgmma::wgmma_m64n32k16_ss<0, Elem>(st, wgmma::sw128_desc(k_lo, kmajor_step<kBlockK>(kk)),
                                           wgmma::sw128_desc(q_lo, kmajor_step<kDkvQuery>(kk)),
                                           kk > 0);
#pragma unroll
      for (int kk = 0; kk < kDh / 16; ++kk)
        wgmma::wgmma_m64n32k16_ss<0, Elem>(dpt, wgmma::sw128_desc(v_lo, kmajor_step<kBlockK>(kk)),
                                           wgmma::sw128_desc(do_lo, kmajor_step<kDkvQuery>(kk)),
                                           kk > 0);
      wgmma::commit();
      wgmma::wait<0>();
      wgmma::fence_registers(st);
      wgmma::fence_registers(dpt);
    }

    // P^T = 2^(S^T scale log2e - lse log2e) (0 where key > query or past the sequence), dS^T;
    // both rounded into the swizzled [key][query] tiles (one 128-byte row per key).
    const bool need_mask = k0 + kBlockK - 1 > q0 || q0 + kDkvQuery > seq || k0 + kBlockK > seq;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int ql = 32 * wg + nt * 8 + 2 * c;  // column pair ql, ql + 1
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + warp_key + g + (e >> 1) * 8;
        const int query = q0 + ql + (e & 1);
        const bool masked = need_mask && (key > query || query >= seq || key >= seq);
        const float p =
            masked ? 0.0f
                   : exp2_approx(fmaf(st[nt][e], scale_log2, -s_lseb[ql + (e & 1)] * kLog2e));
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - s_db[ql + (e & 1)]);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp_key + g + 8 * r;
        const int offset = row * 128 + (((ql / 8) ^ (row % 8)) << 4) + (ql % 8) * 2;
        *reinterpret_cast<uint32_t*>(s_p + offset) = pack2<Elem>(st[nt][2 * r], st[nt][2 * r + 1]);
        *reinterpret_cast<uint32_t*>(s_ds + offset) =
            pack2<Elem>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
      }
    }
    wgmma::fence_proxy_async();
    __syncthreads();  // P^T and dS^T complete

    // Phase 2: dV += P^T dO, dK += dS^T Q over the tile's 64 queries, the warpgroup's columns.
    {
      const uint32_t p_lo = kmajor_desc_lo<kBlockK>(s_p, 0);
      const uint32_t ds_lo = kmajor_desc_lo<kBlockK>(s_ds, 0);
      const uint32_t half = uint32_t(wg) * (kDkvHalf / 64) * (kDkvQuery * 128);
      const uint32_t do_mn =
          wgmma::opaque(wgmma::sw128_desc_lo(smem_address(s_dob) + half, kDkvQuery * 128));
      const uint32_t q_mn =
          wgmma::opaque(wgmma::sw128_desc_lo(smem_address(s_qb) + half, kDkvQuery * 128));
      wgmma::fence();
#pragma unroll
      for (int kk = 0; kk < kDkvQuery / 16; ++kk)
        wgmma::wgmma_m64n128k16_ss<1, Elem>(acc_dv, wgmma::sw128_desc(p_lo, kk * 32),
                                            wgmma::sw128_desc(do_mn, kk * 16 * 128), 1);
#pragma unroll
      for (int kk = 0; kk < kDkvQuery / 16; ++kk)
        wgmma::wgmma_m64n128k16_ss<1, Elem>(acc_dk, wgmma::sw128_desc(ds_lo, kk * 32),
                                            wgmma::sw128_desc(q_mn, kk * 16 * 128), 1);
      wgmma::commit();
      wgmma::wait<0>();
      wgmma::fence_registers(acc_dv);
      wgmma::fence_registers(acc_dk);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // both warpgroups are past phase 2: the Q and dO stages take dK and dV

  Elem* stage_k = reinterpret_cast<Elem*>(s_q);   // [kBlockK][kDh + 8]
  Elem* stage_v = reinterpret_cast<Elem*>(s_do);  // [kBlockK][kDh + 8]
  store_c<padded_stride<kDh>()>(stage_k, acc_dk, warp_key, kDkvHalf * wg, scale, lane);
  store_c<padded_stride<kDh>()>(stage_v, acc_dv, warp_key, kDkvHalf * wg, 1.0f, lane);
  __syncthreads();
  store_tile<kBlockK, kDh, kThreads>(dk + head_off + int64_t(k0) * row_stride, stage_k, row_stride,
                                     seq - k0, head_dim, tid);
  store_tile<kBlockK, kDh, kThreads>(dv + head_off + int64_t(k0) * row_stride, stage_v, row_stride,
                                     seq - k0, head_dim, tid);
#else
  __trap();
#endif
}

template <class Kernel>
void prepare(Kernel kernel, int smem_bytes) {
  ZT_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
}

dim3 grid_of(int64_t batch, int64_t seq, int64_t heads) {
  return dim3(unsigned(batch * heads), unsigned((seq + kBlockQ - 1) / kBlockQ));
}

template <class Elem>
void launch_forward(const CudaContext& ctx, const void* q, const void* k, const void* v, void* out,
                    float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  auto kernel = attention_forward_sm90_kernel<Elem>;
  prepare(kernel, kForwardSmem);
  const float scale_log2 = float(kLog2e / std::sqrt(double(head_dim)));
  kernel<<<grid_of(batch, seq, heads), kThreads, kForwardSmem, ctx.stream()>>>(
      static_cast<const Elem*>(q), static_cast<const Elem*>(k), static_cast<const Elem*>(v),
      static_cast<Elem*>(out), lse, int(seq), int(heads), int(head_dim), scale_log2);
  ZT_CUDA_CHECK(cudaGetLastError());
}

template <class Elem>
void launch_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                     const void* v, const float* lse, const float* dsum, void* dq, void* dk,
                     void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const float scale_log2 = float(scale * kLog2e);
  {
    auto kernel = attention_backward_dkv_sm90_kernel<Elem>;
    prepare(kernel, kDkvSmem);
    const dim3 grid(unsigned(batch * heads), unsigned((seq + kBlockK - 1) / kBlockK));
    kernel<<<grid, kThreads, kDkvSmem, ctx.stream()>>>(
        static_cast<const Elem*>(dout), static_cast<const Elem*>(q), static_cast<const Elem*>(k),
        static_cast<const Elem*>(v), lse, dsum, static_cast<Elem*>(dk), static_cast<Elem*>(dv),
        int(seq), int(heads), int(head_dim), float(scale), scale_log2);
    ZT_CUDA_CHECK(cudaGetLastError());
  }
  {
    auto kernel = attention_backward_dq_sm90_kernel<Elem>;
    prepare(kernel, kDqSmem);
    kernel<<<grid_of(batch, seq, heads), kThreads, kDqSmem, ctx.stream()>>>(
        static_cast<const Elem*>(dout), static_cast<const Elem*>(q), static_cast<const Elem*>(k),
        static_cast<const Elem*>(v), lse, dsum, static_cast<Elem*>(dq), int(seq), int(heads),
        int(head_dim), float(scale), scale_log2);
    ZT_CUDA_CHECK(cudaGetLastError());
  }
}

bool portable_kernels_forced() {
  static const bool forced = [] {
    const char* e = std::getenv("ZT_ATTENTION_KERNEL");
    return e != nullptr && std::strcmp(e, "portable") == 0;
  }();
  return forced;
}

}  // namespace

bool attention_sm90_usable(const CudaContext& ctx, int64_t head_dim) {
#if defined(ZT_CUDA_SM90A)
  if (head_dim <= 128 || head_dim > kDh || portable_kernels_forced()) return false;
  int major = 0, minor = 0;
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ctx.device()));
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ctx.device()));
  return major == 9 && minor == 0;
#else
  (void)ctx;
  (void)head_dim;
  (void)portable_kernels_forced;
  return false;
#endif
}

void attention_forward_sm90(const CudaContext& ctx, const void* q, const void* k, const void* v,
                            void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                            int64_t head_dim, DType dt) {
  detail::dispatch_16bit(dt, "attention_forward_sm90", [&](auto tag) {
    launch_forward<decltype(tag)>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim);
  });
}

void attention_backward_sm90(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                             const void* v, const float* lse, const float* dsum, void* dq, void* dk,
                             void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                             DType dt) {
  detail::dispatch_16bit(dt, "attention_backward_sm90", [&](auto tag) {
    launch_backward<decltype(tag)>(ctx, dout, q, k, v, lse, dsum, dq, dk, dv, batch, seq, heads,
                                   head_dim);
  });
}

}  // namespace zt::model::cuda
