// Hopper (sm_90a) fused causal attention at head_dim 256: the forward and the backward's dK/dV
// and dQ kernels on warpgroup MMAs (model/cuda/wgmma.cuh). Same algorithms as the mma.sync
// kernels of attention.cu (FlashAttention-2 online softmax; a deterministic two-kernel backward
// in which every dK/dV row is summed by one block and every dQ row by one warpgroup, in a fixed
// order); what changes is the tile shapes and where the operands live:
//   - a forward or dQ block is 128 queries of one (b, h) and two warpgroups, each owning 64
//     query rows end to end (its scores, softmax state and accumulator); a dK/dV block is 64 keys
//     whose two warpgroups split the work by product: one makes P^T and dV, the other dS^T and
//     dK (see there);
//   - Q, K, V (and dO) stay in shared memory in the 128-byte swizzled layout wgmma reads, so the
//     score and output MMAs read them there instead of through ldmatrix into registers; P (or dS)
//     goes from the score accumulators to the next MMA as a register A operand;
//   - key tiles are 80 wide in the forward (FlashAttention-3's width at head dim 256) and 64
//     in the backward, whose kernels have no room for wider ones.
// Tiles arrive by TMA (model/cuda/tma.cuh), issued by one thread, into slots guarded by
// mbarriers, so no block barrier couples the two warpgroups inside a loop; in the forward and dQ
// kernels they take turns to issue their MMAs (ping-pong), so one's softmax or dS step overlaps
// the other's MMAs. The kernels run only on sm_90a (elsewhere the bodies trap, and
// attention_sm90_usable() keeps them from being launched).
// Blocks are ordered by block_tile() (model/cuda/block_order.h) so the heads in flight at one
// time share L2. The dQ kernel runs first and computes D = rowsum(dO * O) for its rows on the
// way (it holds dO already), which the dK/dV kernel then reads: no separate pass over dO and O.
#include "model/cuda/attention_sm90.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "model/cuda/attention_ptx.cuh"
#include "model/cuda/block_order.h"
#include "model/cuda/kernels_common.cuh"
#include "model/cuda/tma.cuh"
#include "model/cuda/wgmma.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

// The kernels need sm_90a code and, for TMA, CUDA 12 headers; without them (ZT_CUDA_SM90A unset
// by model/CMakeLists.txt) only the entry points below exist and report the kernels unusable.
#if defined(ZT_CUDA_SM90A)
#include <cuda.h>          // CUtensorMap
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#endif

namespace zt::model::cuda {
#if defined(ZT_CUDA_SM90A)
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

__device__ __forceinline__ unsigned char* align_smem(unsigned char* p) {
  return p + ((kAlign - (smem_address(p) & (kAlign - 1))) & (kAlign - 1));
}

// This block's head and tile (model/cuda/block_order.h).
__device__ __forceinline__ BlockTile block_tile(int tiles) {
  return block_tile_of(int(blockIdx.x), tiles, int(gridDim.x) / tiles);
}

// Low descriptor words (wgmma.cuh) of a swizzled [kRows, kDh] tile: read K-major from row row0
// (a multiple of 8) on, as the A operand or a B operand stored [N][K]; k-step kk is
// kmajor_step<kRows>(kk) bytes further.
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

// d = A B^T over the full head dim: A rows row0.. of a swizzled [kARows, kDh] tile, B a
// swizzled [kBlockK, kDh] tile (scores of 64 queries x 64 keys, or their transpose). The first
// k-step ignores d's old value (scale_d = 0), so d needs no zeroing: writing registers between
// the wgmma fence and the MMAs would make ptxas insert another fence. issue_ only starts the
// MMAs (one commit group); scores_mma also waits for the result.
template <class Elem, int kARows = kBlockQ, int kTiles>
__device__ __forceinline__ void issue_scores_mma(float (&d)[kTiles][4], const unsigned char* a_tile,
                                                 int row0, const unsigned char* b_tile) {
  constexpr int kKeys = kTiles * 8;  // B rows: 64, or 80 in the forward
  const uint32_t a_lo = kmajor_desc_lo(a_tile, row0);
  const uint32_t b_lo = kmajor_desc_lo(b_tile, 0);
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < kDh / 16; ++kk)
    wgmma::wgmma_ss<0, Elem>(d, wgmma::sw128_desc(a_lo, kmajor_step<kARows>(kk)),
                             wgmma::sw128_desc(b_lo, kmajor_step<kKeys>(kk)), kk > 0);
  wgmma::commit();
}
template <class Elem, int kARows = kBlockQ, int kTiles>
__device__ __forceinline__ void scores_mma(float (&d)[kTiles][4], const unsigned char* a_tile,
                                           int row0, const unsigned char* b_tile) {
  issue_scores_mma<Elem, kARows>(d, a_tile, row0, b_tile);
  wgmma::wait<0>();
  wgmma::fence_registers(d);
}

// A fragments of a 64 x 64 P (or dS) held as accumulators, rounded to the MMA's type: the
// register operand of the k-steps of issue_accumulate_mma.
template <int kKeys = kBlockK>
using Fragments = uint32_t[kKeys / 16][4];
using ScoreFragments = Fragments<>;
template <class Elem, int kSteps, int kTiles>
__device__ __forceinline__ void to_fragments(uint32_t (&a)[kSteps][4],
                                             const float (&s)[kTiles][4]) {
  static_assert(kTiles == 2 * kSteps, "a k-step of 16 takes two 8-column tiles");
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) c_to_a<Elem>(a[kk], s, kk);
}
// Keeps fragments `a` in their registers, unchanged, up to this point: after
// issue_accumulate_mma, until the wait for its commit group.
template <int kSteps>
__device__ __forceinline__ void hold_fragments(uint32_t (&a)[kSteps][4]) {
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk)
#pragma unroll
    for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(a[kk][i])::"memory");
}

// acc += P B with P given as fragments `a` and B a swizzled [kBlockK, kDh] tile read MN-major;
// one commit group. accumulate_mma rounds P from the accumulators s and waits for the result.
template <class Elem, int kSteps>
__device__ __forceinline__ void issue_accumulate_mma(float (&acc)[kOutTiles][4],
                                                     const uint32_t (&a)[kSteps][4],
                                                     const unsigned char* b_tile) {
  const uint32_t b_lo = mnmajor_desc_lo<kSteps * 16>(b_tile);  // B: kSteps * 16 rows
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk)
    wgmma::wgmma_m64n256k16_rs<1, Elem>(acc, a[kk], wgmma::sw128_desc(b_lo, kk * 16 * 128), 1);
  wgmma::commit();
}
template <class Elem>
__device__ __forceinline__ void accumulate_mma(float (&acc)[kOutTiles][4],
                                               const float (&s)[kScoreTiles][4],
                                               const unsigned char* b_tile) {
  ScoreFragments a;
  to_fragments<Elem>(a, s);
  issue_accumulate_mma<Elem>(acc, a, b_tile);
  wgmma::wait<0>();
  hold_fragments(a);
  wgmma::fence_registers(acc);
}

// The TMA descriptors of one backward call: [B, T, H, Dh] in boxes of 64 tokens x 64 head
// columns of one (b, h) (token_map below).
struct BackwardMaps {
  CUtensorMap q, dout, k, v;
};

// Starts the TMA copies of the [kRows, kDh] tile of tokens t0.. of head (b, h) into the swizzled
// layout of wgmma.cuh (column block cb at cb * kRows * 128 bytes), completing on barrier `bar`:
// boxes of box_rows(kRows) tokens x 64 head columns, as `map` was made with. One thread issues
// them.
constexpr int box_rows(int rows) { return rows % 64 == 0 ? 64 : rows; }
template <int kRows>
__device__ __forceinline__ void tma_load_tile(const CUtensorMap& map, unsigned char* dst, int t0,
                                              int h, int b, uint32_t bar) {
  constexpr int kBox = box_rows(kRows);
#pragma unroll
  for (int cb = 0; cb < kDh / 64; ++cb)
#pragma unroll
    for (int r = 0; r < kRows / kBox; ++r)
      tma::load_4d(smem_address(dst) + cb * (kRows * 128) + r * (kBox * 128), &map, bar, cb * 64,
                   h, t0 + kBox * r, b);
}

// A ring of kSlots [kBlockK, kDh] K or V tiles of one head, fed by TMA (forward and dQ kernels).
// Load n (the kernel fixes which tile each n is) goes into slot n % kSlots once all 8 warps have
// released load n - kSlots; full(n) completes when load n has landed, empty(n) when it has been
// released. Shared memory: the tiles, then 2 kSlots mbarriers.
template <int kSlots, int kRows = kBlockK>
struct KvRing {
  static constexpr int kTileBytes = kRows * kDh * 2;
  static constexpr int kBytes = kSlots * kTileBytes + 16 * kSlots;
  unsigned char* tiles;
  uint32_t bars;  // full[kSlots], then empty[kSlots]

  __device__ explicit KvRing(unsigned char* at)
      : tiles(at), bars(smem_address(at + kSlots * kTileBytes)) {}
  __device__ uint32_t full(int n) const { return bars + 8 * (n % kSlots); }
  __device__ uint32_t empty(int n) const { return bars + 8 * kSlots + 8 * (n % kSlots); }
  __device__ static uint32_t parity(int n) { return uint32_t(n / kSlots) & 1; }
  __device__ unsigned char* slot(int n) const { return tiles + (n % kSlots) * kTileBytes; }

  // By one thread, before the block barrier that publishes the barriers.
  __device__ void init() const {
    for (int i = 0; i < kSlots; ++i) {
      tma::mbarrier_init(bars + 8 * i, 1);
      tma::mbarrier_init(bars + 8 * kSlots + 8 * i, 8);  // one arrival per warp
    }
  }
  __device__ void wait(int n) const { tma::mbarrier_wait(full(n), parity(n)); }
  // By lane 0 of each warp once the warp's MMAs reading load n have completed.
  __device__ void release(int n) const { tma::mbarrier_arrive(empty(n)); }
  // By one thread: starts load n (rows `row0`.. of `map`, head (b, h)) once its slot is free;
  // nothing past the last load.
  __device__ void load(int n, int num_loads, const CUtensorMap& map, int row0, int h,
                       int b) const {
    if (n >= num_loads) return;
    if (n >= kSlots) tma::mbarrier_wait(empty(n), parity(n - kSlots));
    tma::mbarrier_arrive_expect_tx(full(n), kTileBytes);
    tma_load_tile<kRows>(map, slot(n), row0, h, b, full(n));
  }
};

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

// The work of a forward or dQ block: head bh = (b, h), queries q0.. (kBlockQ of them, the last
// query tile for rank 0), and the key tiles up to the last of those queries.
struct QueryBlock {
  int bh, b, h, q0, num_kv_tiles;
};
template <int kKeys = kBlockK>  // key tile width
__device__ __forceinline__ QueryBlock query_block(int seq, int heads) {
  const int q_tiles = (seq + kBlockQ - 1) / kBlockQ;
  const BlockTile tile = block_tile(q_tiles);
  const int q0 = (q_tiles - 1 - tile.rank) * kBlockQ;
  const int key_end = min(q0 + kBlockQ, seq);
  return {tile.bh, tile.bh / heads, tile.bh % heads, q0, (key_end + kKeys - 1) / kKeys};
}

// ---------------------------------------------------------------------------------------------
// Forward. Q stays; K and V stream by TMA through a ring of four slots in the order K_0, V_0,
// K_1, V_1, ...: load n goes into slot n % 4 once both warpgroups are done with load n - 4, an
// iteration before its MMAs. Per key tile j a warpgroup issues S_j+1 = Q K_j+1^T and then
// O += P_j V_j, runs the online softmax of S_j+1 while P_j V_j is in flight, and rescales O once
// it has landed (FlashAttention-3's intra-warpgroup overlap). The two warpgroups also take turns
// to issue (named barriers, FlashAttention-3's ping-pong), so that one's softmax overlaps the
// other's MMAs instead of both leaving the tensor cores idle at the same time. Key tiles are 80
// wide (FlashAttention-3's width at head dim 256): a 40 KB ring slot, so that Q and four slots
// fill the SM's 227 KiB. On an H200 (B 4, T 2048, H 16, Dh 256): 343 us, against 370 us with
// 64-key tiles, 376 us with those and the softmax of S_j+1 after P_j V_j has landed, 410 us with
// two K/V stages loaded by cp.async and a block barrier per tile, and 416 us with the ring but
// no turns.

constexpr int kForwardSlots = 4;
constexpr int kForwardKeys = 80;  // key tile width (the backward's is kBlockK, 64)
// Q, the K/V ring (with its mbarriers), the mbarrier of Q.
constexpr int kForwardSmem =
    kQTileBytes + KvRing<kForwardSlots, kForwardKeys>::kBytes + 8 + kAlign;
static_assert(kForwardSmem <= 227 * 1024, "the forward's K/V ring needs all of an SM's 227 KiB");
constexpr int kBarrierTurn = 3;  // named barriers 3 and 4: warpgroup 0's and 1's turn to issue

struct ForwardMaps {
  CUtensorMap q, k, v;
};

template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_sm90_kernel(const __grid_constant__ ForwardMaps maps, Elem* __restrict__ out,
                                  float* __restrict__ lse, int seq, int heads, int head_dim,
                                  float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* s_q = align_smem(smem_raw);  // [kBlockQ, kDh] swizzled
  const KvRing<kForwardSlots, kForwardKeys> ring(s_q + kQTileBytes);
  const uint32_t q_full = smem_address(s_q + kQTileBytes + ring.kBytes);  // one more mbarrier

  const QueryBlock blk = query_block<kForwardKeys>(seq, heads);
  const int bh = blk.bh, b = blk.b, h = blk.h, q0 = blk.q0, num_kv_tiles = blk.num_kv_tiles;
  const int tid = int(threadIdx.x), wg = tid / 128, lane = tid % 32;
  const int wg_row = 64 * wg;                    // within the block
  const int warp_query0 = q0 + (tid / 32) * 16;  // first query of this warp
  const bool loader = tid == 128;                // issues the TMA copies
  const int num_loads = 2 * num_kv_tiles;  // K_j is load 2j, V_j load 2j + 1

  if (tid == 0) {
    ring.init();
    tma::mbarrier_init(q_full, 1);
  }
  __syncthreads();

  auto load = [&](int n) {
    ring.load(n, num_loads, n % 2 ? maps.v : maps.k, (n / 2) * kForwardKeys, h, b);
  };
  if (loader) {
    tma::mbarrier_arrive_expect_tx(q_full, kQTileBytes);
    tma_load_tile<kBlockQ>(maps.q, s_q, q0, h, b, q_full);
    for (int n = 0; n < kForwardSlots; ++n) load(n);
  }
  __syncwarp();  // wgmma instructions need converged warps

  float acc_o[kOutTiles][4];
  zero_tiles(acc_o);
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};
  float s[kForwardKeys / 8][4];  // S_j
  tma::mbarrier_wait(q_full, 0);
  ring.wait(0);
  __syncwarp();
  scores_mma<Elem>(s, s_q, wg_row, ring.slot(0));
  if (lane == 0) ring.release(0);  // K_0
  if (loader) load(kForwardSlots);
  __syncwarp();
  if (wg == 1) named_barrier_arrive(kBarrierTurn, kThreads);  // warpgroup 0 first

  // A tile with every key after every query of this warpgroup (its last, at most) gives P = 0.
  auto mask_tile = [&](int k0) {
    if (k0 + kForwardKeys - 1 > q0 + wg_row || k0 + kForwardKeys > seq)
      mask_scores(s, warp_query0, k0, seq, lane);
  };
  {  // P_0 (O is still zero: nothing to rescale)
    float unused[2];
    mask_tile(0);
    softmax_probs(s, row_max, row_sum, scale_log2, unused);
  }

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kForwardKeys;
    const bool more = j + 1 < num_kv_tiles;
    // S_j+1 = Q K_j+1^T, then O += P_j V_j. The last tile issues that score MMA too, on a slot
    // nobody loads (result unused): with it inside `if (more)` ptxas serialised every wgmma of
    // the kernel (info C7518 or C7515, "wgmma ... serialized"). A separate copy of the loop
    // body for the last tile, without that MMA, measured 382 us against 370, and so did
    // warpgroup 0 also stopping a tile early on the diagonal (its last tile is wholly masked):
    // the work they save sat in pipeline bubbles, and the longer code probably cost the rest.
    // The waits for the tiles come before the MMAs are issued.
    ring.wait(2 * j + 1);
    if (more) ring.wait(2 * j + 2);
    __syncwarp();
    Fragments<kForwardKeys> a;
    to_fragments<Elem>(a, s);
    named_barrier_sync(kBarrierTurn + wg, kThreads);
    issue_scores_mma<Elem>(s, s_q, wg_row, ring.slot(2 * j + 2));
    issue_accumulate_mma<Elem>(acc_o, a, ring.slot(2 * j + 1));
    if (wg == 0 || more) named_barrier_arrive(kBarrierTurn + 1 - wg, kThreads);
    wgmma::wait<1>();  // S_j+1 has landed; P_j V_j may still run
    wgmma::fence_registers(s);
    float correction[2] = {1.0f, 1.0f};
    if (more) {
      if (lane == 0) ring.release(2 * j + 2);  // K_j+1
      mask_tile(k0 + kForwardKeys);
      softmax_probs(s, row_max, row_sum, scale_log2, correction);
    }
    wgmma::wait<0>();
    hold_fragments(a);
    wgmma::fence_registers(acc_o);
    rescale_rows(acc_o, correction);
    if (lane == 0) ring.release(2 * j + 1);  // V_j
    if (loader) {
      load(2 * j + 5);
      load(2 * j + 6);
    }
    __syncwarp();
  }

  finish_softmax(acc_o, row_max, row_sum, lse + int64_t(bh) * seq, warp_query0, seq, lane);
  __syncthreads();  // both warpgroups are done with the ring, which stages O
  const int64_t row_stride = int64_t(heads) * head_dim;
  store_rows(out + token_offset(b, q0, h, seq, heads, head_dim), reinterpret_cast<Elem*>(ring.tiles),
             acc_o, 1.0f, row_stride, seq - q0, head_dim);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// dQ. Per key tile j: dP = dO V_j^T, S = Q K_j^T, dS = P (dP - D), dQ += dS K_j (scale at the
// end). Q and dO stay; K and V stream by TMA through a ring of three slots in the order V_0,
// K_0, V_1, K_1, ...: load n goes into slot n % 3 once both warpgroups are done with load n - 3.
// Per tile a warpgroup issues dP_j and S_j (batch A), computes dS, then issues dQ += dS K_j
// (batch B). Only two slots are in use at a time, so the third prefetches: K_j+1 loads into
// V_j's slot once batch A is done (it has dS and batch B to land in), V_j+2 into K_j's slot after
// batch B (a whole iteration). The two warpgroups take turns to issue their batches (named
// barriers, FlashAttention-3's ping-pong), so one's dS overlaps the other's MMAs. On an H200
// (B 4, T 2048, H 16, Dh 256): 497 us, against 551 us with the next tile's score MMAs queued
// behind batch B instead (all three slots busy, loads starting late) and 522 us without the
// turns. Before its loop a block computes D = rowsum(dO * O) of its rows, reading O from global
// memory while Q and dO land, and writes it for the dK/dV kernel: 507 us with that, against 497
// us plus 44 us for a separate pass over dO and O.

// D = rowsum(dO * O) inside the dQ kernel: the 4 lanes of a quad share two rows (the
// accumulator layout) and split each row's 16-byte chunks, lane l taking chunks l and l + 4 of
// every 64-column block; dsum_column(i, lane) is the first column of its i-th chunk.
__device__ __forceinline__ int dsum_column(int i, int lane) {
  return (i / 2) * 64 + (lane % 4 + 4 * (i % 2)) * 8;
}
// row_d[r] = D of row row0 + lane / 4 + 8 r of the block (row0: the warp's first row), from this
// lane's chunks of O (loaded earlier, zeros past the head dim or the sequence) and the same
// chunks of the swizzled dO tile, summed over the quad.
template <class Elem>
__device__ __forceinline__ void row_dsum(float (&row_d)[2], const uint4 (&o_chunks)[2][kDh / 32],
                                         const unsigned char* s_do, int row0, int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + lane / 4 + 8 * r;
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kDh / 32; ++i) {
      const int col = dsum_column(i, lane);
      const int chunk = (col % 64) / 8;
      const uint4 d = *reinterpret_cast<const uint4*>(s_do + (col / 64) * (kBlockQ * 128) +
                                                      row * 128 + ((chunk ^ (row % 8)) * 16));
      const Elem* de = reinterpret_cast<const Elem*>(&d);
      const Elem* oe = reinterpret_cast<const Elem*>(&o_chunks[r][i]);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum = fmaf(to_float(de[e]), to_float(oe[e]), sum);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    row_d[r] = sum;
  }
}

constexpr int kDqSlots = 3;
// Q and dO, the K/V ring (with its mbarriers), the mbarrier of Q and dO.
constexpr int kDqSmem = 2 * kQTileBytes + KvRing<kDqSlots>::kBytes + 8 + kAlign;

template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dq_sm90_kernel(const __grid_constant__ BackwardMaps maps,
                                      const Elem* __restrict__ out,
                                      const float* __restrict__ lse, float* __restrict__ dsum,
                                      Elem* __restrict__ dq, int seq, int heads, int head_dim,
                                      float scale, float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* s_q = align_smem(smem_raw);
  unsigned char* s_do = s_q + kQTileBytes;
  const KvRing<kDqSlots> ring(s_do + kQTileBytes);
  const uint32_t qdo_full = smem_address(s_do + kQTileBytes + ring.kBytes);  // one more mbarrier

  const QueryBlock blk = query_block(seq, heads);
  const int bh = blk.bh, b = blk.b, h = blk.h, q0 = blk.q0, num_kv_tiles = blk.num_kv_tiles;
  const int tid = int(threadIdx.x), wg = tid / 128, lane = tid % 32;
  const int wg_row = 64 * wg;
  const int warp_query0 = q0 + (tid / 32) * 16;
  const bool loader = tid == 128;
  const int num_loads = 2 * num_kv_tiles;  // V_j is load 2j, K_j load 2j + 1

  if (tid == 0) {
    ring.init();
    tma::mbarrier_init(qdo_full, 1);
  }
  __syncthreads();

  auto load = [&](int n) {
    ring.load(n, num_loads, n % 2 ? maps.k : maps.v, (n / 2) * kBlockK, h, b);
  };
  if (loader) {
    tma::mbarrier_arrive_expect_tx(qdo_full, 2 * kQTileBytes);
    tma_load_tile<kBlockQ>(maps.q, s_q, q0, h, b, qdo_full);
    tma_load_tile<kBlockQ>(maps.dout, s_do, q0, h, b, qdo_full);
    for (int n = 0; n < kDqSlots; ++n) load(n);
  }
  __syncwarp();

  // This thread's two rows, warp_query0 + lane / 4 (+ 8), as in the accumulators.
  float row_lse2[2], row_d[2];
  uint4 o_chunks[2][kDh / 32];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int query = warp_query0 + lane / 4 + r * 8;
    const bool valid = query < seq;
    row_lse2[r] = valid ? lse[int64_t(bh) * seq + query] * kLog2e : 0.0f;
    const Elem* o_row = out + token_offset(b, valid ? query : 0, h, seq, heads, head_dim);
#pragma unroll
    for (int i = 0; i < kDh / 32; ++i) {
      const int col = dsum_column(i, lane);
      o_chunks[r][i] = valid && col < head_dim ? *reinterpret_cast<const uint4*>(o_row + col)
                                               : make_uint4(0, 0, 0, 0);
    }
  }
  tma::mbarrier_wait(qdo_full, 0);
  row_dsum<Elem>(row_d, o_chunks, s_do, warp_query0 - q0, lane);
  if (lane % 4 == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int query = warp_query0 + lane / 4 + r * 8;
      if (query < seq) dsum[int64_t(bh) * seq + query] = row_d[r];
    }

  float acc_dq[kOutTiles][4];
  zero_tiles(acc_dq);
  if (wg == 1) named_barrier_arrive(kBarrierTurn, kThreads);  // warpgroup 0 first

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int k0 = j * kBlockK;
    const bool more = j + 1 < num_kv_tiles;
    ring.wait(2 * j);
    ring.wait(2 * j + 1);
    __syncwarp();
    float dp[kScoreTiles][4], sc[kScoreTiles][4];
    named_barrier_sync(kBarrierTurn + wg, kThreads);
    issue_scores_mma<Elem>(dp, s_do, wg_row, ring.slot(2 * j));
    issue_scores_mma<Elem>(sc, s_q, wg_row, ring.slot(2 * j + 1));
    named_barrier_arrive(kBarrierTurn + 1 - wg, kThreads);
    wgmma::wait<0>();
    wgmma::fence_registers(dp);
    wgmma::fence_registers(sc);
    if (lane == 0) ring.release(2 * j);  // V_j
    if (loader) load(2 * j + 3);         // K_j+1, into V_j's slot
    __syncwarp();

    const bool need_mask =
        k0 + kBlockK - 1 > q0 + wg_row || k0 + kBlockK > seq || q0 + wg_row + 64 > seq;
    scores_to_ds(sc, dp, row_lse2, row_d, need_mask, warp_query0, k0, seq, scale_log2, lane);
    ScoreFragments a;
    to_fragments<Elem>(a, sc);
    named_barrier_sync(kBarrierTurn + wg, kThreads);
    issue_accumulate_mma<Elem>(acc_dq, a, ring.slot(2 * j + 1));
    if (wg == 0 || more) named_barrier_arrive(kBarrierTurn + 1 - wg, kThreads);
    wgmma::wait<0>();
    hold_fragments(a);
    wgmma::fence_registers(acc_dq);
    if (lane == 0) ring.release(2 * j + 1);  // K_j
    if (loader) load(2 * j + 4);             // V_j+2, into K_j's slot
    __syncwarp();
  }
  __syncthreads();

  const int64_t row_stride = int64_t(heads) * head_dim;
  store_rows(dq + token_offset(b, q0, h, seq, heads, head_dim), reinterpret_cast<Elem*>(s_q),
             acc_dq, scale, row_stride, seq - q0, head_dim);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// dK and dV. One block = 64 keys of one (b, h); it walks the 64-query tiles from the diagonal to
// the end, so each dK/dV row is summed by one block in a fixed order. The warpgroups split the
// work by product, each MMA 64 (scores) or 256 (head dim) wide:
//   warpgroup 0: S^T = K Q^T, P^T = exp(S^T scale - lse) (0 where key > query or past the
//     sequence), dV += P^T dO;
//   warpgroup 1: dP^T = V dO^T, dS^T = P^T (dP^T - D), dK += dS^T Q (scale applied at the end).
// P^T goes from warpgroup 0 to 1 through shared memory in fp32, in accumulator-fragment order
// (thread t of one warpgroup reads what thread t of the other wrote); P^T and dS^T enter the dV
// and dK MMAs as register operands. A query tile's Q and dO arrive by TMA, its lse and D by
// cp.async, into two stages, each with a "full" mbarrier (the copies landed) and an "empty" one
// (all 8 warps are done with it); there is no block-wide barrier inside the loop. Per tile a
// warpgroup issues its score MMA, makes P^T or dS^T, then issues dV or dK: one stage in use, so
// the other's load (tile i+1) has a whole tile to land in. On an H200 (B 4, T 2048, H 16, Dh
// 256): 669 us (652-659 us in later calls). Queuing tile i+1's score MMA behind tile i's dV/dK
// instead held both stages, so each load started only a P / dS step before its use: 756 us.
// (lse and D are not TMA copies: a 1-D tensor map over them, [B H T] flat, raised an
// illegal-instruction fault in the tests with short sequences, where the whole array was
// smaller than the 64-element box.)

constexpr int kDkvQuery = 64;                              // queries per tile
constexpr int kPExchangeBytes = kBlockK * kDkvQuery * 4;  // P^T in fp32: 16 KiB
constexpr int kRowValuesBytes = kDkvQuery * 4;            // lse or D of a query tile
// K, V; two stages of Q and of dO; the P^T exchange; two stages of lse and of D; 5 mbarriers.
constexpr int kDkvSmem = 6 * kKvTileBytes + kPExchangeBytes + 4 * kRowValuesBytes + 64 + kAlign;
constexpr int kBarrierPReady = 1;  // named barriers (0 is __syncthreads): warpgroup 0 wrote P^T
constexpr int kBarrierPFree = 2;   // ... warpgroup 1 has read it


template <class Elem>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dkv_sm90_kernel(const __grid_constant__ BackwardMaps maps,
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
  float4* s_p = reinterpret_cast<float4*>(s_do + 2 * kKvTileBytes);  // [kScoreTiles][128]
  float* s_lse = reinterpret_cast<float*>(s_p) + kPExchangeBytes / 4;  // [2][kDkvQuery]
  float* s_d = s_lse + 2 * kDkvQuery;                                  // [2][kDkvQuery]
  // mbarriers: full[2], empty[2], K and V.
  const uint32_t bars = smem_address(s_d + 2 * kDkvQuery);
  auto full = [&](int stage) { return bars + 8 * stage; };
  auto empty = [&](int stage) { return bars + 16 + 8 * stage; };
  const uint32_t kv_full = bars + 32;

  const BlockTile tile = block_tile((seq + kBlockK - 1) / kBlockK);
  const int bh = tile.bh;
  const int b = bh / heads, h = bh % heads;
  const int k0 = tile.rank * kBlockK;  // key tile 0 sees the most query tiles
  const int tid = int(threadIdx.x), wg = tid / 128, lane = tid % 32;
  const int warp_key = ((tid / 32) % 4) * 16;  // first key row of this warp within the block
  const int g = lane / 4, c = lane % 4;
  // Warp 4 (of warpgroup 1, which trails) loads: lane 0 the TMA copies, every lane two lse and
  // two D values by cp.async, whose completion also arrives on the stage's full barrier.
  const bool producer_warp = tid / 32 == 4;

  // Query tiles that can see some key of this block: from the one holding query k0 to the end.
  const int first_q_tile = k0 / kDkvQuery;
  const int num_q_tiles = (seq + kDkvQuery - 1) / kDkvQuery - first_q_tile;

  if (tid == 0) {
    for (int stage = 0; stage < 2; ++stage) {
      tma::mbarrier_init(full(stage), 1 + 32);  // the TMA issuer and the 32 lse/D lanes
      tma::mbarrier_init(empty(stage), 8);  // one arrival per warp
    }
    tma::mbarrier_init(kv_full, 1);
  }
  __syncthreads();

  auto load_query_tile = [&](int it, int stage) {  // by the whole producer warp
    const int t0 = (first_q_tile + it) * kDkvQuery;
    if (lane == 0) {
      tma::mbarrier_arrive_expect_tx(full(stage), 2 * kKvTileBytes);
      tma_load_tile<kDkvQuery>(maps.q, s_q + stage * kKvTileBytes, t0, h, b, full(stage));
      tma_load_tile<kDkvQuery>(maps.dout, s_do + stage * kKvTileBytes, t0, h, b, full(stage));
    }
    for (int r = lane; r < kDkvQuery; r += 32) {  // zeros past the sequence
      const bool valid = t0 + r < seq;
      const int64_t at = int64_t(bh) * seq + (valid ? t0 + r : 0);
      cp_async_4(s_lse + stage * kDkvQuery + r, lse + at, valid);
      cp_async_4(s_d + stage * kDkvQuery + r, dsum + at, valid);
    }
    tma::mbarrier_arrive_on_cp_async(full(stage));
  };
  if (producer_warp) {
    if (lane == 0) {
      tma::mbarrier_arrive_expect_tx(kv_full, 2 * kKvTileBytes);
      tma_load_tile<kBlockK>(maps.k, s_k, k0, h, b, kv_full);
      tma_load_tile<kBlockK>(maps.v, s_v, k0, h, b, kv_full);
    }
    load_query_tile(0, 0);
    if (num_q_tiles > 1) load_query_tile(1, 1);
  }
  __syncwarp();  // wgmma instructions need converged warps

  // Warpgroup 0: S^T = K Q^T, then dV += P^T dO; warpgroup 1: dP^T = V dO^T, then dK += dS^T Q.
  const unsigned char* score_a = wg == 0 ? s_k : s_v;
  const unsigned char* score_b = wg == 0 ? s_q : s_do;  // stage 0; stage 1 is kKvTileBytes on
  const unsigned char* acc_b = wg == 0 ? s_do : s_q;

  float acc[kOutTiles][4];  // dV (warpgroup 0) or dK (warpgroup 1): 64 keys x kDh
  zero_tiles(acc);
  tma::mbarrier_wait(kv_full, 0);

  for (int it = 0; it < num_q_tiles; ++it) {
    const int stage = it & 1;
    const int q0 = (first_q_tile + it) * kDkvQuery;
    const bool more = it + 1 < num_q_tiles;
    tma::mbarrier_wait(full(stage), (it >> 1) & 1);
    __syncwarp();
    float sc[kScoreTiles][4];  // S^T or dP^T: keys k0 + warp_key + g (+ 8) x queries q0 + 8 nt..
    scores_mma<Elem, kBlockK>(sc, score_a, 0, score_b + stage * kKvTileBytes);
    if (wg == 0) {
      const float* s_lseb = s_lse + stage * kDkvQuery;
      const bool need_mask = k0 + kBlockK - 1 > q0 || q0 + kDkvQuery > seq || k0 + kBlockK > seq;
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = nt * 8 + 2 * c + (e & 1);
          const int key = k0 + warp_key + g + (e >> 1) * 8, query = q0 + ql;
          const bool masked = need_mask && (key > query || query >= seq || key >= seq);
          sc[nt][e] =
              masked ? 0.0f : exp2_approx(fmaf(sc[nt][e], scale_log2, -s_lseb[ql] * kLog2e));
        }
      if (it > 0) named_barrier_sync(kBarrierPFree, kThreads);
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; ++nt)
        s_p[nt * 128 + tid] = make_float4(sc[nt][0], sc[nt][1], sc[nt][2], sc[nt][3]);
      named_barrier_arrive(kBarrierPReady, kThreads);
    } else {
      const float* s_db = s_d + stage * kDkvQuery;
      named_barrier_sync(kBarrierPReady, kThreads);
#pragma unroll
      for (int nt = 0; nt < kScoreTiles; ++nt) {
        const float4 p = s_p[nt * 128 + tid - 128];
        const float d0 = s_db[nt * 8 + 2 * c], d1 = s_db[nt * 8 + 2 * c + 1];
        sc[nt][0] = p.x * (sc[nt][0] - d0);
        sc[nt][1] = p.y * (sc[nt][1] - d1);
        sc[nt][2] = p.z * (sc[nt][2] - d0);
        sc[nt][3] = p.w * (sc[nt][3] - d1);
      }
      if (more) named_barrier_arrive(kBarrierPFree, kThreads);
    }

    // dV += P^T dO (dK += dS^T Q). Then the stage is free for tile it + 2, a whole tile ahead.
    accumulate_mma<Elem>(acc, sc, acc_b + stage * kKvTileBytes);
    if (lane == 0) tma::mbarrier_arrive(empty(stage));  // this warp is done with the stage
    if (producer_warp && it + 2 < num_q_tiles) {
      tma::mbarrier_wait(empty(stage), (it >> 1) & 1);
      load_query_tile(it + 2, stage);
    }
    __syncwarp();
  }
  __syncthreads();  // both warpgroups are done: the Q and dO stages take dV and dK

  // compute-sanitizer's racecheck reports hazards between these stores and the reads of
  // store_tile below, and on the P^T exchange: it does not model bar.arrive. They are false: the
  // SASS has BAR.SYNC 0 between these, and the exchange is ordered by its two named barriers
  // (docs/troubleshooting.md).
  Elem* stage_out = reinterpret_cast<Elem*>(wg == 0 ? s_q : s_do);  // [kBlockK][kDh + 8]
  store_c<padded_stride<kDh>()>(stage_out, acc, warp_key, 0, wg == 0 ? 1.0f : scale, lane);
  __syncthreads();
  const int64_t row_stride = int64_t(heads) * head_dim;
  const int64_t out_off = token_offset(b, k0, h, seq, heads, head_dim);
  store_tile<kBlockK, kDh, kThreads>(dv + out_off, reinterpret_cast<const Elem*>(s_q), row_stride,
                                     seq - k0, head_dim, tid);
  store_tile<kBlockK, kDh, kThreads>(dk + out_off, reinterpret_cast<const Elem*>(s_do), row_stride,
                                     seq - k0, head_dim, tid);
#else
  __trap();
#endif
}

// The 1-D grid of block_tile: one block per (b, h) and tile of kTileRows tokens.
template <int kTileRows>
dim3 grid_of(int64_t batch, int64_t seq, int64_t heads) {
  const int64_t blocks = batch * heads * ((seq + kTileRows - 1) / kTileRows);
  ZT_CHECK(blocks < (int64_t(1) << 31), "attention: batch * heads * ceil(seq / ", kTileRows,
           ") = ", blocks, " blocks is more than one launch takes (2^31 - 1); batch=", batch,
           " seq=", seq, " heads=", heads);
  return dim3(unsigned(blocks));
}

// cuTensorMapEncodeTiled, from the driver (the runtime has no wrapper; no libcuda link).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    ZT_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                   cudaEnableDefault, &found));
#else
    ZT_CUDA_CHECK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found));
#endif
    ZT_CHECK(found == cudaDriverEntryPointSuccess && fn != nullptr,
             "attention: the CUDA driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12 driver)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A [B, T, H, Dh] 16-bit tensor as TMA boxes of `tokens` tokens (64, or 80 for the forward's
// K and V; tma_load_tile's box_rows) x 64 head columns of one (b, h), 128-byte swizzled as the
// kernels' tiles (wgmma.cuh); elements past T or Dh read as zeros. Dimensions innermost first:
// Dh, H, T, B. check_attention_arguments (attention.cu) has made the base and the rows 16-byte
// aligned, as TMA requires.
CUtensorMap token_map(const void* base, int64_t batch, int64_t seq, int64_t heads,
                      int64_t head_dim, int tokens = 64) {
  const cuuint64_t dims[4] = {cuuint64_t(head_dim), cuuint64_t(heads), cuuint64_t(seq),
                              cuuint64_t(batch)};
  const cuuint64_t strides[3] = {cuuint64_t(head_dim) * 2, cuuint64_t(heads * head_dim) * 2,
                                 cuuint64_t(seq * heads * head_dim) * 2};
  const cuuint32_t box[4] = {64, 1, cuuint32_t(tokens), 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, const_cast<void*>(base), dims, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  ZT_CHECK(r == CUDA_SUCCESS, "attention: cuTensorMapEncodeTiled failed with CUresult ", int(r),
           " for batch=", batch, " seq=", seq, " heads=", heads, " head_dim=", head_dim);
  return map;
}

template <class Elem>
void launch_forward(const CudaContext& ctx, const void* q, const void* k, const void* v, void* out,
                    float* lse, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  auto kernel = attention_forward_sm90_kernel<Elem>;
  detail::allow_dynamic_smem(kernel, kForwardSmem);
  const float scale_log2 = float(kLog2e / std::sqrt(double(head_dim)));
  const ForwardMaps maps{token_map(q, batch, seq, heads, head_dim),
                         token_map(k, batch, seq, heads, head_dim, kForwardKeys),
                         token_map(v, batch, seq, heads, head_dim, kForwardKeys)};
  kernel<<<grid_of<kBlockQ>(batch, seq, heads), kThreads, kForwardSmem, ctx.stream()>>>(
      maps, static_cast<Elem*>(out), lse, int(seq), int(heads), int(head_dim), scale_log2);
  detail::check_launch();
}

template <class Elem>
void launch_backward(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                     const void* v, const void* out, const float* lse, float* dsum, void* dq,
                     void* dk, void* dv, int64_t batch, int64_t seq, int64_t heads,
                     int64_t head_dim) {
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const float scale_log2 = float(scale * kLog2e);
  const BackwardMaps maps{token_map(q, batch, seq, heads, head_dim),
                          token_map(dout, batch, seq, heads, head_dim),
                          token_map(k, batch, seq, heads, head_dim),
                          token_map(v, batch, seq, heads, head_dim)};
  {  // dQ first: it writes the D that the dK/dV kernel reads
    auto kernel = attention_backward_dq_sm90_kernel<Elem>;
    detail::allow_dynamic_smem(kernel, kDqSmem);
    kernel<<<grid_of<kBlockQ>(batch, seq, heads), kThreads, kDqSmem, ctx.stream()>>>(
        maps, static_cast<const Elem*>(out), lse, dsum, static_cast<Elem*>(dq), int(seq),
        int(heads), int(head_dim), float(scale), scale_log2);
    detail::check_launch();
  }
  {
    auto kernel = attention_backward_dkv_sm90_kernel<Elem>;
    detail::allow_dynamic_smem(kernel, kDkvSmem);
    kernel<<<grid_of<kBlockK>(batch, seq, heads), kThreads, kDkvSmem, ctx.stream()>>>(
        maps, lse, dsum, static_cast<Elem*>(dk), static_cast<Elem*>(dv), int(seq), int(heads),
        int(head_dim), float(scale), scale_log2);
    detail::check_launch();
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
#endif  // ZT_CUDA_SM90A

bool attention_sm90_usable(const CudaContext& ctx, int64_t head_dim) {
#if defined(ZT_CUDA_SM90A)
  if (head_dim <= 128 || head_dim > kDh || portable_kernels_forced()) return false;
  return ctx.compute_capability() == 90;
#else
  (void)ctx;
  (void)head_dim;
  return false;
#endif
}

void attention_forward_sm90(const CudaContext& ctx, const void* q, const void* k, const void* v,
                            void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                            int64_t head_dim, DType dt) {
#if defined(ZT_CUDA_SM90A)
  detail::dispatch_16bit(dt, "attention_forward_sm90", [&](auto tag) {
    launch_forward<decltype(tag)>(ctx, q, k, v, out, lse, batch, seq, heads, head_dim);
  });
#else
  (void)ctx, (void)q, (void)k, (void)v, (void)out, (void)lse, (void)batch, (void)seq;
  (void)heads, (void)head_dim, (void)dt;
  ZT_FAIL("attention_forward_sm90: this build has no sm_90a kernels (attention_sm90_usable)");
#endif
}

void attention_backward_sm90(const CudaContext& ctx, const void* dout, const void* q, const void* k,
                             const void* v, const void* out, const float* lse, float* dsum,
                             void* dq, void* dk, void* dv, int64_t batch, int64_t seq,
                             int64_t heads, int64_t head_dim, DType dt) {
#if defined(ZT_CUDA_SM90A)
  detail::dispatch_16bit(dt, "attention_backward_sm90", [&](auto tag) {
    launch_backward<decltype(tag)>(ctx, dout, q, k, v, out, lse, dsum, dq, dk, dv, batch, seq,
                                   heads, head_dim);
  });
#else
  (void)ctx, (void)dout, (void)q, (void)k, (void)v, (void)out, (void)lse, (void)dsum, (void)dq;
  (void)dk, (void)dv, (void)batch, (void)seq, (void)heads, (void)head_dim, (void)dt;
  ZT_FAIL("attention_backward_sm90: this build has no sm_90a kernels (attention_sm90_usable)");
#endif
}

}  // namespace zt::model::cuda
