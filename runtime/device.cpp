// Device naming, and the CUDA queries' answers for a build without CUDA.
#include "runtime/device.h"

namespace zt {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

#ifndef ZT_WITH_CUDA
bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
#endif

}  // namespace zt
