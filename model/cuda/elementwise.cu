// Elementwise CUDA ops: gelu_new forward and backward, and add3 (the parallel residual sum),
// with 16-byte vector loads when every pointer is 16-byte aligned.
#include <cuda_runtime.h>

#include <cstdint>

#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using detail::from_float;
using detail::kPack;
using detail::Pack8;
using detail::to_float;

// Same constants and expression order as the CPU twin (model/ops/gelu.cpp): the double constants
// rounded to float.
constexpr float kSqrt2OverPi = float(0.7978845608028654);
constexpr float kCubic = float(0.044715);

// y = 0.5 x (1 + tanh(c (x + a x^3)))
struct GeluForward {
  __device__ float operator()(float v, float, float) const {
    return 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + kCubic * (v * v * v))));
  }
};

// dx = dy * gelu'(x), gelu'(x) = 0.5 (1 + th) + 0.5 x (1 - th^2) c (1 + 3 a x^2)
struct GeluBackward {
  __device__ float operator()(float v, float dy, float) const {
    const float th = tanhf(kSqrt2OverPi * (v + kCubic * (v * v * v)));
    const float grad = 0.5f * (1.0f + th) +
                       0.5f * v * (1.0f - th * th) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
    return dy * grad;
  }
};

// out = (a + b) + c
struct Add3 {
  __device__ float operator()(float a, float b, float c) const { return a + b + c; }
};

// out[i] = op(in0[i], in1[i], in2[i]) for kInputs inputs (unused ones are nullptr). With kVec, the
// first n / 8 * 8 elements go as 16-byte packs (all pointers 16-byte aligned), the tail one by one.
// out may alias an input: each element is read before it is written, by the same thread.
template <class T, int kInputs, bool kVec, class Op>
__global__ void map_kernel(const T* in0, const T* in1, const T* in2, T* out, int64_t n, Op op) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = kVec ? n / kPack : 0;
  for (int64_t p = tid; p < packs; p += stride) {
    const int64_t i = p * kPack;
    Pack8<T> a = detail::load_pack(in0 + i), b{}, c{};
    if constexpr (kInputs >= 2) b = detail::load_pack(in1 + i);
    if constexpr (kInputs >= 3) c = detail::load_pack(in2 + i);
    Pack8<T> r;
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float vb = kInputs >= 2 ? to_float(b.v[k]) : 0.0f;
      const float vc = kInputs >= 3 ? to_float(c.v[k]) : 0.0f;
      r.v[k] = from_float<T>(op(to_float(a.v[k]), vb, vc));
    }
    detail::store_pack(out + i, r);
  }
  for (int64_t i = packs * kPack + tid; i < n; i += stride) {
    const float vb = kInputs >= 2 ? to_float(in1[i]) : 0.0f;
    const float vc = kInputs >= 3 ? to_float(in2[i]) : 0.0f;
    out[i] = from_float<T>(op(to_float(in0[i]), vb, vc));
  }
}

template <int kInputs, class Op>
void launch_map(const CudaContext& ctx, const char* what, DType dt, const void* in0,
                const void* in1, const void* in2, void* out, int64_t n, Op op) {
  ZT_CHECK(n >= 0, what, ": negative size ", n);
  if (n == 0) return;
  constexpr int kThreads = 256;
  const bool vec = detail::is_aligned(in0, 16) && detail::is_aligned(in1, 16) &&
                   detail::is_aligned(in2, 16) && detail::is_aligned(out, 16);
  detail::dispatch_16bit(dt, what, [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(in0);
    const T* b = static_cast<const T*>(in1);
    const T* c = static_cast<const T*>(in2);
    T* o = static_cast<T*>(out);
    if (vec) {
      map_kernel<T, kInputs, true>
          <<<detail::grid_for(n / kPack + 1, kThreads), kThreads, 0, ctx.stream()>>>(a, b, c, o, n,
                                                                                     op);
    } else {
      map_kernel<T, kInputs, false>
          <<<detail::grid_for(n, kThreads), kThreads, 0, ctx.stream()>>>(a, b, c, o, n, op);
    }
  });
  detail::check_launch();
}

}  // namespace

void gelu_forward(const CudaContext& ctx, const void* x, void* y, int64_t n, DType dt) {
  launch_map<1>(ctx, "gelu_forward", dt, x, nullptr, nullptr, y, n, GeluForward{});
}

void gelu_backward(const CudaContext& ctx, const void* x, const void* dy, void* dx, int64_t n,
                   DType dt) {
  launch_map<2>(ctx, "gelu_backward", dt, x, dy, nullptr, dx, n, GeluBackward{});
}

void add3(const CudaContext& ctx, const void* a, const void* b, const void* c, void* out, int64_t n,
          DType dt) {
  launch_map<3>(ctx, "add3", dt, a, b, c, out, n, Add3{});
}

}  // namespace zt::model::cuda
