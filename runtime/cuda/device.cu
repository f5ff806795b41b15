// CUDA device queries, raw device memory, copies, and the dtype conversion kernel.
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <type_traits>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/device.h"
#include "runtime/dtype.h"

namespace zt {

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int count = 0;
  // No driver or no GPU is not an error here: it means the CUDA backend is unavailable.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

void* cuda_allocate(int device, size_t bytes) {
  ZT_CUDA_CHECK(cudaSetDevice(device));
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return nullptr;
  }
  ZT_CUDA_CHECK(status);
  return ptr;
}

void cuda_free(int device, void* ptr) {
  // Called from destructors: report but never throw.
  if (cudaSetDevice(device) == cudaSuccess) (void)cudaFree(ptr);
}

void keep_pool_memory(int device) {
  static std::mutex mutex;
  static std::set<int> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count(device) != 0) return;
  cudaMemPool_t pool = nullptr;
  ZT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  // The default threshold (0) hands every freed byte back to the driver at the next stream,
  // event or device synchronisation, so each step would pay cudaMalloc's cost again.
  uint64_t threshold = UINT64_MAX;
  ZT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  done.insert(device);
}

void* cuda_allocate_async(int device, size_t bytes, void* stream) {
  ZT_CUDA_CHECK(cudaSetDevice(device));
  keep_pool_memory(device);
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocAsync(&ptr, bytes, static_cast<cudaStream_t>(stream));
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // reset the last error, so later launch checks do not report it
    return nullptr;
  }
  ZT_CUDA_CHECK(status);
  return ptr;
}

void cuda_free_async(int device, void* ptr, void* stream) {
  // Called from destructors: never throws; a failed free is ignored as cudaFree's is.
  if (cudaSetDevice(device) == cudaSuccess) (void)cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream));
}

void* cuda_host_allocate(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocHost(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return nullptr;
  }
  ZT_CUDA_CHECK(status);
  return ptr;
}

void cuda_host_free(void* ptr) { (void)cudaFreeHost(ptr); }

size_t cuda_total_memory(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();  // clear it: a failed query only loses a hint
    return 0;
  }
  return prop.totalGlobalMem;
}

void cuda_memset_zero(int device, void* ptr, size_t bytes, void* stream) {
  ZT_CUDA_CHECK(cudaSetDevice(device));
  if (stream == nullptr) {
    ZT_CUDA_CHECK(cudaMemset(ptr, 0, bytes));
    return;
  }
  const auto s = static_cast<cudaStream_t>(stream);
  ZT_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_copy(void* dst, const void* src, size_t bytes) {
  ZT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

namespace {

__global__ void convert_kernel(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                               size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    store_from_double(dst, dst_dtype, i, load_as_double(src, src_dtype, i));
}

template <class T>
__global__ void accumulate_kernel(const T* src, T* dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, bf16>) {
      dst[i] = float_to_bf16(bf16_to_float(dst[i]) + bf16_to_float(src[i]));
    } else if constexpr (std::is_same_v<T, f16>) {
      dst[i] = float_to_f16(f16_to_float(dst[i]) + f16_to_float(src[i]));
    } else {
      dst[i] = dst[i] + src[i];
    }
  }
}

}  // namespace

void accumulate_cuda(const void* src, void* dst, size_t n, DType dtype, void* stream) {
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<size_t>((n + threads - 1) / threads, 4096));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kF32:
      accumulate_kernel<<<blocks, threads, 0, s>>>(static_cast<const float*>(src), static_cast<float*>(dst), n);
      break;
    case DType::kF64:
      accumulate_kernel<<<blocks, threads, 0, s>>>(static_cast<const double*>(src), static_cast<double*>(dst), n);
      break;
    case DType::kBF16:
      accumulate_kernel<<<blocks, threads, 0, s>>>(static_cast<const bf16*>(src), static_cast<bf16*>(dst), n);
      break;
    case DType::kF16:
      accumulate_kernel<<<blocks, threads, 0, s>>>(static_cast<const f16*>(src), static_cast<f16*>(dst), n);
      break;
  }
  ZT_CUDA_CHECK(cudaGetLastError());
}

void convert_cuda(const Tensor& src, const Tensor& dst) {
  ZT_CHECK(src.device.is_cuda() && dst.device == src.device, "convert_cuda needs both tensors on ",
           "one CUDA device, got ", src.str(), " and ", dst.str());
  ZT_CHECK(src.numel() == dst.numel(), "convert_cuda: ", src.str(), " vs ", dst.str());
  const size_t n = size_t(src.numel());
  if (n == 0) return;
  ZT_CUDA_CHECK(cudaSetDevice(src.device.index));
  const int threads = 256;
  const int blocks = int(std::min<size_t>((n + threads - 1) / threads, 65535));
  convert_kernel<<<blocks, threads>>>(src.data, src.dtype, dst.data, dst.dtype, n);
  ZT_CUDA_CHECK(cudaGetLastError());
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace zt
