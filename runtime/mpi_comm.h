// MpiComm: the Comm interface (runtime/comm.h) over host buffers with non-blocking MPI collectives.
//
// Used by the CPU backend and for host-side offload data. MPI must be initialised by the caller
// (launch/ uses MPI_THREAD_FUNNELED): only the thread that initialised MPI may call into an
// MpiComm or its requests. Open MPI has no progress thread by default, so a collective in flight
// advances only while some MPI call runs on this rank: callers that overlap compute with
// communication poll test() between pieces of work.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>

#include "runtime/comm.h"

namespace zt {

namespace detail {
struct MpiBusyClock;  // shared by an MpiComm and its requests (mpi_comm.cpp)
}

class MpiComm final : public Comm {
 public:
  // Splits larger all_reduce and broadcast calls so each MPI call's int count stays in range.
  static constexpr size_t kDefaultMaxElementsPerCall = size_t(1) << 30;

  // Wraps `comm` without owning it: MPI_COMM_WORLD for training, MPI_COMM_SELF for a 1-rank
  // comm. The caller keeps it valid for this object's lifetime and frees it if it must.
  // max_elements_per_call (1..INT_MAX) is a parameter so tests can reach the splitting path
  // with small buffers.
  explicit MpiComm(MPI_Comm comm, size_t max_elements_per_call = kDefaultMaxElementsPerCall);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cpu(); }
  MPI_Comm mpi_comm() const { return comm_; }

  CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override;
  CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override;
  CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  CommHandle broadcast(void* data, size_t count, DType dtype, int root) override;
  void barrier() override;
  // Host wall time during which at least one collective of this comm was in flight: from the
  // call that issued it to the wait() or test() that saw it complete (barrier(): the call
  // itself). Overlapping collectives count once (the union of their intervals). Open MPI
  // advances a collective only inside MPI calls, so the interval also covers the compute the
  // caller did between issuing and waiting.
  double take_busy_seconds() override;

 private:
  // One request over consecutive pieces of at most max_elements_per_call_ elements;
  // start(offset, n, &request) begins the MPI call of one piece.
  template <class Start>
  CommHandle in_pieces(size_t count, Start start) const;

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  size_t max_elements_per_call_;
  std::shared_ptr<detail::MpiBusyClock> busy_;  // requests may outlive this object
};

}  // namespace zt
