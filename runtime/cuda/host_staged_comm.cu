// HostStagedComm: device collectives through host memory and a host Comm (MPI).
#include "runtime/cuda/host_staged_comm.h"

#include <exception>
#include <memory>
#include <utility>

#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace zt {

namespace {

using HostBytes = std::unique_ptr<unsigned char[]>;

// A host collective on staged bytes; once it completes, `result_bytes` bytes at `result` (inside
// the staging) are copied to `device_dst` on `stream`, waited for.
class StagedRequest final : public CommRequest {
 public:
  StagedRequest(CommHandle host_request, HostBytes staging, const unsigned char* result,
                void* device_dst, size_t result_bytes, cudaStream_t stream)
      : host_request_(std::move(host_request)), staging_(std::move(staging)), result_(result),
        device_dst_(device_dst), result_bytes_(result_bytes), stream_(stream) {}
  ~StagedRequest() override {
    // Like every request, complete before the buffers go. While an exception unwinds (the run
    // is failing) the device copy is skipped, and the host request's own destructor still waits
    // for MPI to release the staging.
    if (!done_ && std::uncaught_exceptions() == 0) wait_reporting_errors("HostStagedComm");
  }

  void wait() override {
    if (done_) return;
    host_request_->wait();
    copy_result();
  }
  bool test() override {
    if (done_) return true;
    if (!host_request_->test()) return false;
    copy_result();
    return true;
  }

 private:
  void copy_result() {
    ZT_CUDA_CHECK(cudaMemcpyAsync(device_dst_, result_, result_bytes_, cudaMemcpyDefault, stream_));
    ZT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    done_ = true;
  }

  CommHandle host_request_;
  HostBytes staging_;
  const unsigned char* result_;
  void* device_dst_;
  size_t result_bytes_;
  cudaStream_t stream_;
  bool done_ = false;
};

HostBytes host_bytes(size_t bytes) {
  return HostBytes(new unsigned char[bytes == 0 ? 1 : bytes]);  // uninitialised: copies fill it
}

}  // namespace

HostStagedComm::HostStagedComm(Comm& host, int device) : host_(host), device_(device) {
  ZT_CHECK(host.device().is_cpu(), "HostStagedComm moves device buffers over a host Comm (MPI)");
  ZT_CUDA_CHECK(cudaSetDevice(device));
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

HostStagedComm::~HostStagedComm() {
  if (stream_ != nullptr) {
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
}

bool HostStagedComm::owns(const CommRequest& request) {
  return dynamic_cast<const StagedRequest*>(&request) != nullptr;
}

void HostStagedComm::download(const void* src, void* dst, size_t bytes) {
  // Every stream of this process on the GPU: the input may come from compute or from an upload
  // (stage 3 with offloaded parameters), so no "after" ordering is needed per caller.
  ZT_CUDA_CHECK(cudaDeviceSynchronize());
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CommHandle HostStagedComm::all_reduce(void* data, size_t count, DType dtype, ReduceOp op) {
  const size_t bytes = count * dtype_size(dtype);
  HostBytes staging = host_bytes(bytes);
  download(data, staging.get(), bytes);
  CommHandle h = host_.all_reduce(staging.get(), count, dtype, op);
  const unsigned char* result = staging.get();
  return std::make_unique<StagedRequest>(std::move(h), std::move(staging), result, data, bytes,
                                         stream_);
}

CommHandle HostStagedComm::reduce_scatter(const void* send, void* recv, size_t recv_count,
                                          DType dtype, ReduceOp op) {
  const size_t block = recv_count * dtype_size(dtype);
  const size_t send_bytes = size_t(size()) * block;
  // One allocation: the whole send, then this rank's reduced block.
  HostBytes staging = host_bytes(send_bytes + block);
  download(send, staging.get(), send_bytes);
  unsigned char* out = staging.get() + send_bytes;
  CommHandle h = host_.reduce_scatter(staging.get(), out, recv_count, dtype, op);
  return std::make_unique<StagedRequest>(std::move(h), std::move(staging), out, recv, block,
                                         stream_);
}

CommHandle HostStagedComm::all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  const size_t block = send_count * dtype_size(dtype);
  const size_t all = size_t(size()) * block;
  HostBytes staging = host_bytes(all);
  unsigned char* mine = staging.get() + size_t(rank()) * block;
  download(send, mine, block);  // in place on the host too: the host Comm makes no copy
  CommHandle h = host_.all_gather(mine, staging.get(), send_count, dtype);
  const unsigned char* result = staging.get();
  return std::make_unique<StagedRequest>(std::move(h), std::move(staging), result, recv, all,
                                         stream_);
}

CommHandle HostStagedComm::broadcast(void* data, size_t count, DType dtype, int root) {
  const size_t bytes = count * dtype_size(dtype);
  HostBytes staging = host_bytes(bytes);
  if (rank() == root) download(data, staging.get(), bytes);
  else ZT_CUDA_CHECK(cudaDeviceSynchronize());  // work queued so far may still read `data`
  CommHandle h = host_.broadcast(staging.get(), count, dtype, root);
  const unsigned char* result = staging.get();
  return std::make_unique<StagedRequest>(std::move(h), std::move(staging), result, data, bytes,
                                         stream_);
}

}  // namespace zt
