// Host-callable entry points of the CUDA runtime layer (implemented in .cu files). Plain C++:
// includable from host code that must not see CUDA headers. Only built with ZT_WITH_CUDA.
#pragma once

#include <cstddef>

#include "runtime/tensor.h"

namespace zt {

// nullptr when the device is out of memory (Buffer turns that into a descriptive error).
void* cuda_allocate(int device, size_t bytes);
void cuda_free(int device, void* ptr);
// Stream-ordered allocation from the device's default pool (cudaMallocAsync / cudaFreeAsync on
// `stream`, a cudaStream_t of that device); nullptr when the pool is out of memory.
void* cuda_allocate_async(int device, size_t bytes, void* stream);
void cuda_free_async(int device, void* ptr, void* stream);
// Sets the release threshold of `device`'s default memory pool to UINT64_MAX (once per device;
// later calls do nothing): freed memory stays in the pool for the next step instead of going
// back to the driver at every synchronisation. cuda_allocate_async calls it; exposed for code
// that allocates from the pool by other means (the ops' scratch).
void keep_pool_memory(int device);
// The device's memory in bytes (cudaDeviceProp::totalGlobalMem); 0 when it cannot be read.
size_t cuda_total_memory(int device);
// Page-locked host memory (cudaMallocHost); nullptr when the host cannot pin that much.
void* cuda_host_allocate(size_t bytes);
void cuda_host_free(void* ptr);
// Zeroes `bytes` at `ptr` and waits: on `stream` when given (stream-ordered memory), else with
// cudaMemset.
void cuda_memset_zero(int device, void* ptr, size_t bytes, void* stream);
// Copies between any host/device pair (unified addressing) and waits for completion.
void cuda_copy(void* dst, const void* src, size_t bytes);
// Elementwise dtype conversion on the GPU; the CPU twin is convert_cpu (dtype.h).
void convert_cuda(const Tensor& src, const Tensor& dst);
// dst[i] += src[i] for n elements of one dtype, in fp32 (fp64 for fp64) with one rounding, queued
// on `stream` (a cudaStream_t); the CPU twin is accumulate_cpu (dtype.h).
void accumulate_cuda(const void* src, void* dst, size_t n, DType dtype, void* stream);

}  // namespace zt
