// HostStagedComm: the Comm interface (runtime/comm.h) over device buffers, moved by a host Comm
// (MPI) through host memory: the GPU backend's comm.backend = "mpi".
//
// Each collective waits for all the work queued on this process's GPU (every stream), copies its
// input to host memory and starts the host collective there; wait() finishes that collective and
// copies the result into the device buffer, so work queued after wait() sees it. Every
// collective therefore blocks the host, crosses PCIe twice and overlaps nothing, far slower than
// NCCL. The host memory is pinned staging reused from collective to collective (StagingPool).
// What it buys: no NCCL and no one-rank-per-GPU rule, so several ranks may share a GPU (a 2-rank
// run debugged on one GPU, multi-rank tests on a 1-GPU machine) and the reductions are the host
// engine's own (MpiComm's order and rounding).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include "runtime/comm.h"
#include "runtime/memory.h"

namespace zt {

// Host staging blocks for HostStagedComm: pinned (cudaMallocHost), accounted as host "buffers",
// and kept for reuse once a collective's request returns its block. Memory fresh from the
// allocator at every collective paid first-touch page faults and pageable copy speed each time.
// The pool holds about what the largest set of concurrent collectives needs: when no free block
// is large enough, the free ones are released and a block of the asked size is pinned. When
// pinning fails it warns once and stages in pageable memory. Thread-safe.
class StagingPool {
 public:
  Buffer take(size_t bytes);  // at least `bytes` (and at least 1) bytes
  void give(Buffer staging);
  size_t free_blocks() const;  // blocks returned and not taken again

 private:
  mutable std::mutex mutex_;
  std::multimap<size_t, Buffer> free_;  // by size
  bool pageable_ = false;               // pinning failed once
};

class HostStagedComm final : public Comm {
 public:
  // `host` (an MpiComm or a SelfComm, host buffers) must outlive this object; `device` is this
  // rank's GPU, which other ranks may share.
  HostStagedComm(Comm& host, int device);
  ~HostStagedComm() override;
  HostStagedComm(const HostStagedComm&) = delete;
  HostStagedComm& operator=(const HostStagedComm&) = delete;

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  Device device() const override { return Device::cuda(device_); }

  CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override;
  CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override;
  CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  CommHandle broadcast(void* data, size_t count, DType dtype, int root) override;
  void barrier() override { host_.barrier(); }
  // The host Comm's busy time (for MpiComm: from each issue to the wait that saw it complete).
  double take_busy_seconds() override { return host_.take_busy_seconds(); }

  // True for a request of a HostStagedComm: complete, result in device memory, once wait()
  // returns on the host (there is no event for a stream to wait on).
  static bool owns(const CommRequest& request);

  const StagingPool& staging_pool() const { return *pool_; }

 private:
  // Waits for the GPU's queued work, then copies `bytes` from device (or pinned) memory at `src`
  // to host memory at `dst`.
  void download(const void* src, void* dst, size_t bytes);

  Comm& host_;
  int device_;
  cudaStream_t stream_ = nullptr;  // the staging copies
  // Shared with the requests, which return their blocks when they complete (even after this
  // object is gone).
  std::shared_ptr<StagingPool> pool_;
};

}  // namespace zt
