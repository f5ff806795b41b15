// StreamBuffer: stream-ordered device allocations from the default memory pool, with accounting
// and the out-of-memory message of Buffer::allocate.
#include "runtime/cuda/stream_buffer.h"

#include <cstdint>
#include <mutex>
#include <set>

#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/log.h"

namespace zt {

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

StreamBuffer StreamBuffer::allocate(int device, cudaStream_t stream, size_t bytes,
                                    MemCategory category, std::string_view what) {
  StreamBuffer b;
  b.device_ = device;
  b.stream_ = stream;
  b.category_ = category;
  if (bytes == 0) return b;
  keep_pool_memory(device);
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocAsync(&ptr, bytes, stream);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // reset the last error, so later launch checks do not report it
    throw_out_of_memory(Device::cuda(device), bytes, category, what);
  }
  ZT_CUDA_CHECK(status);
  b.data_ = ptr;
  b.bytes_ = bytes;
  MemoryTracker::of(Device::cuda(device)).on_alloc(category, bytes);
  return b;
}

StreamBuffer::StreamBuffer(StreamBuffer&& other) noexcept
    : data_(other.data_),
      bytes_(other.bytes_),
      device_(other.device_),
      stream_(other.stream_),
      category_(other.category_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

StreamBuffer& StreamBuffer::operator=(StreamBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    bytes_ = other.bytes_;
    device_ = other.device_;
    stream_ = other.stream_;
    category_ = other.category_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void StreamBuffer::release() {
  if (data_ == nullptr) return;
  (void)cudaFreeAsync(data_, stream_);
  MemoryTracker::of(Device::cuda(device_)).on_free(category_, bytes_);
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace zt
