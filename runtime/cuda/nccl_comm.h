// NcclComm: the Comm interface (runtime/comm.h) over device buffers with NCCL, on a dedicated
// communication stream ordered after the compute stream by events (DESIGN.md section 3), with a
// watchdog that bounds every host wait on NCCL work by comm.timeout_s (issue 8).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <memory>
#include <utility>
#include <vector>

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

namespace detail {
struct NcclWatchdog;  // shared by an NcclComm and its requests (nccl_comm.cu)
}

// Watchdog (issue 8): the communicator is non-blocking, so no NCCL call blocks the host; every
// host wait on NCCL work (a request's wait() or destructor, barrier(), host_sync(), the
// communicator's initialisation and shutdown) polls the CUDA event and ncclCommGetAsyncError.
// An NCCL async error, or `timeout_s` seconds without the awaited work completing, aborts the
// communicator (ncclCommAbort) and throws zt::Error naming the collective, the rank and the
// timeout. From then on every call on this NcclComm, and every wait on its requests, throws the
// same error instead of touching the aborted communicator.
class NcclComm final : public Comm {
 public:
  // Collective over the ranks of `bootstrap` (an MpiComm): rank 0 creates the ncclUniqueId and
  // `bootstrap` broadcasts it. `device` is this rank's GPU; NCCL allows one rank per GPU.
  // Each collective first waits for the work queued so far on `compute_stream` (the stream that
  // produces the buffers), then runs on the communication stream. `timeout_s` (comm.timeout_s)
  // bounds each host wait; 0 waits forever (async errors still abort).
  NcclComm(Comm& bootstrap, int device, cudaStream_t compute_stream, double timeout_s = 0.0);
  // Waits (bounded by the timeout) for the queued collectives, then finalizes the communicator
  // with the other ranks; if that does not finish in time it aborts instead. While an exception
  // unwinds the stack (the job is failing: peers may never join a finalize, and an abort could
  // free memory that peers on this node still use) it leaves the communicator to process exit.
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }
  cudaStream_t comm_stream() const { return comm_stream_; }
  double timeout_s() const;

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
  // Throws the abort error if the request's communicator was aborted.
  static void stream_wait(const CommRequest& request, cudaStream_t stream);

  // Blocks the host until the work queued so far on `stream` is done, like cudaStreamSynchronize,
  // under the watchdog: for streams that stream_wait()ed on collectives, whose host syncs would
  // otherwise block forever when a peer rank dies.
  void host_sync(cudaStream_t stream);

  // cudaStreamSynchronize / cudaEventSynchronize for code that does not hold the communicator
  // (the model's loss read-back, DeviceOps downloads): while an NcclComm is alive (the run's; one
  // per process) the wait goes through its watchdog, so a compute stream that waits on a
  // collective that never completes ends in the watchdog's error instead of blocking forever.
  static void watched_sync(cudaStream_t stream);
  static void watched_event_sync(cudaEvent_t event);
  // cudaMemcpyAsync on `stream` between the device and pageable host memory, waited for. Such a
  // copy may block the host until everything queued before it on the stream is done (CUDA's
  // rules for pageable transfers; a download always does), unwatched: the stream is first
  // waited for under the watchdog (watched_sync), so that the copy finds it idle.
  static void watched_pageable_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                    cudaStream_t stream);

  // True once the communicator was aborted (every further call throws).
  bool aborted() const;

  // GPU time of the collectives on the communication stream: the sum, over the collectives
  // whose end has been reached, of the time between timing events recorded on that stream just
  // before and just after each one (a collective's time includes waiting for its peers). The
  // stream runs one collective at a time, so the sum is the stream's busy time. Only events that
  // have fired are read (no host wait, no device synchronisation); a collective still running
  // is counted by a later call.
  double take_busy_seconds() override;

 private:
  // Orders the communication stream after the compute stream's work so far, then records the
  // start timing event of the collective about to be issued (returned).
  cudaEvent_t after_compute();
  // Completes the launch of the collective just issued (`status`: what NCCL returned), then
  // records its end timing event and its completion event.
  CommHandle finish(ncclResult_t status, const char* kind, size_t count, DType dtype,
                    cudaEvent_t start);
  // A timing event from the pool (created when none is free).
  cudaEvent_t timing_event();
  // Adds the elapsed time of the oldest timed collectives whose end event has fired to busy_ms_
  // and returns their events to the pool; stops at the first one still running.
  void count_finished();

  int device_;
  int rank_ = 0;
  int size_ = 1;
  cudaStream_t compute_stream_;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;
  cudaEvent_t sync_mark_ = nullptr;  // host_sync/barrier/destructor: what the host waits for
  // Busy time (take_busy_seconds): every timing event created (destroyed with this object),
  // those free for reuse, the start and end events of the collectives not yet counted (oldest
  // first), and the milliseconds counted but not yet taken.
  std::vector<cudaEvent_t> timing_events_;
  std::vector<cudaEvent_t> free_timing_events_;
  std::deque<std::pair<cudaEvent_t, cudaEvent_t>> timed_;
  double busy_ms_ = 0.0;
  // The communicator, the timeout and the abort error, shared with the requests (which may
  // outlive this object).
  std::shared_ptr<detail::NcclWatchdog> state_;
};

}  // namespace zt
