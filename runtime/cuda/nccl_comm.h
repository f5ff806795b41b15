// NcclComm: the Comm interface (runtime/comm.h) over device buffers with NCCL, on a dedicated
// communication stream ordered after the compute stream by events (DESIGN.md section 3).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include "runtime/comm.h"
#include "runtime/error.h"

#define ZT_NCCL_CHECK(expr)                                                                   \
  do {                                                                                        \
    const ncclResult_t zt_nccl_status_ = (expr);                                              \
    if (zt_nccl_status_ != ncclSuccess) [[unlikely]]                                          \
      ::zt::detail::throw_check_failure(                                                      \
          __FILE__, __LINE__, #expr,                                                          \
          ::zt::detail::concat("NCCL error: ", ncclGetErrorString(zt_nccl_status_), " (",     \
                               ncclGetLastError(nullptr), ")"));                              \
  } while (0)

namespace zt {

class NcclComm final : public Comm {
 public:
  // Collective over the ranks of `bootstrap` (an MpiComm): rank 0 creates the ncclUniqueId and
  // `bootstrap` broadcasts it. `device` is this rank's GPU; NCCL allows one rank per GPU.
  // Each collective first waits for the work queued so far on `compute_stream` (the stream that
  // produces the buffers), then runs on the communication stream.
  NcclComm(Comm& bootstrap, int device, cudaStream_t compute_stream);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }
  cudaStream_t comm_stream() const { return comm_stream_; }

  CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override;
  CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override;
  CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  CommHandle broadcast(void* data, size_t count, DType dtype, int root) override;
  void barrier() override;

  // Makes `stream` wait (on the device, without blocking the host) for the collective behind
  // `request`, which must come from an NcclComm. Afterwards dropping the request no longer waits
  // on the host, so memory the collective used must be freed in `stream`'s order (a
  // stream-ordered Buffer of that stream, runtime/memory.h) or after a host wait.
  static void stream_wait(const CommRequest& request, cudaStream_t stream);

 private:
  // Orders the communication stream after the compute stream's work so far.
  void after_compute();
  CommHandle finish();  // records the completion event of the collective just queued

  int device_;
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t compute_stream_;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
};

}  // namespace zt
