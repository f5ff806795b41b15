// Fused causal self-attention on tensor cores (FlashAttention-2 style forward, deterministic
// two-kernel backward); the materialising reference the tests use is attention_reference.cu.
//
// Layout: q, k, v, out and their gradients are [B, T, H, Dh] (token-major; element (b, t, h, d)
// at ((b*T + t)*H + h)*Dh + d); lse and D are [B, H, T] fp32.
//
// Tensor cores are used through PTX mma.sync.m16n8k16 (bf16/fp16 inputs, fp32 accumulate) with
// operands loaded from shared memory by ldmatrix. Fragment layouts (PTX ISA, "Matrix Fragments
// for mma.m16n8k16"), with g = lane / 4 and c = lane % 4:
//   A 16x16 (row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 8+2c..), a3 = (g+8, 8+2c..)
//   B 16x8 (k x n):      b0 = (k 2c..2c+1, n g), b1 = (k 8+2c.., n g)
//   C 16x8 fp32:         c0,c1 = (g, 2c..2c+1), c2,c3 = (g+8, 2c..2c+1)
// So the C fragments of two neighbouring 8-column tiles are exactly the A fragment of one
// 16-column k-step: P (or dS) goes from the score accumulators to the next MMA without leaving
// registers.
//
// Shared-memory tiles are [rows][Dh + 8] 16-bit elements: the 16-byte row pad shifts consecutive
// rows by 4 banks, so the 8 row addresses of every ldmatrix phase hit 8 distinct 4-bank groups.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "model/cuda/attention_ptx.cuh"
#include "model/cuda/attention_sm90.h"
#include "model/cuda/attention_tiles.cuh"
#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using namespace attention_detail;  // model/cuda/attention_ptx.cuh

// ---------------------------------------------------------------------------------------------
// Warp-level products of the kernels below. A warp multiplies a 16-row slab of A (one A fragment
// per 16-deep k-step) by a B tile in shared memory, loading B for two 8-column n-tiles at a
// time; accumulator c[nt] is the C fragment of columns 8 nt .. 8 nt + 7. B tiles are stored
// either [n][k] (B^T row-major, e.g. K for S = Q K^T) or [k][n] (B row-major, e.g. V for P V).

enum class BLayout { kNK, kKN };

// c[2 np] += a b[0..1] and c[2 np + 1] += a b[2..3]: one k-step of a 16 x 16 output block, with
// b the B fragments of its two n-tiles (load_b_nk / load_b_kn).
template <class Elem, int kTiles>
__device__ __forceinline__ void mma_pair(float (&c)[kTiles][4], int np, const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  mma_16816<Elem>(c[2 * np], a, b[0], b[1]);
  mma_16816<Elem>(c[2 * np + 1], a, b[2], b[3]);
}

// c [16, 8 kTiles] += a B for one k-step: a the 16 x 16 A fragment, B the [16, 8 kTiles] block
// at k-row k0, column n0 of b_tile (stored as kLayout says), n-tiles in ascending order.
template <BLayout kLayout, int kStride, class Elem, int kTiles>
__device__ __forceinline__ void mma_step(float (&c)[kTiles][4], const uint32_t (&a)[4],
                                         const Elem* b_tile, int k0, int n0, int lane) {
#pragma unroll
  for (int np = 0; np < kTiles / 2; ++np) {
    uint32_t b[4];
    if constexpr (kLayout == BLayout::kNK)
      load_b_nk<kStride>(b, b_tile, n0 + np * 16, k0, lane);
    else
      load_b_kn<kStride>(b, b_tile, k0, n0 + np * 16, lane);
    mma_pair<Elem>(c, np, a, b);
  }
}

// c [16, 8 kTiles] = A B^T over kDepth columns, k-steps in ascending order: A is rows row0.. of
// a_tile, B^T rows n0.. of b_tile, both row-major [rows][kDepth] with stride kStride.
template <int kDepth, int kStride, class Elem, int kTiles>
__device__ __forceinline__ void mma_abt(float (&c)[kTiles][4], const Elem* a_tile, int row0,
                                        const Elem* b_tile, int n0, int lane) {
  zero_tiles(c);
#pragma unroll
  for (int kk = 0; kk < kDepth / 16; ++kk) {
    uint32_t a[4];
    load_a<kStride>(a, a_tile, row0, kk * 16, lane);
    mma_step<BLayout::kNK, kStride>(c, a, b_tile, kk * 16, n0, lane);
  }
}

// Writes one C fragment v (rows row and row + 8, columns col and col + 1) to a row-major shared
// tile, rounded to the 16-bit type.
template <int kStride, class Elem>
__device__ __forceinline__ void store_fragment(Elem* tile, int row, int col, const float (&v)[4]) {
  *reinterpret_cast<uint32_t*>(tile + row * kStride + col) = pack2<Elem>(v[0], v[1]);
  *reinterpret_cast<uint32_t*>(tile + (row + 8) * kStride + col) = pack2<Elem>(v[2], v[3]);
}

// Writes a warp's [16, kDh] accumulator slab (times scale, rounded) to global memory at dst,
// rows >= rows_valid and columns >= head_dim skipped. It is staged in rows row0.. of the shared
// tile `stage`, which only this warp reads, so global stores are 16-byte and row-contiguous.
template <int kDh, class Elem, int kOutTiles>
__device__ __forceinline__ void store_warp_rows(Elem* dst, Elem* stage, int row0,
                                                const float (&acc)[kOutTiles][4], float scale,
                                                int64_t row_stride, int rows_valid, int head_dim,
                                                int lane) {
  constexpr int kStride = padded_stride<kDh>();
  __syncwarp();
  store_c<kStride>(stage, acc, row0, 0, scale, lane);
  __syncwarp();
  store_tile<16, kDh, 32>(dst, stage + row0 * kStride, row_stride, rows_valid, head_dim, lane);
}

// ---------------------------------------------------------------------------------------------
// Forward: one block = 64 queries of one (b, h); 4 warps, each owning 16 query rows end to end
// (scores, online softmax, output accumulator). Key/value tiles of 64 walk from 0 up to the
// causal diagonal. Shared memory: Q, K, V tiles of [64][Dh + 8] (99 KiB at Dh = 256, two blocks
// per SM). V_j is fetched while S = Q K_j^T and the softmax run; K_j+1 while O += P V_j runs.

constexpr int kForwardThreads = 128;

template <int kDh>
constexpr int forward_smem_bytes() {
  return 3 * kAttentionForwardBlockQ * padded_stride<kDh>() * 2;
}

template <class Elem, int kDh>
__global__ void __launch_bounds__(kForwardThreads, 2)
    attention_forward_kernel(const Elem* __restrict__ q, const Elem* __restrict__ k,
                             const Elem* __restrict__ v, Elem* __restrict__ out,
                             float* __restrict__ lse, int seq, int heads, int head_dim,
                             float scale_log2) {
  constexpr int kBlockQ = kAttentionForwardBlockQ;
  constexpr int kBlockK = kAttentionForwardBlockK;
  constexpr int kStride = padded_stride<kDh>();
  constexpr int kScoreTiles = kBlockK / 8;  // 8-column accumulator tiles of S
  constexpr int kOutTiles = kDh / 8;        // 8-column accumulator tiles of O
  static_assert(kBlockQ == 16 * (kForwardThreads / 32), "one 16-row slab per warp");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_q = reinterpret_cast<Elem*>(smem_raw);  // [kBlockQ][kStride]
  Elem* s_k = s_q + kBlockQ * kStride;            // [kBlockK][kStride]
  Elem* s_v = s_k + kBlockK * kStride;            // [kBlockK][kStride]

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  // Heaviest (last) query tiles first: they have the most key tiles to walk.
  const int q_tile = int(gridDim.y) - 1 - int(blockIdx.y);
  const int q0 = q_tile * kBlockQ;
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // Keys 0 .. min(q0 + kBlockQ, seq) - 1 can be seen by some query of this tile.
  const int key_end = min(q0 + kBlockQ, seq);
  const int num_kv_tiles = (key_end + kBlockK - 1) / kBlockK;

  load_tile<kBlockQ, kDh, kForwardThreads>(s_q, q + token_offset(b, q0, h, seq, heads, head_dim),
                                           row_stride, seq - q0, head_dim);
  // Token 0 of this head in k and v; tile j starts j * kBlockK rows further.
  const int64_t head_off = token_offset(b, 0, h, seq, heads, head_dim);
  const Elem* k_head = k + head_off;
  const Elem* v_head = v + head_off;
  load_tile<kBlockK, kDh, kForwardThreads>(s_k, k_head, row_stride, seq, head_dim);
  cp_async_commit();

  float acc_o[kOutTiles][4];
  zero_tiles(acc_o);
  // Per accumulator row r (rows g and g + 8 of the warp's slab): running max of the log2-scaled
  // scores, and this lane's share of the running sum of 2^(score - max) (reduced at the end).
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kBlockK;
    // K_j (and Q) have landed; every warp is past P V_{j-1}, so s_v may be refilled.
    cp_async_wait<0>();
    __syncthreads();
    load_tile<kBlockK, kDh, kForwardThreads>(s_v, v_head + k0 * row_stride, row_stride, seq - k0,
                                             head_dim);
    cp_async_commit();

    // S = Q K_j^T for the warp's 16 rows: [16, kBlockK] in kScoreTiles fragments.
    float s[kScoreTiles][4];
    mma_abt<kDh, kStride>(s, s_q, warp * 16, s_k, 0, lane);

    // Causal mask (only tiles that reach the diagonal or the end need it), online softmax.
    if (k0 + kBlockK - 1 > q0 || k0 + kBlockK > seq) mask_scores(s, q0 + warp * 16, k0, seq, lane);
    online_softmax_step(s, acc_o, row_max, row_sum, scale_log2);

    // P rounded to the 16-bit type (as FlashAttention does) and packed into A fragments now:
    // 16 registers instead of 32 stay live across the barrier below.
    uint32_t pa[kBlockK / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) c_to_a<Elem>(pa[kk], s, kk);

    // V_j has landed; every warp is done reading s_k, so K_{j+1} may be fetched.
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < num_kv_tiles)
      load_tile<kBlockK, kDh, kForwardThreads>(s_k, k_head + (k0 + kBlockK) * row_stride,
                                               row_stride, seq - (k0 + kBlockK), head_dim);
    cp_async_commit();

    // O += P V_j.
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk)
      mma_step<BLayout::kKN, kStride>(acc_o, pa[kk], s_v, kk * 16, 0, lane);
  }
  cp_async_wait<0>();  // the last (empty) group, so no copy is pending at exit

  // Normalise and save lse, then write O through the warp's own (no longer needed) rows of s_q
  // so global stores are 16-byte and row-contiguous. Only this warp ever read those rows.
  finish_softmax(acc_o, row_max, row_sum, lse + int64_t(bh) * seq, q0 + warp * 16, seq, lane);
  store_warp_rows<kDh>(out + token_offset(b, q0 + warp * 16, h, seq, heads, head_dim), s_q,
                       warp * 16, acc_o, 1.0f, row_stride, seq - (q0 + warp * 16), head_dim, lane);
}

// ---------------------------------------------------------------------------------------------
// Backward step 1: D[b, h, t] = dout[b, t, h, :] . out[b, t, h, :] in fp32 (one warp per row).

constexpr int kRowDotThreads = 256;

template <class Elem>
__global__ void __launch_bounds__(kRowDotThreads)
    attention_row_dot_kernel(const Elem* __restrict__ dout, const Elem* __restrict__ out,
                             float* __restrict__ d, int64_t rows, int seq, int heads,
                             int head_dim) {
  const int64_t row = int64_t(blockIdx.x) * (kRowDotThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  const Elem* x = dout + row * head_dim;
  const Elem* y = out + row * head_dim;
  float sum = 0.0f;
  for (int col = lane * 8; col < head_dim; col += 32 * 8) {
    const uint4 xv = *reinterpret_cast<const uint4*>(x + col);
    const uint4 yv = *reinterpret_cast<const uint4*>(y + col);
    const Elem* xe = reinterpret_cast<const Elem*>(&xv);
    const Elem* ye = reinterpret_cast<const Elem*>(&yv);
#pragma unroll
    for (int i = 0; i < 8; ++i) sum = fmaf(to_float(xe[i]), to_float(ye[i]), sum);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) {
    // row = (b * T + t) * H + h  ->  D index (b * H + h) * T + t
    const int64_t h = row % heads;
    const int64_t bt = row / heads;
    const int64_t t = bt % seq, b = bt / seq;
    d[(b * heads + h) * seq + t] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward step 2: dK and dV. One block = 64 keys of one (b, h), 8 warps; it walks the 64-query
// tiles from the diagonal to the end, so each dK/dV row is summed by one block in a fixed order.
// Per query tile:
//   phase 1 (warps as 4 key slabs of 16 x 2 query halves of 32):
//     S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - D),
//     written to shared memory as 16-bit [key][query] tiles;
//   phase 2 (warps as 2 key halves of 32 x 4 column quarters of Dh/4):
//     dV += P^T dO, dK += dS^T Q (scale applied once at the end).
// Q, dO, lse and D are double-buffered: tile i+1 is fetched during tile i. Shared memory at
// Dh = 256: K, V, 2 x Q, 2 x dO (6 x 33 KiB) + P^T, dS^T (2 x 9 KiB) + lse, D = 217 KiB.

constexpr int kDkvThreads = 256;

template <int kDh>
constexpr int dkv_smem_bytes() {
  return (2 * kAttentionDkvBlockK + 4 * kAttentionDkvBlockQ) * padded_stride<kDh>() * 2 +
         2 * kAttentionDkvBlockK * padded_stride<kAttentionDkvBlockQ>() * 2 +
         4 * kAttentionDkvBlockQ * 4;
}

template <class Elem, int kDh>
__global__ void __launch_bounds__(kDkvThreads, 1)
    attention_backward_dkv_kernel(const Elem* __restrict__ dout, const Elem* __restrict__ q,
                                  const Elem* __restrict__ k, const Elem* __restrict__ v,
                                  const float* __restrict__ lse, const float* __restrict__ dsum,
                                  Elem* __restrict__ dk, Elem* __restrict__ dv, int seq, int heads,
                                  int head_dim, float scale, float scale_log2) {
  constexpr int kBlockK = kAttentionDkvBlockK;
  constexpr int kBlockQ = kAttentionDkvBlockQ;
  constexpr int kStride = padded_stride<kDh>();
  constexpr int kPStride = padded_stride<kBlockQ>();
  static_assert(kBlockK == 64 && kBlockQ == 64 && kDkvThreads == 256,
                "the warp layouts below assume 64 x 64 tiles and 8 warps");
  // Phase 1: warp tile 16 keys x 32 queries (4 accumulator tiles).
  constexpr int kQTiles = 4;
  // Phase 2: warp tile 32 keys x kDh/4 columns (2 row tiles x kDh/32 column tiles).
  constexpr int kColsPerWarp = kDh / 4;
  constexpr int kColTiles = kColsPerWarp / 8;
  static_assert(kColTiles % 2 == 0, "column tiles are loaded in pairs");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_k = reinterpret_cast<Elem*>(smem_raw);                       // [kBlockK][kStride]
  Elem* s_v = s_k + kBlockK * kStride;                                 // [kBlockK][kStride]
  Elem* s_q = s_v + kBlockK * kStride;                                 // [2][kBlockQ][kStride]
  Elem* s_do = s_q + 2 * kBlockQ * kStride;                            // [2][kBlockQ][kStride]
  Elem* s_p = s_do + 2 * kBlockQ * kStride;                            // P^T  [kBlockK][kPStride]
  Elem* s_ds = s_p + kBlockK * kPStride;                               // dS^T [kBlockK][kPStride]
  float* s_lse = reinterpret_cast<float*>(s_ds + kBlockK * kPStride);  // [2][kBlockQ]
  float* s_d = s_lse + 2 * kBlockQ;                                    // [2][kBlockQ]

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int k0 = blockIdx.y * kBlockK;  // key tile 0 (the most query tiles) is launched first
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int tid = threadIdx.x;

  // Query tiles that can see some key of this block: from the one holding query k0 to the end.
  const int first_q_tile = k0 / kBlockQ;
  const int num_q_tiles = (seq + kBlockQ - 1) / kBlockQ - first_q_tile;

  auto load_query_tile = [&](int it, int buf) {
    const int t0 = (first_q_tile + it) * kBlockQ;
    const int64_t off = token_offset(b, t0, h, seq, heads, head_dim);
    load_tile<kBlockQ, kDh, kDkvThreads>(s_q + buf * kBlockQ * kStride, q + off, row_stride,
                                         seq - t0, head_dim);
    load_tile<kBlockQ, kDh, kDkvThreads>(s_do + buf * kBlockQ * kStride, dout + off, row_stride,
                                         seq - t0, head_dim);
    if (tid < 2 * kBlockQ) {
      const int r = tid % kBlockQ;
      const bool valid = t0 + r < seq;
      const float* src = (tid < kBlockQ ? lse : dsum) + int64_t(bh) * seq + (valid ? t0 + r : 0);
      float* dst = (tid < kBlockQ ? s_lse : s_d) + buf * kBlockQ + r;
      cp_async_4(dst, src, valid);
    }
  };

  const int64_t key_off = token_offset(b, k0, h, seq, heads, head_dim);
  load_tile<kBlockK, kDh, kDkvThreads>(s_k, k + key_off, row_stride, seq - k0, head_dim);
  load_tile<kBlockK, kDh, kDkvThreads>(s_v, v + key_off, row_stride, seq - k0, head_dim);
  load_query_tile(0, 0);
  cp_async_commit();

  float acc_dk[2][kColTiles][4], acc_dv[2][kColTiles][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    zero_tiles(acc_dk[mt]);
    zero_tiles(acc_dv[mt]);
  }

  // Phase 1 warp position: keys wm*16.., queries wn*32..
  const int wm = warp % 4, wn = warp / 4;
  // Phase 2 warp position: keys wk*32.., columns wd*kColsPerWarp..
  const int wk = warp % 2, wd = warp / 2;

  for (int it = 0; it < num_q_tiles; ++it) {
    const int buf = it & 1;
    const int q0 = (first_q_tile + it) * kBlockQ;
    const Elem* s_qb = s_q + buf * kBlockQ * kStride;
    const Elem* s_dob = s_do + buf * kBlockQ * kStride;
    const float* s_lseb = s_lse + buf * kBlockQ;
    const float* s_db = s_d + buf * kBlockQ;
    // Tile `it` has landed; every warp is past phase 2 of it-1, so buffer buf^1 and s_p/s_ds
    // are free.
    cp_async_wait<0>();
    __syncthreads();
    if (it + 1 < num_q_tiles) load_query_tile(it + 1, buf ^ 1);
    cp_async_commit();

    // Phase 1: S^T and dP^T for 16 keys x 32 queries.
    float st[kQTiles][4], dpt[kQTiles][4];
    zero_tiles(st);
    zero_tiles(dpt);
#pragma unroll
    for (int kk = 0; kk < kDh / 16; ++kk) {
      uint32_t a_k[4], a_v[4];
      load_a<kStride>(a_k, s_k, wm * 16, kk * 16, lane);
      load_a<kStride>(a_v, s_v, wm * 16, kk * 16, lane);
      // S^T and dP^T interleaved by n-tile pair: two mma_step calls (all of S^T, then dP^T)
      // would reorder the MMAs and change the register allocation.
#pragma unroll
      for (int np = 0; np < kQTiles / 2; ++np) {
        uint32_t bf[4];
        load_b_nk<kStride>(bf, s_qb, wn * 32 + np * 16, kk * 16, lane);
        mma_pair<Elem>(st, np, a_k, bf);
        load_b_nk<kStride>(bf, s_dob, wn * 32 + np * 16, kk * 16, lane);
        mma_pair<Elem>(dpt, np, a_v, bf);
      }
    }
    // P^T = 2^(S^T scale log2e - lse log2e) (0 where key > query or past the sequence), dS^T.
    const bool need_mask = k0 + kBlockK - 1 > q0 || q0 + kBlockQ > seq || k0 + kBlockK > seq;
#pragma unroll
    for (int nt = 0; nt < kQTiles; ++nt) {
      const int q_local = wn * 32 + nt * 8 + 2 * c;
      float p[4], ds[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + wm * 16 + g + (e >> 1) * 8;
        const int ql = q_local + (e & 1);
        const int query = q0 + ql;
        const bool masked = need_mask && (key > query || query >= seq || key >= seq);
        p[e] = masked ? 0.0f : exp2_approx(fmaf(st[nt][e], scale_log2, -s_lseb[ql] * kLog2e));
        ds[e] = p[e] * (dpt[nt][e] - s_db[ql]);
      }
      store_fragment<kPStride>(s_p, wm * 16 + g, q_local, p);
      store_fragment<kPStride>(s_ds, wm * 16 + g, q_local, ds);
    }
    __syncthreads();  // P^T and dS^T complete

    // Phase 2: dV += P^T dO, dK += dS^T Q over the 64 queries of the tile.
#pragma unroll
    for (int kk = 0; kk < kBlockQ / 16; ++kk) {
      uint32_t a_p[2][4], a_ds[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        load_a<kPStride>(a_p[mt], s_p, wk * 32 + mt * 16, kk * 16, lane);
        load_a<kPStride>(a_ds[mt], s_ds, wk * 32 + mt * 16, kk * 16, lane);
      }
#pragma unroll
      for (int np = 0; np < kColTiles / 2; ++np) {
        const int col0 = wd * kColsPerWarp + np * 16;
        uint32_t bf[4];
        load_b_kn<kStride>(bf, s_dob, kk * 16, col0, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_pair<Elem>(acc_dv[mt], np, a_p[mt], bf);
        load_b_kn<kStride>(bf, s_qb, kk * 16, col0, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_pair<Elem>(acc_dk[mt], np, a_ds[mt], bf);
      }
    }
  }
  cp_async_wait<0>();
  // Every warp is past the loop: s_k and s_v (read only in phase 1) take dK and dV.
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    store_c<kStride>(s_k, acc_dk[mt], wk * 32 + mt * 16, wd * kColsPerWarp, scale, lane);
    store_c<kStride>(s_v, acc_dv[mt], wk * 32 + mt * 16, wd * kColsPerWarp, 1.0f, lane);
  }
  __syncthreads();
  store_tile<kBlockK, kDh, kDkvThreads>(dk + key_off, s_k, row_stride, seq - k0, head_dim, tid);
  store_tile<kBlockK, kDh, kDkvThreads>(dv + key_off, s_v, row_stride, seq - k0, head_dim, tid);
}

// ---------------------------------------------------------------------------------------------
// Backward step 3: dQ. One block = 64 queries of one (b, h); 4 warps of 16 query rows each (the
// forward's layout); key tiles of 32 from 0 to the diagonal, so each dQ row is summed by one warp
// in a fixed order. Per key tile: dP = dO V_j^T, S = Q K_j^T, P = exp(S scale - lse),
// dS = P (dP - D), dQ += dS K_j (scale at the end). Shared memory at Dh = 256: Q, dO [64][264]
// and K, V [32][264] = 99 KiB (two blocks per SM). V_{j+1} is fetched during S and dS K_j;
// K_{j+1} during dO V_{j+1}^T.

constexpr int kDqThreads = 128;

template <int kDh>
constexpr int dq_smem_bytes() {
  return (2 * kAttentionDqBlockQ + 2 * kAttentionDqBlockK) * padded_stride<kDh>() * 2;
}

template <class Elem, int kDh>
__global__ void __launch_bounds__(kDqThreads, 2)
    attention_backward_dq_kernel(const Elem* __restrict__ dout, const Elem* __restrict__ q,
                                 const Elem* __restrict__ k, const Elem* __restrict__ v,
                                 const float* __restrict__ lse, const float* __restrict__ dsum,
                                 Elem* __restrict__ dq, int seq, int heads, int head_dim,
                                 float scale, float scale_log2) {
  constexpr int kBlockQ = kAttentionDqBlockQ;
  constexpr int kBlockK = kAttentionDqBlockK;
  constexpr int kStride = padded_stride<kDh>();
  constexpr int kScoreTiles = kBlockK / 8;
  constexpr int kOutTiles = kDh / 8;
  static_assert(kBlockQ == 16 * (kDqThreads / 32), "one 16-row slab per warp");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_q = reinterpret_cast<Elem*>(smem_raw);  // [kBlockQ][kStride]
  Elem* s_do = s_q + kBlockQ * kStride;           // [kBlockQ][kStride]
  Elem* s_k = s_do + kBlockQ * kStride;           // [kBlockK][kStride]
  Elem* s_v = s_k + kBlockK * kStride;            // [kBlockK][kStride]

  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int q_tile = int(gridDim.y) - 1 - int(blockIdx.y);  // heaviest first
  const int q0 = q_tile * kBlockQ;
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;

  const int key_end = min(q0 + kBlockQ, seq);
  const int num_kv_tiles = (key_end + kBlockK - 1) / kBlockK;

  // Starts the copy of the key tile at token k0 of `src` (k or v) into `dst` (s_k or s_v).
  auto load_key_tile = [&](Elem* dst, const Elem* src, int k0) {
    load_tile<kBlockK, kDh, kDqThreads>(dst, src + token_offset(b, k0, h, seq, heads, head_dim),
                                        row_stride, seq - k0, head_dim);
  };

  // Groups: {Q, dO, V_0}, then {K_0}; per tile {V_j+1}, then {K_j+1}.
  const int64_t q_off = token_offset(b, q0, h, seq, heads, head_dim);
  load_tile<kBlockQ, kDh, kDqThreads>(s_q, q + q_off, row_stride, seq - q0, head_dim);
  load_tile<kBlockQ, kDh, kDqThreads>(s_do, dout + q_off, row_stride, seq - q0, head_dim);
  load_key_tile(s_v, v, 0);
  cp_async_commit();
  load_key_tile(s_k, k, 0);
  cp_async_commit();

  // lse (log2-scaled) and D of the thread's two rows; rows past the sequence are masked below.
  float row_lse2[2], row_d[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int query = q0 + warp * 16 + g + r * 8;
    const bool valid = query < seq;
    row_lse2[r] = valid ? lse[int64_t(bh) * seq + query] * kLog2e : 0.0f;
    row_d[r] = valid ? dsum[int64_t(bh) * seq + query] : 0.0f;
  }

  float acc_dq[kOutTiles][4];
  zero_tiles(acc_dq);

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kBlockK;
    // All groups but the newest (K_j) are complete: V_j (and Q, dO) have landed.
    cp_async_wait<1>();
    __syncthreads();

    // dP = dO V_j^T.
    float dp[kScoreTiles][4];
    mma_abt<kDh, kStride>(dp, s_do, warp * 16, s_v, 0, lane);

    // K_j has landed; every warp is done reading s_v, so V_{j+1} may be fetched.
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < num_kv_tiles) load_key_tile(s_v, v, k0 + kBlockK);
    cp_async_commit();

    // S = Q K_j^T.
    float s[kScoreTiles][4];
    mma_abt<kDh, kStride>(s, s_q, warp * 16, s_k, 0, lane);

    // dS = P (dP - D) into s.
    const bool need_mask = k0 + kBlockK - 1 > q0 || k0 + kBlockK > seq || q0 + kBlockQ > seq;
    scores_to_ds(s, dp, row_lse2, row_d, need_mask, q0 + warp * 16, k0, seq, scale_log2, lane);

    // dQ += dS K_j (dS rounded to the 16-bit type).
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) {
      uint32_t a[4];
      c_to_a<Elem>(a, s, kk);
      mma_step<BLayout::kKN, kStride>(acc_dq, a, s_k, kk * 16, 0, lane);
    }

    // Every warp is done reading s_k: K_{j+1} may be fetched.
    __syncthreads();
    if (j + 1 < num_kv_tiles) load_key_tile(s_k, k, k0 + kBlockK);
    cp_async_commit();
  }
  cp_async_wait<0>();

  // The warp's own rows of s_q (read by no other warp) stage dQ for 16-byte stores.
  store_warp_rows<kDh>(dq + token_offset(b, q0 + warp * 16, h, seq, heads, head_dim), s_q,
                       warp * 16, acc_dq, scale, row_stride, seq - (q0 + warp * 16), head_dim,
                       lane);
}

// ---------------------------------------------------------------------------------------------
// Host side

// The kernel width for a head dim: the next of 64, 128, 256 (narrower heads are zero-padded).
int padded_head_dim(int64_t head_dim) { return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256; }

template <class Elem, int kDh>
void launch_forward(const CudaContext& ctx, const void* q, const void* k, const void* v, void* out,
                    float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  constexpr int kSmem = forward_smem_bytes<kDh>();
  auto kernel = attention_forward_kernel<Elem, kDh>;
  detail::allow_dynamic_smem(kernel, kSmem);
  const dim3 grid(unsigned(batch * heads),
                  unsigned((seq + kAttentionForwardBlockQ - 1) / kAttentionForwardBlockQ));
  const float scale_log2 = float(kLog2e / std::sqrt(double(head_dim)));
  kernel<<<grid, kForwardThreads, kSmem, ctx.stream()>>>(
      static_cast<const Elem*>(q), static_cast<const Elem*>(k), static_cast<const Elem*>(v),
      static_cast<Elem*>(out), lse, int(seq), int(heads), int(head_dim), scale_log2);
  detail::check_launch();
}

template <class Elem, int kDh>
void launch_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                     const void* v, const float* lse, const float* dsum, void* dq, void* dk,
                     void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const float scale_log2 = float(scale * kLog2e);
  {
    constexpr int kSmem = dkv_smem_bytes<kDh>();
    auto kernel = attention_backward_dkv_kernel<Elem, kDh>;
    detail::allow_dynamic_smem(kernel, kSmem);
    const dim3 grid(unsigned(batch * heads),
                    unsigned((seq + kAttentionDkvBlockK - 1) / kAttentionDkvBlockK));
    kernel<<<grid, kDkvThreads, kSmem, ctx.stream()>>>(
        static_cast<const Elem*>(dout), static_cast<const Elem*>(q), static_cast<const Elem*>(k),
        static_cast<const Elem*>(v), lse, dsum, static_cast<Elem*>(dk), static_cast<Elem*>(dv),
        int(seq), int(heads), int(head_dim), float(scale), scale_log2);
    detail::check_launch();
  }
  {
    constexpr int kSmem = dq_smem_bytes<kDh>();
    auto kernel = attention_backward_dq_kernel<Elem, kDh>;
    detail::allow_dynamic_smem(kernel, kSmem);
    const dim3 grid(unsigned(batch * heads),
                    unsigned((seq + kAttentionDqBlockQ - 1) / kAttentionDqBlockQ));
    kernel<<<grid, kDqThreads, kSmem, ctx.stream()>>>(
        static_cast<const Elem*>(dout), static_cast<const Elem*>(q), static_cast<const Elem*>(k),
        static_cast<const Elem*>(v), lse, dsum, static_cast<Elem*>(dq), int(seq), int(heads),
        int(head_dim), float(scale), scale_log2);
    detail::check_launch();
  }
}

template <class Elem>
void dispatch_forward(const CudaContext& ctx, const void* q, const void* k, const void* v,
                      void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                      int64_t head_dim) {
  switch (padded_head_dim(head_dim)) {
    case 64: launch_forward<Elem, 64>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim); break;
    case 128: launch_forward<Elem, 128>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim); break;
    default: launch_forward<Elem, 256>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim); break;
  }
}

template <class Elem>
void dispatch_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                       const void* v, const float* lse, const float* dsum, void* dq, void* dk,
                       void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  switch (padded_head_dim(head_dim)) {
    case 64:
      launch_backward<Elem, 64>(ctx, dout, q, k, v, lse, dsum, dq, dk, dv, batch, seq, heads,
                                head_dim);
      break;
    case 128:
      launch_backward<Elem, 128>(ctx, dout, q, k, v, lse, dsum, dq, dk, dv, batch, seq, heads,
                                 head_dim);
      break;
    default:
      launch_backward<Elem, 256>(ctx, dout, q, k, v, lse, dsum, dq, dk, dv, batch, seq, heads,
                                 head_dim);
      break;
  }
}

}  // namespace

void check_attention_arguments(const char* what, int64_t batch, int64_t seq, int64_t heads,
                               int64_t head_dim, DType dt,
                               std::initializer_list<const void*> pointers) {
  ZT_CHECK(dt == DType::kBF16 || dt == DType::kF16, what, ": dtype must be bf16 or fp16, got ",
           dtype_name(dt));
  ZT_CHECK(batch >= 0 && seq >= 0 && heads >= 0, what, ": bad size batch=", batch, " seq=", seq,
           " heads=", heads);
  ZT_CHECK(head_dim > 0 && head_dim <= kAttentionMaxHeadDim && head_dim % 8 == 0, what,
           ": head_dim must be a multiple of 8 in [8, ", kAttentionMaxHeadDim, "], got ", head_dim);
  // Kernels index tokens and (b, h) pairs with int; global offsets are 64-bit.
  ZT_CHECK(seq < (int64_t(1) << 31) - kAttentionForwardBlockQ &&
               batch * heads < (int64_t(1) << 31) &&
               (seq + kAttentionForwardBlockQ - 1) / kAttentionForwardBlockQ <= 65535,
           what, ": sizes too large: batch=", batch, " seq=", seq, " heads=", heads);
  // 16-byte vector loads and cp.async need 16-byte aligned rows.
  for (const void* p : pointers)
    ZT_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, what, ": pointers must be 16-byte aligned");
}

void attention_forward(const CudaContext& ctx, const void* q, const void* k, const void* v,
                       void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                       int64_t head_dim, DType dt) {
  check_attention_arguments("attention_forward", batch, seq, heads, head_dim, dt, {q, k, v, out});
  if (batch == 0 || seq == 0 || heads == 0) return;
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  if (attention_sm90_usable(ctx, head_dim))
    attention_forward_sm90(ctx, q, k, v, out, lse, batch, seq, heads, head_dim, dt);
  else if (dt == DType::kBF16)
    dispatch_forward<__nv_bfloat16>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim);
  else
    dispatch_forward<__half>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim);
}

void attention_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                        const void* v, const void* out, const float* lse, void* dq, void* dk,
                        void* dv, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                        DType dt) {
  check_attention_arguments("attention_backward", batch, seq, heads, head_dim, dt,
                  {dout, q, k, v, out, dq, dk, dv});
  if (batch == 0 || seq == 0 || heads == 0) return;
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  // D = rowsum(dout * out): [B, H, T] fp32 scratch from the stream-ordered pool.
  const int64_t rows = batch * seq * heads;
  detail::StreamScratch dsum_scratch(ctx.stream(), size_t(rows) * sizeof(float));
  float* dsum = dsum_scratch.at<float>(0);
  if (attention_sm90_usable(ctx, head_dim)) {  // its dQ kernel computes D on the way
    attention_backward_sm90(ctx, dout, q, k, v, out, lse, dsum, dq, dk, dv, batch, seq, heads,
                            head_dim, dt);
    return;
  }
  const unsigned row_blocks = unsigned((rows + kRowDotThreads / 32 - 1) / (kRowDotThreads / 32));
  detail::dispatch_16bit(dt, "attention_backward", [&](auto tag) {
    using Elem = decltype(tag);
    attention_row_dot_kernel<Elem><<<row_blocks, kRowDotThreads, 0, ctx.stream()>>>(
        static_cast<const Elem*>(dout), static_cast<const Elem*>(out), dsum, rows, int(seq),
        int(heads), int(head_dim));
    detail::check_launch();
    dispatch_backward<Elem>(ctx, dout, q, k, v, lse, dsum, dq, dk, dv, batch, seq, heads,
                            head_dim);
  });
}

}  // namespace zt::model::cuda
