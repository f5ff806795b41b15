// The materialising attention reference of ops_cuda.h (attention_reference_forward/backward):
// plain kernels over [B, H, T, T] fp32 matrices in global memory with fp64 accumulation, for the
// tests of the fused kernels (attention.cu, attention_sm90.cu). Never used in training.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "model/cuda/attention_ptx.cuh"
#include "model/cuda/attention_tiles.cuh"
#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace zt::model::cuda {

using namespace attention_detail;  // model/cuda/attention_ptx.cuh

namespace {

constexpr int kRefTile = 16;

__device__ __forceinline__ double load_elem(const void* p, DType dt, int64_t i) {
  return load_as_double(p, dt, size_t(i));
}

// m[bh, i, j] = scale * x_i . y_j for j <= i, `fill` above the diagonal. x, y: [B, T, H, Dh].
// Block (16, 16): a 16 x 16 tile of (i, j); x and y chunks staged in shared memory.
__global__ void ref_scores_kernel(const void* x, const void* y, DType dt, float* m, int seq,
                                  int heads, int head_dim, double scale, float fill) {
  __shared__ double xs[kRefTile][kRefTile + 1];
  __shared__ double ys[kRefTile][kRefTile + 1];
  const int bh = blockIdx.z;
  const int b = bh / heads, h = bh % heads;
  const int i0 = blockIdx.y * kRefTile, j0 = blockIdx.x * kRefTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i = i0 + ty, j = j0 + tx;
  double acc = 0.0;
  if (j0 <= i0 + kRefTile - 1) {  // the tile touches the causal triangle (uniform per block)
    for (int d0 = 0; d0 < head_dim; d0 += kRefTile) {
      const int d = d0 + tx;
      // Row ty of each staged chunk: x[i0 + ty, d0 + tx], y[j0 + ty, d0 + tx].
      xs[ty][tx] = (i0 + ty < seq && d < head_dim)
                       ? load_elem(x, dt, token_offset(b, i0 + ty, h, seq, heads, head_dim) + d)
                       : 0.0;
      ys[ty][tx] = (j0 + ty < seq && d < head_dim)
                       ? load_elem(y, dt, token_offset(b, j0 + ty, h, seq, heads, head_dim) + d)
                       : 0.0;
      __syncthreads();
      for (int dd = 0; dd < kRefTile; ++dd) acc += xs[ty][dd] * ys[tx][dd];
      __syncthreads();
    }
  }
  if (i < seq && j < seq) m[(int64_t(bh) * seq + i) * seq + j] = j <= i ? float(acc * scale) : fill;
}

// Block-wide sum (blockDim.x = 256) in a fixed order; all threads get the result.
__device__ double block_sum(double x, double* scratch) {
  scratch[threadIdx.x] = x;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (int(threadIdx.x) < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
    __syncthreads();
  }
  const double r = scratch[0];
  __syncthreads();
  return r;
}

__device__ double block_max(double x, double* scratch) {
  scratch[threadIdx.x] = x;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (int(threadIdx.x) < s)
      scratch[threadIdx.x] = fmax(scratch[threadIdx.x], scratch[threadIdx.x + s]);
    __syncthreads();
  }
  const double r = scratch[0];
  __syncthreads();
  return r;
}

// One block per row (bh, i): scores -> probabilities in place (0 above the diagonal), and
// lse[bh, i] = max + log(sum exp(score - max)).
__global__ void ref_softmax_kernel(float* m, float* lse, int seq) {
  __shared__ double scratch[256];
  const int64_t row = blockIdx.x;  // bh * seq + i
  const int i = int(row % seq);
  float* r = m + row * seq;
  double mx = -INFINITY;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) mx = fmax(mx, double(r[j]));
  mx = block_max(mx, scratch);
  double sum = 0.0;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) sum += exp(double(r[j]) - mx);
  sum = block_sum(sum, scratch);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    r[j] = j <= i ? float(exp(double(r[j]) - mx) / sum) : 0.0f;
  if (threadIdx.x == 0 && lse != nullptr) lse[row] = float(mx + log(sum));
}

// One block per row: D = sum_j P_ij dP_ij; dP -> dS = P (dP - D) in place.
__global__ void ref_ds_kernel(const float* p, float* dp, int seq) {
  __shared__ double scratch[256];
  const int64_t row = blockIdx.x;
  const int i = int(row % seq);
  const float* pr = p + row * seq;
  float* dr = dp + row * seq;
  double sum = 0.0;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) sum += double(pr[j]) * double(dr[j]);
  sum = block_sum(sum, scratch);
  for (int j = threadIdx.x; j < seq; j += blockDim.x)
    dr[j] = j <= i ? float(double(pr[j]) * (double(dr[j]) - sum)) : 0.0f;
}

// One thread per output element (b, t, h, d); out is [B, T, H, Dh] fp32.
//   by_row:  out[b, i, h, d] = scale sum_{j <= i} f(M[bh, i, j]) g(x[b, j, h, d])
//   !by_row: out[b, j, h, d] = scale sum_{i >= j} f(M[bh, i, j]) g(x[b, i, h, d])
// with f, g the identity or |.| (abs_m, abs_x).
__global__ void ref_apply_kernel(const float* m, const void* x, DType dt, float* out, int batch,
                                 int seq, int heads, int head_dim, double scale, bool by_row,
                                 bool abs_m, bool abs_x) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = int64_t(batch) * seq * heads * head_dim;
  if (idx >= total) return;
  const int d = int(idx % head_dim);
  const int h = int((idx / head_dim) % heads);
  const int t = int((idx / (int64_t(head_dim) * heads)) % seq);
  const int b = int(idx / (int64_t(head_dim) * heads * seq));
  const int64_t bh = int64_t(b) * heads + h;
  const float* mat = m + bh * seq * seq;
  double acc = 0.0;
  const int lo = by_row ? 0 : t;
  const int hi = by_row ? t : seq - 1;
  for (int s = lo; s <= hi; ++s) {
    double mv = by_row ? mat[int64_t(t) * seq + s] : mat[int64_t(s) * seq + t];
    double xv = load_elem(x, dt, token_offset(b, s, h, seq, heads, head_dim) + d);
    if (abs_m) mv = fabs(mv);
    if (abs_x) xv = fabs(xv);
    acc += mv * xv;
  }
  out[idx] = float(acc * scale);
}

// P [B, H, T, T] from q, k (and lse when asked).
void ref_probs(const CudaContext& ctx, const void* q, const void* k, float* p, float* lse,
               int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, DType dt) {
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const unsigned tiles = unsigned((seq + kRefTile - 1) / kRefTile);
  ref_scores_kernel<<<dim3(tiles, tiles, unsigned(batch * heads)), dim3(kRefTile, kRefTile), 0,
                      ctx.stream()>>>(q, k, dt, p, int(seq), int(heads), int(head_dim), scale,
                                      -INFINITY);
  detail::check_launch();
  ref_softmax_kernel<<<unsigned(batch * heads * seq), 256, 0, ctx.stream()>>>(p, lse, int(seq));
  detail::check_launch();
}

void ref_apply(const CudaContext& ctx, const float* m, const void* x, DType dt, float* out,
               int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, double scale,
               bool by_row, bool abs_m, bool abs_x) {
  const int64_t total = batch * seq * heads * head_dim;
  ref_apply_kernel<<<unsigned((total + 255) / 256), 256, 0, ctx.stream()>>>(
      m, x, dt, out, int(batch), int(seq), int(heads), int(head_dim), scale, by_row, abs_m, abs_x);
  detail::check_launch();
}

}  // namespace

void attention_reference_forward(const CudaContext& ctx, const void* q, const void* k,
                                 const void* v, float* out, float* lse, float* out_abs,
                                 int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                                 DType dt) {
  check_attention_arguments("attention_reference_forward", batch, seq, heads, head_dim, dt, {});
  if (batch == 0 || seq == 0 || heads == 0) return;
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  detail::StreamScratch p(ctx.stream(), size_t(batch * heads * seq * seq) * sizeof(float));
  float* probs = p.at<float>(0);
  ref_probs(ctx, q, k, probs, lse, batch, seq, heads, head_dim, dt);
  ref_apply(ctx, probs, v, dt, out, batch, seq, heads, head_dim, 1.0, true, false, false);
  if (out_abs != nullptr)
    ref_apply(ctx, probs, v, dt, out_abs, batch, seq, heads, head_dim, 1.0, true, false, true);
}

void attention_reference_backward(const CudaContext& ctx, const void* dout, const void* q,
                                  const void* k, const void* v, float* dq, float* dk, float* dv,
                                  const AttentionReferenceAbs* abs, int64_t batch, int64_t seq,
                                  int64_t heads, int64_t head_dim, DType dt) {
  check_attention_arguments("attention_reference_backward", batch, seq, heads, head_dim, dt, {});
  if (batch == 0 || seq == 0 || heads == 0) return;
  ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
  const double scale = 1.0 / std::sqrt(double(head_dim));
  const size_t matrix_bytes = size_t(batch * heads * seq * seq) * sizeof(float);
  detail::StreamScratch p_scratch(ctx.stream(), matrix_bytes);
  detail::StreamScratch ds_scratch(ctx.stream(), matrix_bytes);
  float* p = p_scratch.at<float>(0);
  float* ds = ds_scratch.at<float>(0);
  ref_probs(ctx, q, k, p, nullptr, batch, seq, heads, head_dim, dt);
  // dP = dout v^T (lower triangle), then dS = P (dP - D) in place.
  const unsigned tiles = unsigned((seq + kRefTile - 1) / kRefTile);
  ref_scores_kernel<<<dim3(tiles, tiles, unsigned(batch * heads)), dim3(kRefTile, kRefTile), 0,
                      ctx.stream()>>>(dout, v, dt, ds, int(seq), int(heads), int(head_dim), 1.0,
                                      0.0f);
  detail::check_launch();
  const unsigned rows = unsigned(batch * heads * seq);
  ref_ds_kernel<<<rows, 256, 0, ctx.stream()>>>(p, ds, int(seq));
  detail::check_launch();
  ref_apply(ctx, ds, k, dt, dq, batch, seq, heads, head_dim, scale, true, false, false);
  ref_apply(ctx, ds, q, dt, dk, batch, seq, heads, head_dim, scale, false, false, false);
  ref_apply(ctx, p, dout, dt, dv, batch, seq, heads, head_dim, 1.0, false, false, false);
  if (abs == nullptr) return;
  if (abs->dq_pabs != nullptr)
    ref_apply(ctx, p, k, dt, abs->dq_pabs, batch, seq, heads, head_dim, scale, true, false, true);
  if (abs->dk_pabs != nullptr)
    ref_apply(ctx, p, q, dt, abs->dk_pabs, batch, seq, heads, head_dim, scale, false, false, true);
  if (abs->dv_abs != nullptr)
    ref_apply(ctx, p, dout, dt, abs->dv_abs, batch, seq, heads, head_dim, 1.0, false, false, true);
  if (abs->dq_abs != nullptr)
    ref_apply(ctx, ds, k, dt, abs->dq_abs, batch, seq, heads, head_dim, scale, true, true, true);
  if (abs->dk_abs != nullptr)
    ref_apply(ctx, ds, q, dt, abs->dk_abs, batch, seq, heads, head_dim, scale, false, true, true);
}

}  // namespace zt::model::cuda
