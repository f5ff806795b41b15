// CudaContext: what every CUDA op needs on one device: the stream its work is queued on, a
// cuBLASLt handle and its workspace. Plain C++ (no kernels), includable from host code.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace zt {

class CudaContext {
 public:
  // Makes `device` current, creates a non-blocking stream, a cuBLASLt handle and a workspace of
  // `workspace_bytes` (cuBLASLt picks faster kernels with one; 32 MiB is what Hopper wants).
  explicit CudaContext(int device, size_t workspace_bytes = size_t(32) << 20);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  // 10 * major + minor, e.g. 90 for H100/H200 (read once, at construction).
  int compute_capability() const { return compute_capability_; }
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  // Waits for everything queued on the stream (tests and host reads; never inside a step).
  void synchronize() const;

 private:
  int device_;
  int compute_capability_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_;
};

}  // namespace zt
