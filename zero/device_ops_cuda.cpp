// DeviceOps on a GPU: everything queued on the context's stream; only reads back to the host wait.
#include <array>
#include <memory>
#include <vector>

#include "optim/adamw_cuda.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/host_staged_comm.h"
#include "runtime/cuda/nccl_comm.h"
#include "zero/device_ops.h"

namespace zt::zero {

namespace {

class CudaDeviceOps final : public DeviceOps {
 public:
  explicit CudaDeviceOps(const CudaContext& ctx) : ctx_(ctx) {
    ZT_CUDA_CHECK(cudaSetDevice(ctx.device()));
    ZT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&scalars_), 2 * sizeof(double)));
    ZT_CUDA_CHECK(cudaMemsetAsync(scalars_, 0, 2 * sizeof(double), ctx.stream()));
    for (cudaStream_t* s : {&download_stream_, &upload_stream_})
      ZT_CUDA_CHECK(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking));
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&compute_mark_, cudaEventDisableTiming));
  }
  ~CudaDeviceOps() override {
    // Nothing may still be copying into memory that is about to be freed.
    for (cudaStream_t s : {download_stream_, upload_stream_})
      if (s != nullptr) (void)cudaStreamSynchronize(s);
    forget_copy_markers();
    for (cudaEvent_t e : spare_events_) (void)cudaEventDestroy(e);
    if (compute_mark_ != nullptr) (void)cudaEventDestroy(compute_mark_);
    for (cudaStream_t s : {download_stream_, upload_stream_})
      if (s != nullptr) (void)cudaStreamDestroy(s);
    cudaFree(scalars_);
  }

  Device device() const override { return Device::cuda(ctx_.device()); }
  Buffer allocate(size_t bytes, MemCategory category, const char* what) const override {
    return Buffer::allocate(device(), bytes, category, what, ctx_.stream());
  }
  void zero(void* data, size_t bytes) override {
    ZT_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, ctx_.stream()));
  }
  void accumulate(const void* src, void* dst, size_t n, DType dtype) override {
    accumulate_cuda(src, dst, n, dtype, ctx_.stream());
  }
  void upload(const float* host, void* dst, size_t n, DType dtype) override {
    // Convert on the host (fp32 goes as it is), then copy on the stream and wait for it while
    // `staged` is alive (initialisation and checkpoint loads only, not inside a step).
    const size_t bytes = n * dtype_size(dtype);
    std::unique_ptr<unsigned char[]> staged;  // uninitialised: convert_cpu writes every byte
    const void* from = host;
    if (dtype != DType::kF32) {
      staged.reset(new unsigned char[bytes]);
      convert_cpu(host, DType::kF32, staged.get(), dtype, n);
      from = staged.get();
    }
    NcclComm::watched_pageable_copy(dst, from, bytes, cudaMemcpyHostToDevice, ctx_.stream());
  }
  void download(const void* src, void* host, size_t bytes) override {
    NcclComm::watched_pageable_copy(host, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream());
  }
  // cudaMemcpyDefault: either side may be pinned host memory (the offloaded master).
  void copy(const void* src, void* dst, size_t bytes) override {
    ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ctx_.stream()));
  }
  Buffer allocate_host(size_t bytes, MemCategory category, const char* what) const override {
    return Buffer::allocate_pinned(bytes, category, what);
  }
  void download_async(const void* src, void* host, size_t bytes) override {
    ZT_CUDA_CHECK(cudaEventRecord(compute_mark_, ctx_.stream()));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(download_stream_, compute_mark_, 0));
    ZT_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, download_stream_));
  }
  void upload_async(const void* host, void* dst, size_t bytes) override {
    ZT_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, upload_stream_));
  }
  // A marker is an event on each copy stream.
  int64_t mark_copies() override {
    std::array<cudaEvent_t, 2> pair{};
    for (size_t i = 0; i < pair.size(); ++i) {
      if (!spare_events_.empty()) {
        pair[i] = spare_events_.back();
        spare_events_.pop_back();
      } else {
        ZT_CUDA_CHECK(cudaEventCreateWithFlags(&pair[i], cudaEventDisableTiming));
      }
    }
    markers_.push_back(pair);
    ZT_CUDA_CHECK(cudaEventRecord(pair[0], download_stream_));
    ZT_CUDA_CHECK(cudaEventRecord(pair[1], upload_stream_));
    return int64_t(markers_.size()) - 1;
  }
  void wait_copies_on_host(int64_t marker) override {
    ZT_CHECK(marker >= 0 && marker < int64_t(markers_.size()), "copy marker ", marker,
             " was never handed out");
    for (cudaEvent_t e : markers_[size_t(marker)]) NcclComm::watched_event_sync(e);
  }
  void forget_copy_markers() override {
    for (const auto& pair : markers_)
      spare_events_.insert(spare_events_.end(), pair.begin(), pair.end());
    markers_.clear();
  }
  void compute_after_copies() override {
    for (cudaStream_t s : {download_stream_, upload_stream_}) after(ctx_.stream(), s);
  }
  void copies_after_compute() override {
    for (cudaStream_t s : {download_stream_, upload_stream_}) after(s, ctx_.stream());
  }
  // The communication stream waits for the uploads on the device: neither the host nor the
  // compute stream waits, and gradient downloads still running do not hold the gather back.
  // A HostStagedComm needs nothing: each of its collectives waits for the whole GPU first.
  void comm_after_uploads(Comm& comm) override {
    if (dynamic_cast<HostStagedComm*>(&comm) != nullptr) return;
    auto* nccl = dynamic_cast<NcclComm*>(&comm);
    ZT_CHECK(nccl != nullptr,
             "comm_after_uploads needs the NcclComm or HostStagedComm that moves this GPU's buffers");
    after(nccl->comm_stream(), upload_stream_);
  }
  void add_sum_of_squares(const void* data, DType dtype, int64_t n) override {
    optim::sum_of_squares_cuda(ctx_, data, dtype, n, scalars_);
  }
  double take_sum_of_squares() override {
    double s = 0.0;
    download(scalars_, &s, sizeof(s));
    zero(scalars_, sizeof(double));
    return s;
  }
  void adamw(float* param, float* m, float* v, const void* grad, DType grad_dtype, int64_t n,
             const optim::AdamWStep& hp, void* param16, DType param16_dtype) override {
    optim::adamw_step_cuda(ctx_, param, m, v, grad, grad_dtype, n, hp, param16, param16_dtype);
  }
  // Device buffers move through an NcclComm, whose requests carry an event to wait on, or a
  // HostStagedComm, whose result is in device memory once the host wait returns.
  void wait(CommRequest& request) override {
    if (HostStagedComm::owns(request)) request.wait();
    else NcclComm::stream_wait(request, ctx_.stream());
  }
  double all_reduce_scalar(Comm& comm, double value, ReduceOp op) override {
    if (comm.device().is_cpu()) {
      comm.all_reduce(&value, 1, DType::kF64, op)->wait();
      return value;
    }
    double* slot = scalars_ + 1;
    NcclComm::watched_pageable_copy(slot, &value, sizeof(double), cudaMemcpyHostToDevice,
                                    ctx_.stream());
    CommHandle h = comm.all_reduce(slot, 1, DType::kF64, op);
    wait(*h);
    download(slot, &value, sizeof(double));
    return value;
  }

 private:
  const CudaContext& ctx_;
  double* scalars_ = nullptr;  // [0]: the running sum of squares; [1]: all_reduce_scalar staging
  // Offload copies, one stream per direction so that PCIe carries both at once (stage 3 with
  // offload_params uploads the next layer's parameters while gradients go down).
  cudaStream_t download_stream_ = nullptr;
  cudaStream_t upload_stream_ = nullptr;
  // Orders one stream after another (compute, copy, communication); reused, since a stream wait
  // binds to the event's latest record at the time of the wait.
  cudaEvent_t compute_mark_ = nullptr;
  std::vector<std::array<cudaEvent_t, 2>> markers_;  // mark_copies: download, upload events
  std::vector<cudaEvent_t> spare_events_;            // forgotten markers, reused

  // Work queued on `waiter` from now on runs after the work queued so far on `first`.
  void after(cudaStream_t waiter, cudaStream_t first) {
    ZT_CUDA_CHECK(cudaEventRecord(compute_mark_, first));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(waiter, compute_mark_, 0));
  }
};

}  // namespace

std::unique_ptr<DeviceOps> make_cuda_device_ops(const CudaContext& ctx) {
  return std::make_unique<CudaDeviceOps>(ctx);
}

}  // namespace zt::zero
