// Rotary position embedding on CUDA, GPT-J style (interleaved pairs on the first rotary_dim dims
// of each head), in place, forward and backward, with angles computed as the CPU float path does.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using detail::from_float;
using detail::to_float;

// head_dim is at most 256 (DESIGN.md: Dh up to 256), so at most 128 pairs per head.
constexpr int kMaxPairs = 128;

// inv_freq[i] = 1 / 10000^(2i / rotary_dim), computed on the host with the same powf and fp32
// expression as the CPU twin (model/ops/rotary.cpp) and passed by value (512 bytes of kernel
// parameters), so both sides start from bit-identical frequencies; only sinf/cosf may then differ
// by an ulp or two between CUDA and glibc.
struct InvFreq {
  float v[kMaxPairs];
};

// One thread per rotated pair (row = token, h, i) of x[B, T, H, Dh]:
//   forward:  out[2i] = x[2i] cos - x[2i+1] sin, out[2i+1] = x[2i+1] cos + x[2i] sin
//   backward: the same rotation by the negative angle (its transpose).
template <class T, bool kInverse>
__global__ void rotary_kernel(T* x, int64_t pairs_total, int64_t seq, int64_t heads,
                              int64_t head_dim, int pairs, InvFreq inv_freq) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < pairs_total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(idx % pairs);
    const int64_t head_row = idx / pairs;  // (token, h)
    const int64_t token = head_row / heads;
    const int64_t pos = token % seq;
    const float angle = float(pos) * inv_freq.v[i];
    const float c = cosf(angle);
    const float s = sinf(angle);
    T* xh = x + head_row * head_dim + 2 * i;
    const float x0 = to_float(xh[0]);
    const float x1 = to_float(xh[1]);
    if constexpr (!kInverse) {
      xh[0] = from_float<T>(x0 * c - x1 * s);
      xh[1] = from_float<T>(x1 * c + x0 * s);
    } else {
      xh[0] = from_float<T>(x0 * c + x1 * s);
      xh[1] = from_float<T>(x1 * c - x0 * s);
    }
  }
}

template <bool kInverse>
void rotate(const CudaContext& ctx, void* x, int64_t batch, int64_t seq, int64_t heads,
            int64_t head_dim, int64_t rotary_dim, DType dt, const char* what) {
  ZT_CHECK(batch >= 0 && seq >= 0 && heads >= 0 && head_dim >= 0, what, ": negative size");
  ZT_CHECK(rotary_dim >= 0 && rotary_dim <= head_dim && rotary_dim % 2 == 0, what, ": rotary_dim ",
           rotary_dim, " must be even and at most head_dim ", head_dim);
  ZT_CHECK(rotary_dim / 2 <= kMaxPairs, what, ": rotary_dim ", rotary_dim, " is above ",
           2 * kMaxPairs);
  const int pairs = int(rotary_dim / 2);
  const int64_t pairs_total = batch * seq * heads * pairs;
  if (pairs_total == 0) return;
  InvFreq inv_freq{};
  for (int i = 0; i < pairs; ++i)
    inv_freq.v[i] = 1.0f / powf(10000.0f, float(2 * i) / float(rotary_dim));
  constexpr int kThreads = 256;
  detail::dispatch_16bit(dt, what, [&](auto tag) {
    using T = decltype(tag);
    rotary_kernel<T, kInverse>
        <<<detail::grid_for(pairs_total, kThreads), kThreads, 0, ctx.stream()>>>(
            static_cast<T*>(x), pairs_total, seq, heads, head_dim, pairs, inv_freq);
  });
  detail::check_launch();
}

}  // namespace

void rotary_forward(const CudaContext& ctx, void* x, int64_t batch, int64_t seq, int64_t heads,
                    int64_t head_dim, int64_t rotary_dim, DType dt) {
  rotate<false>(ctx, x, batch, seq, heads, head_dim, rotary_dim, dt, "rotary_forward");
}

// The rotation is orthogonal, so its gradient is the rotation by the negative angle.
void rotary_backward(const CudaContext& ctx, void* dx, int64_t batch, int64_t seq, int64_t heads,
                     int64_t head_dim, int64_t rotary_dim, DType dt) {
  rotate<true>(ctx, dx, batch, seq, heads, head_dim, rotary_dim, dt, "rotary_backward");
}

}  // namespace zt::model::cuda
