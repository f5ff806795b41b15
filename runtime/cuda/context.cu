// CudaContext: stream, cuBLASLt handle and workspace of one device.
#include "runtime/cuda/context.h"

#include "runtime/cuda/cuda_check.h"

namespace zt {

CudaContext::CudaContext(int device, size_t workspace_bytes)
    : device_(device), workspace_bytes_(workspace_bytes) {
  ZT_CUDA_CHECK(cudaSetDevice(device));
  int major = 0, minor = 0;
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  ZT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  compute_capability_ = 10 * major + minor;
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const cublasStatus_t status = cublasLtCreate(&lt_);
  ZT_CHECK(status == CUBLAS_STATUS_SUCCESS, "cublasLtCreate failed with status ", int(status));
  if (workspace_bytes_ > 0) ZT_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

CudaContext::~CudaContext() {
  // Destructors never throw: release what exists, ignore errors of a dying context.
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (lt_ != nullptr) cublasLtDestroy(lt_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void CudaContext::synchronize() const { ZT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace zt
