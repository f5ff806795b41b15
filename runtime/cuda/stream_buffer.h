// StreamBuffer: a move-only device allocation from the stream-ordered pool (cudaMallocAsync /
// cudaFreeAsync on one stream), accounted in the device's MemoryTracker like Buffer.
//
// Use it for memory that lives as long as some queued work (a step's activations, a layer's
// gathered parameters): the free is queued on the stream, so the memory returns to the pool only
// once the work queued before it has run, and the host never waits. Plain C++: includable from
// host code. Only built with ZT_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string_view>

#include "runtime/memory.h"

namespace zt {

class StreamBuffer {
 public:
  StreamBuffer() = default;
  // `bytes` from the default memory pool of `device`, ordered on `stream` (a stream of that
  // device). Throws zt::Error naming `what`, the size, the device's usage per category and what
  // to try when the pool is out of memory. The first call for a device also sets the pool's
  // release threshold to UINT64_MAX, so freed memory stays in the pool for the next step
  // instead of going back to the driver at every synchronisation.
  static StreamBuffer allocate(int device, cudaStream_t stream, size_t bytes, MemCategory category,
                               std::string_view what);
  ~StreamBuffer() { release(); }
  StreamBuffer(StreamBuffer&& other) noexcept;
  StreamBuffer& operator=(StreamBuffer&& other) noexcept;
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  MemCategory category() const { return category_; }
  bool empty() const { return data_ == nullptr; }
  // Queues the free on the stream and un-accounts the bytes now. Never throws (destructors call
  // it); a failed free is ignored, as cudaFree's is in Buffer.
  void release();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  MemCategory category_ = MemCategory::kBuffers;
};

// Sets the release threshold of `device`'s default memory pool to UINT64_MAX (once per device;
// later calls do nothing). StreamBuffer::allocate calls it; exposed for code that allocates from
// the pool by other means (the ops' scratch).
void keep_pool_memory(int device);

}  // namespace zt
