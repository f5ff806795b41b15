// NcclComm: NCCL collectives on a communication stream, requests backed by CUDA events.
#include "runtime/cuda/nccl_comm.h"

#include <cstring>

#include "runtime/cuda/cuda_check.h"

namespace zt {

namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
  }
  ZT_FAIL("no NCCL type for dtype ", int(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

// Complete when the event recorded after the collective has fired.
class NcclRequest final : public CommRequest {
 public:
  explicit NcclRequest(cudaStream_t stream) {
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ZT_CUDA_CHECK(cudaEventRecord(done_, stream));
  }
  ~NcclRequest() override {
    // A request nobody waited for: its buffers may be freed next (a plain cudaFree does not
    // wait for the communication stream), so the host waits. Once a stream waits on the event,
    // the buffers' stream-ordered frees on that stream come after the collective anyway, and
    // dropping the request must not stall the host (DESIGN.md section 4: no host sync in a step).
    if (!stream_waited_) cudaEventSynchronize(done_);
    cudaEventDestroy(done_);
  }
  void wait() override {
    ZT_CUDA_CHECK(cudaEventSynchronize(done_));
    stream_waited_ = true;  // complete: nothing is left to order after
  }
  void on_stream_wait() const { stream_waited_ = true; }
  bool test() override {
    const cudaError_t status = cudaEventQuery(done_);
    if (status == cudaErrorNotReady) return false;
    ZT_CUDA_CHECK(status);
    return true;
  }
  cudaEvent_t event() const { return done_; }

 private:
  cudaEvent_t done_ = nullptr;
  mutable bool stream_waited_ = false;
};

}  // namespace

NcclComm::NcclComm(Comm& bootstrap, int device, cudaStream_t compute_stream)
    : device_(device), rank_(bootstrap.rank()), size_(bootstrap.size()), compute_stream_(compute_stream) {
  ZT_CHECK(bootstrap.device().is_cpu(), "NCCL is bootstrapped over a host Comm (MPI)");
  ZT_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id;
  if (rank_ == 0) ZT_NCCL_CHECK(ncclGetUniqueId(&id));
  // The id is opaque bytes: carry them as 16-bit words, which MPI moves bit for bit.
  static_assert(sizeof(ncclUniqueId) % 2 == 0);
  bootstrap.broadcast(&id, sizeof(id) / 2, DType::kBF16, 0)->wait();
  ZT_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
}

NcclComm::~NcclComm() {
  cudaSetDevice(device_);
  if (comm_stream_ != nullptr) cudaStreamSynchronize(comm_stream_);
  if (comm_ != nullptr) ncclCommDestroy(comm_);
  if (compute_ready_ != nullptr) cudaEventDestroy(compute_ready_);
  if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
}

void NcclComm::after_compute() {
  ZT_CUDA_CHECK(cudaEventRecord(compute_ready_, compute_stream_));
  ZT_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, compute_ready_, 0));
}

CommHandle NcclComm::finish() { return std::make_unique<NcclRequest>(comm_stream_); }

CommHandle NcclComm::all_reduce(void* data, size_t count, DType dtype, ReduceOp op) {
  after_compute();
  if (count > 0)
    ZT_NCCL_CHECK(ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), comm_, comm_stream_));
  return finish();
}

CommHandle NcclComm::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) {
  after_compute();
  if (recv_count > 0)
    ZT_NCCL_CHECK(ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op), comm_,
                                    comm_stream_));
  return finish();
}

CommHandle NcclComm::all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  after_compute();
  // NCCL treats send == recv + rank * send_count as in place, as Comm promises.
  if (send_count > 0)
    ZT_NCCL_CHECK(ncclAllGather(send, recv, send_count, nccl_type(dtype), comm_, comm_stream_));
  return finish();
}

CommHandle NcclComm::broadcast(void* data, size_t count, DType dtype, int root) {
  ZT_CHECK(root >= 0 && root < size_, "broadcast root ", root, " outside ", size_, " ranks");
  after_compute();
  if (count > 0)
    ZT_NCCL_CHECK(ncclBroadcast(data, data, count, nccl_type(dtype), root, comm_, comm_stream_));
  return finish();
}

void NcclComm::barrier() {
  float* one = nullptr;
  ZT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&one), sizeof(float), comm_stream_));
  ZT_CUDA_CHECK(cudaMemsetAsync(one, 0, sizeof(float), comm_stream_));
  all_reduce(one, 1, DType::kF32, ReduceOp::kSum)->wait();
  ZT_CUDA_CHECK(cudaFreeAsync(one, comm_stream_));
  ZT_CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
}

void NcclComm::stream_wait(const CommRequest& request, cudaStream_t stream) {
  const auto* r = dynamic_cast<const NcclRequest*>(&request);
  ZT_CHECK(r != nullptr, "stream_wait needs a request from an NcclComm");
  ZT_CUDA_CHECK(cudaStreamWaitEvent(stream, r->event(), 0));
  r->on_stream_wait();
}

}  // namespace zt
