// Private to model/cuda/attention*.cu and their tests: the fused attention kernels' tile sizes,
// their argument check, and a materialising GPU reference (scores in global memory,
// attention_reference.cu) that tests use at shapes too large for the CPU twin. Plain C++ (no
// device code), so host-compiled tests can include it.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "runtime/cuda/context.h"
#include "runtime/dtype.h"

namespace zt::model::cuda {

// Tile sizes of the fused kernels (queries x keys per thread block), fixed for every head dim;
// heads narrower than 64/128/256 run in the next wider kernel with zero-filled columns.
//   forward:        64 queries per block (4 warps, 16 rows each), 64-key tiles
//   backward dK/dV: 64 keys per block (8 warps), 64-query tiles, double-buffered
//   backward dQ:    64 queries per block (4 warps, 16 rows each), 32-key tiles
inline constexpr int kAttentionForwardBlockQ = 64;
inline constexpr int kAttentionForwardBlockK = 64;
inline constexpr int kAttentionDkvBlockK = 64;
inline constexpr int kAttentionDkvBlockQ = 64;
inline constexpr int kAttentionDqBlockQ = 64;
inline constexpr int kAttentionDqBlockK = 32;
inline constexpr int kAttentionMaxHeadDim = 256;

// Throws a message that names `what` unless dt is bf16 or fp16, the sizes are non-negative and
// within the kernels' int indexing, head_dim is a multiple of 8 up to kAttentionMaxHeadDim, and
// every pointer is 16-byte aligned (attention.cu).
void check_attention_arguments(const char* what, int64_t batch, int64_t seq, int64_t heads,
                               int64_t head_dim, DType dt,
                               std::initializer_list<const void*> pointers);

// Sums of absolute values the tests turn into error bounds (see tests/cuda/
// test_attention_cuda.cpp); each is [B, T, H, Dh] fp32 and may be nullptr to skip it.
//   dq_abs  = scale sum_j |dS_ij| |k_jd|     dq_pabs = scale sum_j P_ij |k_jd|
//   dk_abs  = scale sum_i |dS_ij| |q_id|     dk_pabs = scale sum_i P_ij |q_id|
//   dv_abs  =       sum_i  P_ij   |dout_id|
struct AttentionReferenceAbs {
  float* dq_abs = nullptr;
  float* dq_pabs = nullptr;
  float* dk_abs = nullptr;
  float* dk_pabs = nullptr;
  float* dv_abs = nullptr;
};

// The plain, materialising reference of attention_forward: scores and probabilities [B, H, T, T]
// live in fp32 scratch from the stream's pool, every sum accumulates in fp64. q, k, v: [B, T, H,
// Dh] in dt (bf16/fp16); out: [B, T, H, Dh] fp32; lse: [B, H, T] fp32; out_abs (nullptr skips):
// [B, T, H, Dh] fp32, sum_j P_ij |v_jd|.
void attention_reference_forward(const CudaContext& ctx, const void* q, const void* k,
                                 const void* v, float* out, float* lse, float* out_abs,
                                 int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                                 DType dt);
// The reference backward, from the exact definition (D_i = sum_j P_ij dP_ij, not dout . out):
// dq, dk, dv [B, T, H, Dh] fp32 written; `abs` (nullptr skips) receives the sums above.
void attention_reference_backward(const CudaContext& ctx, const void* dout, const void* q,
                                  const void* k, const void* v, float* dq, float* dk, float* dv,
                                  const AttentionReferenceAbs* abs, int64_t batch, int64_t seq,
                                  int64_t heads, int64_t head_dim, DType dt);

}  // namespace zt::model::cuda
