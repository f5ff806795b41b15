// HostStagedComm: device collectives through host memory and a host Comm (MPI).
#include "runtime/cuda/host_staged_comm.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <utility>

#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace zt {

namespace {

// What a collective's request keeps until it completes: a staging block, returned to the pool
// after the host request has finished with it.
class StagedRequest final : public CommRequest {
 public:
  StagedRequest(std::shared_ptr<StagingPool> pool, Buffer staging, CommHandle host_request,
                const unsigned char* result, void* device_dst, size_t result_bytes,
                cudaStream_t stream)
      : pool_(std::move(pool)), staging_(std::move(staging)),
        host_request_(std::move(host_request)), result_(result), device_dst_(device_dst),
        result_bytes_(result_bytes), stream_(stream) {}
  ~StagedRequest() override {
    // Like every request, complete before the buffers go. While an exception unwinds (the run
    // is failing) the device copy is skipped, and the host request's own destructor still waits
    // for MPI to release the staging: it goes first, and only then does the staging go back.
    if (!done_ && std::uncaught_exceptions() == 0) wait_reporting_errors("HostStagedComm");
    host_request_.reset();
    pool_->give(std::move(staging_));
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

  std::shared_ptr<StagingPool> pool_;
  Buffer staging_;
  CommHandle host_request_;
  const unsigned char* result_;
  void* device_dst_;
  size_t result_bytes_;
  cudaStream_t stream_;
  bool done_ = false;
};

}  // namespace

Buffer StagingPool::take(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  std::lock_guard<std::mutex> lock(mutex_);
  auto fit = free_.lower_bound(bytes);
  if (fit != free_.end()) {
    Buffer b = std::move(fit->second);
    free_.erase(fit);
    return b;
  }
  // None fits: the smaller free blocks go (the sizes of a run's collectives repeat every step,
  // so the pool settles at the blocks its largest concurrent collectives need).
  free_.erase(free_.begin(), free_.end());
  if (!pageable_) {
    try {
      return Buffer::allocate_pinned(bytes, MemCategory::kBuffers, "HostStagedComm staging");
    } catch (const Error& e) {
      pageable_ = true;
      log_warn("HostStagedComm: cannot pin ", format_bytes(double(bytes)),
               " of host memory for staging (", e.what(),
               "); staging in pageable memory from now on (slower copies)");
    }
  }
  return Buffer::allocate(Device::cpu(), bytes, MemCategory::kBuffers, "HostStagedComm staging");
}

size_t StagingPool::free_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return free_.size();
}

void StagingPool::give(Buffer staging) {
  if (staging.empty()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t bytes = staging.bytes();
  free_.emplace(bytes, std::move(staging));
}

HostStagedComm::HostStagedComm(Comm& host, int device)
    : host_(host), device_(device), pool_(std::make_shared<StagingPool>()) {
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
  Buffer staging = pool_->take(bytes);
  download(data, staging.data(), bytes);
  CommHandle h = host_.all_reduce(staging.data(), count, dtype, op);
  const auto* result = staging.as<const unsigned char>();
  return std::make_unique<StagedRequest>(pool_, std::move(staging), std::move(h), result, data,
                                         bytes, stream_);
}

CommHandle HostStagedComm::reduce_scatter(const void* send, void* recv, size_t recv_count,
                                          DType dtype, ReduceOp op) {
  const size_t block = recv_count * dtype_size(dtype);
  const size_t send_bytes = size_t(size()) * block;
  // One allocation: the whole send, then this rank's reduced block.
  Buffer staging = pool_->take(send_bytes + block);
  download(send, staging.data(), send_bytes);
  unsigned char* out = staging.as<unsigned char>() + send_bytes;
  CommHandle h = host_.reduce_scatter(staging.data(), out, recv_count, dtype, op);
  return std::make_unique<StagedRequest>(pool_, std::move(staging), std::move(h), out, recv,
                                         block, stream_);
}

CommHandle HostStagedComm::all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  const size_t block = send_count * dtype_size(dtype);
  const size_t all = size_t(size()) * block;
  Buffer staging = pool_->take(all);
  unsigned char* mine = staging.as<unsigned char>() + size_t(rank()) * block;
  download(send, mine, block);  // in place on the host too: the host Comm makes no copy
  CommHandle h = host_.all_gather(mine, staging.data(), send_count, dtype);
  const auto* result = staging.as<const unsigned char>();
  return std::make_unique<StagedRequest>(pool_, std::move(staging), std::move(h), result, recv,
                                         all, stream_);
}

CommHandle HostStagedComm::broadcast(void* data, size_t count, DType dtype, int root) {
  const size_t bytes = count * dtype_size(dtype);
  Buffer staging = pool_->take(bytes);
  if (rank() == root) download(data, staging.data(), bytes);
  else ZT_CUDA_CHECK(cudaDeviceSynchronize());  // work queued so far may still read `data`
  CommHandle h = host_.broadcast(staging.data(), count, dtype, root);
  const auto* result = staging.as<const unsigned char>();
  return std::make_unique<StagedRequest>(pool_, std::move(staging), std::move(h), result, data,
                                         bytes, stream_);
}

}  // namespace zt
