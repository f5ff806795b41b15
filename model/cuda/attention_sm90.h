// Hopper (sm_90a) versions of the fused attention kernels of attention.cu, on warpgroup MMAs
// (wgmma): the forward and the two backward kernels. They take the same arguments and give
// results within the same bounds (P and dS are rounded to the 16-bit type in the same places);
// attention.cu calls them when attention_sm90_usable() says so.
#pragma once

#include <cstdint>

#include "runtime/cuda/context.h"
#include "runtime/dtype.h"

namespace zt::model::cuda {

// True when the build has sm_90a code (ZT_CUDA_ARCHITECTURES contains 90a), ctx's GPU has
// compute capability 9.0, the head dim runs in the 256-wide kernels (129..256), and the
// environment variable ZT_ATTENTION_KERNEL is not "portable" (which forces the mma.sync kernels,
// for comparisons and as a way around a suspected kernel fault).
bool attention_sm90_usable(const CudaContext& ctx, int64_t head_dim);

// As attention_forward (ops_cuda.h), arguments already checked.
void attention_forward_sm90(const CudaContext& ctx, const void* q, const void* k, const void* v,
                            void* out, float* lse, int64_t batch, int64_t seq, int64_t heads,
                            int64_t head_dim, DType dt);

// dq, dk, dv of attention_backward from lse ([B, H, T] fp32). dsum ([B, H, T] fp32 scratch)
// receives D = rowsum(dout * out), which the dQ kernel computes for its rows and the dK/dV
// kernel, launched after it, reads.
void attention_backward_sm90(const CudaContext& ctx, const void* dout, const void* q,
                             const void* k, const void* v, const void* out, const float* lse,
                             float* dsum, void* dq, void* dk, void* dv, int64_t batch,
                             int64_t seq, int64_t heads, int64_t head_dim, DType dt);

}  // namespace zt::model::cuda
