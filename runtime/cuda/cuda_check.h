// ZT_CUDA_CHECK: the CUDA member of the check-macro family (DESIGN.md section 9).
#pragma once

#include <cuda_runtime.h>

#include "runtime/error.h"

#define ZT_CUDA_CHECK(expr)                                                                    \
  do {                                                                                         \
    const cudaError_t zt_cuda_status_ = (expr);                                                \
    if (zt_cuda_status_ != cudaSuccess) [[unlikely]]                                           \
      ::zt::detail::throw_check_failure(__FILE__, __LINE__, #expr,                             \
                                        ::zt::detail::concat("CUDA error ",                    \
                                                             cudaGetErrorName(zt_cuda_status_), \
                                                             ": ",                             \
                                                             cudaGetErrorString(zt_cuda_status_))); \
  } while (0)
