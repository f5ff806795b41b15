// Token embedding on CUDA: the row gather (forward) and a deterministic scatter-add (backward)
// that sorts the tokens by id and sums each id's rows in position order, without atomics.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "model/cuda/kernels_common.cuh"
#include "model/ops_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace zt::model::cuda {
namespace {

using detail::from_float;
using detail::to_float;

// out[N, D] = wte[ids[i], :]: a copy of 16-bit patterns (no conversion). kVec copies 16 bytes at
// a time (D % 8 == 0, both pointers 16-byte aligned). An id outside [0, vocab) (the caller's to
// prevent) gives a zero row instead of a read outside wte.
template <class Word>
__global__ void embedding_forward_kernel(const int32_t* __restrict__ ids,
                                         const Word* __restrict__ wte, Word* __restrict__ out,
                                         int64_t n, int64_t row_words, int64_t vocab) {
  const int64_t total = n * row_words;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t token = i / row_words;
    const int64_t col = i % row_words;
    const int32_t id = ids[token];
    out[i] = (id >= 0 && id < vocab) ? wte[int64_t(id) * row_words + col] : Word{};
  }
}

__global__ void iota_kernel(int32_t* values, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    values[i] = int32_t(i);
}

// Block (x = sorted index i, y = column tile): when i starts a run of equal ids, the block sums
// the run's dout rows in position order (the radix sort is stable, so positions ascend within a
// run) in fp32 and adds the sum once into dwte[id] (one rounding). Each dwte row is written by the
// blocks of exactly one run, so no two blocks touch the same element.
constexpr int kBackwardThreads = 256;
template <class T>
__global__ void embedding_backward_kernel(const uint32_t* __restrict__ sorted_ids,
                                          const int32_t* __restrict__ positions,
                                          const T* __restrict__ dout, T* __restrict__ dwte,
                                          int64_t n, int64_t d, int64_t vocab) {
  const int64_t start = blockIdx.x;
  const uint32_t id = sorted_ids[start];
  if (start > 0 && sorted_ids[start - 1] == id) return;  // not the first of its run
  if (int64_t(id) >= vocab) return;  // out of range (negative ids are huge as uint32): skipped
  const int64_t col = int64_t(blockIdx.y) * kBackwardThreads + threadIdx.x;
  if (col >= d) return;
  float sum = 0.0f;
  for (int64_t j = start; j < n && sorted_ids[j] == id; ++j)
    sum += to_float(dout[int64_t(positions[j]) * d + col]);
  T* dst = dwte + int64_t(id) * d + col;
  *dst = from_float<T>(to_float(*dst) + sum);
}

}  // namespace

void embedding_forward(const CudaContext& ctx, const int32_t* ids, const void* wte, void* out,
                       int64_t n, int64_t d, DType dt) {
  ZT_CHECK(n >= 0 && d >= 0, "embedding_forward: negative size n=", n, " d=", d);
  ZT_CHECK(dt == DType::kBF16 || dt == DType::kF16, "embedding_forward: dtype ", dtype_name(dt),
           " is not supported (bf16 or fp16)");
  if (n == 0 || d == 0) return;
  // The vocabulary size is not passed here; ids are trusted to be in range (ops_cuda.h). The
  // kernel's range check uses INT32_MAX, i.e. it only rejects negative ids.
  const int64_t vocab = INT32_MAX;
  constexpr int kThreads = 256;
  if (d % detail::kPack == 0 && detail::is_aligned(wte, 16) && detail::is_aligned(out, 16)) {
    const int64_t row_words = d / detail::kPack;
    embedding_forward_kernel<<<detail::grid_for(n * row_words, kThreads), kThreads, 0,
                               ctx.stream()>>>(ids, static_cast<const uint4*>(wte),
                                               static_cast<uint4*>(out), n, row_words, vocab);
  } else {
    embedding_forward_kernel<<<detail::grid_for(n * d, kThreads), kThreads, 0, ctx.stream()>>>(
        ids, static_cast<const uint16_t*>(wte), static_cast<uint16_t*>(out), n, d, vocab);
  }
  detail::check_launch();
}

void embedding_backward(const CudaContext& ctx, const int32_t* ids, const void* dout, void* dwte,
                        int64_t n, int64_t d, int64_t vocab, DType dt) {
  ZT_CHECK(n >= 0 && d >= 0 && vocab >= 0, "embedding_backward: negative size n=", n, " d=", d,
           " vocab=", vocab);
  ZT_CHECK(n <= INT32_MAX, "embedding_backward: ", n, " tokens do not fit int32 positions");
  if (n == 0 || d == 0) return;
  cudaStream_t stream = ctx.stream();
  // Sort (id, position) pairs by id. All 32 key bits are sorted, so an out-of-range id cannot
  // alias a valid one and split its run.
  const uint32_t* keys_in = reinterpret_cast<const uint32_t*>(ids);
  size_t sort_bytes = 0;
  ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, keys_in, static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int(n), 0, 32, stream));
  const size_t array_bytes = detail::round_up(size_t(n) * 4, 256);
  // Scratch: sorted keys, positions in, positions out [N] each, then CUB's temporary storage.
  detail::StreamScratch scratch(stream, 3 * array_bytes + sort_bytes);
  uint32_t* keys_out = scratch.at<uint32_t>(0);
  int32_t* positions_in = scratch.at<int32_t>(array_bytes);
  int32_t* positions_out = scratch.at<int32_t>(2 * array_bytes);
  void* sort_storage = scratch.at<void>(3 * array_bytes);
  constexpr int kThreads = 256;
  iota_kernel<<<detail::grid_for(n, kThreads), kThreads, 0, stream>>>(positions_in, n);
  detail::check_launch();
  ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_storage, sort_bytes, keys_in, keys_out,
                                                positions_in, positions_out, int(n), 0, 32,
                                                stream));
  const int64_t column_tiles = (d + kBackwardThreads - 1) / kBackwardThreads;
  ZT_CHECK(column_tiles <= 65535, "embedding_backward: d=", d, " is too wide");
  const dim3 grid{unsigned(n), unsigned(column_tiles)};
  detail::dispatch_16bit(dt, "embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<<<grid, kBackwardThreads, 0, stream>>>(
        keys_out, positions_out, static_cast<const T*>(dout), static_cast<T*>(dwte), n, d, vocab);
  });
  detail::check_launch();
}

}  // namespace zt::model::cuda
