// Where memory lives and work runs: the host, or one CUDA device by index.
#pragma once

#include <string>

namespace zt {

enum class DeviceKind : unsigned char { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  static Device cpu() { return Device{DeviceKind::kCpu, 0}; }
  static Device cuda(int index) { return Device{DeviceKind::kCuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  bool is_cuda() const { return kind == DeviceKind::kCuda; }
  std::string str() const;  // "cpu", "cuda:1"
  friend bool operator==(const Device&, const Device&) = default;
};

// True when this binary was built with the CUDA backend.
bool built_with_cuda();
// Number of usable CUDA devices: 0 when built without CUDA or when no GPU/driver is present.
int cuda_device_count();

}  // namespace zt
