// Owned device/host buffers and per-device memory accounting by category.
//
// Every allocation the framework makes goes through Buffer::allocate with a category, so the
// step log and `zerotrain estimate` speak about the same bytes (params, grads, optimizer state,
// activations, buffers). Tracking is per device: current and peak bytes per category, plus the
// peak of the total (which is not the sum of per-category peaks).
#pragma once

#include <array>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace zt {

enum class MemCategory : uint8_t { kParams, kGrads, kOptimizer, kActivations, kBuffers };
inline constexpr int kNumMemCategories = 5;
std::string_view mem_category_name(MemCategory category);  // "params", "grads", ...

struct MemStats {
  std::array<int64_t, kNumMemCategories> current{};
  std::array<int64_t, kNumMemCategories> peak{};  // peak of each category on its own
  int64_t current_total = 0;
  int64_t peak_total = 0;  // peak of the sum over categories
  // "params 1.00 MiB, grads 1.00 MiB, ..." of current bytes; used in OOM messages and logs.
  std::string describe_current() const;
};

// Thread-safe counters for one device. The process-wide tracker of a device is
// MemoryTracker::of(device); Buffer reports to it.
class MemoryTracker {
 public:
  static MemoryTracker& of(Device device);

  void on_alloc(MemCategory category, size_t bytes);
  void on_free(MemCategory category, size_t bytes);
  MemStats stats() const;
  // Sets each peak to the current value (e.g. to measure one step).
  void reset_peak();

 private:
  mutable std::mutex mutex_;
  MemStats stats_;
};

// An opaque stream handle (a cudaStream_t) for code that must not see CUDA headers.
using StreamHandle = void*;

// An owned, aligned allocation on one device, accounted under one category. Move-only; freed
// (and un-accounted) on destruction.
//
// On a GPU a Buffer is either plain (cudaMalloc/cudaFree: for state that lives all run; the free
// synchronises the device) or stream-ordered (`stream` given: cudaMallocAsync/cudaFreeAsync on
// that stream, from the device's default pool, which keeps freed memory for reuse). Use
// stream-ordered buffers for anything allocated inside a step (activations, gathered layers,
// gradient staging): the free is queued behind the work already on the stream, so the host never
// waits, and work on other streams that uses the memory must be ordered before the free by an
// event wait on that stream (NcclComm::stream_wait).
class Buffer {
 public:
  Buffer() = default;
  // Throws zt::Error naming `what`, the size, the device's usage per category and what to try on
  // failure. `stream` is ignored on the host.
  static Buffer allocate(Device device, size_t bytes, MemCategory category, std::string_view what,
                         StreamHandle stream = nullptr);
  // Page-locked host memory (cudaMallocHost) that GPUs copy to and from at full speed and
  // asynchronously (the offloaded optimizer state, staging of uploads and downloads); plain host
  // memory in a build without CUDA. Accounted on Device::cpu().
  static Buffer allocate_pinned(size_t bytes, MemCategory category, std::string_view what);
  ~Buffer() { release(); }
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return category_; }
  StreamHandle stream() const { return stream_; }
  bool pinned() const { return pinned_; }
  bool empty() const { return data_ == nullptr; }
  // Typed pointer to the start.
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  // Sets every byte to zero (and waits for it).
  void zero();
  // A view of the whole buffer (or its first shape.numel() elements) as a tensor.
  Tensor tensor(DType dtype, const Shape& shape) const;
  void release();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  MemCategory category_ = MemCategory::kBuffers;
  StreamHandle stream_ = nullptr;
  bool pinned_ = false;
};

// Throws the out-of-memory error every allocator of the project gives: what was being allocated,
// how much each category holds on the device, and what to try.
[[noreturn]] void throw_out_of_memory(Device device, size_t bytes, MemCategory category,
                                      std::string_view what);

// Device-specific raw allocation hooks, used by Buffer (CUDA versions live in runtime/cuda/).
// nullptr from raw_allocate means out of memory; `stream` selects the stream-ordered pool on a GPU.
void* raw_allocate(Device device, size_t bytes, StreamHandle stream);
void raw_free(Device device, void* ptr, StreamHandle stream);
void raw_memset_zero(Device device, void* ptr, size_t bytes, StreamHandle stream);

}  // namespace zt
