// Memory accounting per device and the owned Buffer; host allocation lives here.
#include "runtime/memory.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <sstream>

#include "runtime/log.h"
#ifdef ZT_WITH_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

namespace zt {

std::string_view mem_category_name(MemCategory category) {
  switch (category) {
    case MemCategory::kParams: return "params";
    case MemCategory::kGrads: return "grads";
    case MemCategory::kOptimizer: return "optimizer";
    case MemCategory::kActivations: return "activations";
    case MemCategory::kBuffers: return "buffers";
  }
  return "unknown";
}

std::string MemStats::describe_current() const {
  std::ostringstream os;
  for (int c = 0; c < kNumMemCategories; ++c)
    os << (c ? ", " : "") << mem_category_name(MemCategory(c)) << " "
       << format_bytes(double(current[c]));
  os << " (total " << format_bytes(double(current_total)) << ")";
  return os.str();
}

MemoryTracker& MemoryTracker::of(Device device) {
  static std::mutex registry_mutex;
  static std::map<std::pair<int, int>, std::unique_ptr<MemoryTracker>> registry;
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto& slot = registry[{int(device.kind), device.index}];
  if (!slot) slot = std::make_unique<MemoryTracker>();
  return *slot;
}

void MemoryTracker::on_alloc(MemCategory category, size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int c = int(category);
  stats_.current[c] += int64_t(bytes);
  stats_.current_total += int64_t(bytes);
  if (stats_.current[c] > stats_.peak[c]) stats_.peak[c] = stats_.current[c];
  if (stats_.current_total > stats_.peak_total) stats_.peak_total = stats_.current_total;
}

void MemoryTracker::on_free(MemCategory category, size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.current[int(category)] -= int64_t(bytes);
  stats_.current_total -= int64_t(bytes);
}

MemStats MemoryTracker::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void MemoryTracker::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak = stats_.current;
  stats_.peak_total = stats_.current_total;
}

namespace {

constexpr size_t kHostAlignment = 64;  // a cache line; also enough for AVX-512 loads

void require_cuda_build(Device device) {
#ifndef ZT_WITH_CUDA
  ZT_CHECK(device.is_cpu(), "device ", device.str(),
           " requested, but this zerotrain was built without CUDA (configure with -DZT_CUDA=ON "
           "on a machine with the CUDA toolkit)");
#endif
}

}  // namespace

void* raw_allocate(Device device, size_t bytes, [[maybe_unused]] StreamHandle stream) {
  if (device.is_cpu())
    return std::aligned_alloc(kHostAlignment, (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment);
  require_cuda_build(device);
#ifdef ZT_WITH_CUDA
  return stream != nullptr ? cuda_allocate_async(device.index, bytes, stream)
                           : cuda_allocate(device.index, bytes);
#endif
  return nullptr;
}

void raw_free(Device device, void* ptr, [[maybe_unused]] StreamHandle stream) {
  if (device.is_cpu()) return std::free(ptr);
#ifdef ZT_WITH_CUDA
  if (stream != nullptr)
    cuda_free_async(device.index, ptr, stream);
  else
    cuda_free(device.index, ptr);
#endif
}

void raw_memset_zero(Device device, void* ptr, size_t bytes, [[maybe_unused]] StreamHandle stream) {
  if (device.is_cpu()) {
    std::memset(ptr, 0, bytes);
    return;
  }
  require_cuda_build(device);
#ifdef ZT_WITH_CUDA
  cuda_memset_zero(device.index, ptr, bytes, stream);
#endif
}

void throw_out_of_memory(Device device, size_t bytes, MemCategory category, std::string_view what) {
  const MemStats s = MemoryTracker::of(device).stats();
  // A run too big for its device, not a bug: a user error (exit status 2, no source location).
  throw_user_error("out of memory on ", device.str(), " allocating ", format_bytes(double(bytes)), " for ",
          what, " (", mem_category_name(category), "); in use: ", s.describe_current(),
          ". Try a smaller micro_batch_size or seq_len, model.activation_checkpointing = true "
          "(with a lower model.keep_activations), a higher zero.stage, or zero.offload_optimizer = \"cpu\" (and with stage 3 "
          "zero.offload_params = \"cpu\"); `zerotrain estimate` shows what fits");
}

Buffer Buffer::allocate(Device device, size_t bytes, MemCategory category, std::string_view what,
                        StreamHandle stream) {
  Buffer b;
  b.device_ = device;
  b.category_ = category;
  b.stream_ = device.is_cpu() ? nullptr : stream;
  if (bytes == 0) return b;
  b.data_ = raw_allocate(device, bytes, b.stream_);
  if (b.data_ == nullptr) throw_out_of_memory(device, bytes, category, what);
  b.bytes_ = bytes;
  MemoryTracker::of(device).on_alloc(category, bytes);
  return b;
}

Buffer Buffer::allocate_pinned(size_t bytes, MemCategory category, std::string_view what) {
#ifndef ZT_WITH_CUDA
  return allocate(Device::cpu(), bytes, category, what);
#else
  Buffer b;
  b.device_ = Device::cpu();
  b.category_ = category;
  b.pinned_ = true;
  if (bytes == 0) return b;
  b.data_ = cuda_host_allocate(bytes);
  if (b.data_ == nullptr) throw_out_of_memory(b.device_, bytes, category, what);
  b.bytes_ = bytes;
  MemoryTracker::of(b.device_).on_alloc(category, bytes);
  return b;
#endif
}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(other.data_),
      bytes_(other.bytes_),
      device_(other.device_),
      category_(other.category_),
      stream_(other.stream_),
      pinned_(other.pinned_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    bytes_ = other.bytes_;
    device_ = other.device_;
    category_ = other.category_;
    stream_ = other.stream_;
    pinned_ = other.pinned_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void Buffer::release() {
  if (data_ == nullptr) return;
#ifdef ZT_WITH_CUDA
  if (pinned_)
    cuda_host_free(data_);
  else
#endif
    raw_free(device_, data_, stream_);
  MemoryTracker::of(device_).on_free(category_, bytes_);
  data_ = nullptr;
  bytes_ = 0;
}

void Buffer::zero() {
  if (data_ != nullptr) raw_memset_zero(device_, data_, bytes_, stream_);
}

Tensor Buffer::tensor(DType dtype, const Shape& shape) const {
  ZT_CHECK(size_t(shape.numel()) * dtype_size(dtype) <= bytes_, "view ", dtype_name(dtype),
           shape.str(), " does not fit a buffer of ", bytes_, " bytes");
  return Tensor(data_, dtype, shape, device_);
}

}  // namespace zt
