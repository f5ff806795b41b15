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

// An owned, aligned allocation on one device, accounted under one category. Move-only; freed
// (and un-accounted) on destruction.
class Buffer {
 public:
  Buffer() = default;
  // Throws zt::Error naming `what`, the size and the device's usage per category on failure.
  static Buffer allocate(Device device, size_t bytes, MemCategory category, std::string_view what);
  ~Buffer() { release(); }
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return category_; }
  bool empty() const { return data_ == nullptr; }
  // Sets every byte to zero.
  void zero();
  // A view of the whole buffer (or its first shape.numel() elements) as a tensor.
  Tensor tensor(DType dtype, const Shape& shape) const;
  void release();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  MemCategory category_ = MemCategory::kBuffers;
};

// Throws the out-of-memory error every allocator of the project gives: what was being allocated,
// how much each category holds on the device, and what to try.
[[noreturn]] void throw_out_of_memory(Device device, size_t bytes, MemCategory category,
                                      std::string_view what);

// Device-specific raw allocation hooks, used by Buffer (CUDA versions live in runtime/cuda/).
void* raw_allocate(Device device, size_t bytes);
void raw_free(Device device, void* ptr);
void raw_memset_zero(Device device, void* ptr, size_t bytes);

}  // namespace zt
