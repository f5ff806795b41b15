// Private helpers of the CUDA ops in model/cuda/: 16-bit load/store, 16-byte packs, warp
// reductions, launch and stream-ordered scratch helpers, ZT_CUBLAS_CHECK, the deterministic
// column-sum finish shared by linear and layernorm backward, and the cuBLASLt matmul entry point
// that gemm.cu implements and linear.cu uses with epilogues.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

// ZT_CUBLAS_CHECK: the cuBLAS(Lt) member of the check-macro family (DESIGN.md section 9): reports
// the expression, file:line and the status name.
#define ZT_CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                          \
    const cublasStatus_t zt_cublas_status_ = (expr);                                            \
    if (zt_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                \
      ::zt::detail::throw_check_failure(                                                        \
          __FILE__, __LINE__, #expr,                                                            \
          ::zt::detail::concat("cuBLAS error ", cublasLtGetStatusName(zt_cublas_status_), ": ", \
                               cublasLtGetStatusString(zt_cublas_status_)));                    \
  } while (0)

namespace zt::model::cuda::detail {

// ---------------------------------------------------------------------------------------------
// 16-bit storage types. Kernels are templated on the CUDA type T (__nv_bfloat16 or __half); all
// arithmetic is fp32 and every stored result is rounded once, to nearest even (the same rounding
// as zt::float_to_bf16 / float_to_f16 on the host).

__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// Eight 16-bit values: one 16-byte load or store (the widest a thread issues).
inline constexpr int kPack = 8;
template <class T>
struct alignas(16) Pack8 {
  T v[kPack];
};

template <class T>
__device__ __forceinline__ Pack8<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack8<T>*>(p);
}
template <class T>
__device__ __forceinline__ void store_pack(T* p, const Pack8<T>& pack) {
  *reinterpret_cast<Pack8<T>*>(p) = pack;
}

// Calls f(T{}) with T the CUDA type of a 16-bit dtype; any other dtype is an error naming `what`.
template <class F>
void dispatch_16bit(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::kBF16:
      f(__nv_bfloat16{});
      return;
    case DType::kF16:
      f(__half{});
      return;
    default:
      ZT_FAIL(what, ": dtype ", dtype_name(dt),
              " is not supported (the CUDA ops take bf16 or fp16)");
  }
}

// True when p is aligned to `bytes` (a power of two).
inline bool is_aligned(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// ---------------------------------------------------------------------------------------------
// Launch helpers.

inline constexpr int kWarp = 32;

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU many times over, capped
// so the grid stays within limits for any size (kernels loop over the rest).
inline unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(blocks, 1, int64_t(1) << 20));
}

inline void check_launch() { ZT_CUDA_CHECK(cudaGetLastError()); }

// Lets `kernel` take `bytes` of dynamic shared memory (above the default 48 KiB) before a launch.
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, int bytes) {
  ZT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// ---------------------------------------------------------------------------------------------
// Reductions. A fixed shuffle tree: the same inputs give the same bits on every run.

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;  // every lane holds the same sum (a + b == b + a exactly)
}

// ---------------------------------------------------------------------------------------------
// Stream-ordered scratch memory: allocated from the device's memory pool on `stream` and freed on
// it, so the memory is reused only after the kernels queued before the free have finished.
class StreamScratch {
 public:
  StreamScratch(cudaStream_t stream, size_t bytes) : stream_(stream) {
    if (bytes > 0) ZT_CUDA_CHECK(cudaMallocAsync(&data_, bytes, stream_));
  }
  ~StreamScratch() {
    if (data_ != nullptr) (void)cudaFreeAsync(data_, stream_);  // destructors never throw
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;

  // Byte `offset` into the scratch as T* (callers keep offsets 256-byte aligned).
  template <class T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(data_) + offset);
  }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
};

inline size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// ---------------------------------------------------------------------------------------------
// Deterministic column sums (db of linear, dw/db of layernorm), in two kernels:
//  1. partial sums: block (x = column tile of 32, y = chunk of kColumnSumRows rows) sums its rows
//     in fp32 in a fixed order into partial[chunk, col];
//  2. add_column_partials_kernel sums partial[0..chunks, col] in chunk order and adds the total
//     once into the dt vector (one rounding).
// The chunking depends only on the row count, never on the GPU, so the bits are reproducible.
inline constexpr int kColumnTile = 32;
inline constexpr int kColumnRowThreads = 8;
inline constexpr int64_t kColumnSumRows = 128;

inline int64_t column_chunks(int64_t rows) { return (rows + kColumnSumRows - 1) / kColumnSumRows; }

// out[col] = round(out[col] + sum_c partial[c, col]); partial is [chunks, cols] fp32.
template <class T>
__global__ void add_column_partials_kernel(const float* __restrict__ partial, int64_t chunks,
                                           int64_t cols, T* __restrict__ out) {
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float sum = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[c * cols + col];
  out[col] = from_float<T>(to_float(out[col]) + sum);
}

// Reduces the [kColumnRowThreads][kColumnTile] per-thread sums of one block over its rows (fixed
// order) and writes them to partial[blockIdx.y, col]. Contains __syncthreads.
__device__ __forceinline__ void write_column_partial(float sum, float (*tile)[kColumnTile + 1],
                                                     float* partial, int64_t cols) {
  tile[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  const int64_t col = int64_t(blockIdx.x) * kColumnTile + threadIdx.x;
  if (threadIdx.y == 0 && col < cols) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < kColumnRowThreads; ++r) total += tile[r][threadIdx.x];
    partial[int64_t(blockIdx.y) * cols + col] = total;
  }
}

// ---------------------------------------------------------------------------------------------
// cuBLASLt matmul with an optional epilogue (implemented in gemm.cu).
//
// Row-major semantics of cpu::gemm: C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C, then
// the epilogue. What callers must guarantee:
// - A, B, C (and bias, aux) are device pointers aligned to at least their element size; the fast
//   kernels want 16-byte aligned pointers and leading dimensions that are multiples of 8 elements
//   (the engine's flat layout aligns every parameter to 16 elements, activations come from
//   256-byte aligned allocations). Smaller alignments work but may get slower kernels: the plan
//   tells cuBLASLt each pointer's alignment (capped at 16 bytes, so that results do not depend
//   on where a well-aligned buffer lies).
// - Results are reproducible: one algorithm per plan, and split-K only with fp32 partial sums
//   reduced in a fixed order.
// - Epilogues see C as the column-major [N, M] matrix cuBLASLt computes (C^T = op(B)^T op(A)^T):
//   the bias has N elements (one per row-major column) and the GELU aux matrix is row-major
//   [M, N] with leading dimension aux_ld (a multiple of 8, at least N).
enum class Epilogue : uint8_t {
  kNone,         // C only
  kBias,         // C = alpha AB + beta C + bias (broadcast over rows)
  kGeluAux,      // aux = alpha AB + beta C; C = gelu(aux)
  kGeluAuxBias,  // aux = alpha AB + beta C + bias; C = gelu(aux)
};

struct MatmulArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  float beta = 0.0f;
  void* c = nullptr;
  int64_t ldc = 0;
  DType ab_dtype = DType::kBF16;
  DType c_dtype = DType::kBF16;
  Epilogue epilogue = Epilogue::kNone;
  const void* bias = nullptr;  // c_dtype, [N]
  void* aux = nullptr;         // c_dtype, row-major [M, N] with aux_ld
  int64_t aux_ld = 0;
};

// Throws when cuBLASLt has no algorithm for the problem; try_matmul returns false instead (then
// nothing is queued), so callers can fall back from an epilogue to separate kernels.
void matmul(const CudaContext& ctx, const MatmulArgs& args);
bool try_matmul(const CudaContext& ctx, const MatmulArgs& args);

}  // namespace zt::model::cuda::detail
