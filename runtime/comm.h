// Comm: the one interface the ZeRO engine uses to talk to other ranks (DESIGN.md section 3).
//
// Every collective is asynchronous: it returns a CommRequest that is complete after wait().
// Buffers must stay valid and untouched until then. MpiComm (runtime/mpi_comm.h) moves host
// buffers; NcclComm (CUDA backend) moves device buffers on its own stream. Nothing outside
// runtime/ and launch/ calls MPI or NCCL directly.
#pragma once

#include <cstddef>
#include <memory>

#include "runtime/device.h"
#include "runtime/dtype.h"

namespace zt {

enum class ReduceOp { kSum, kMax };

// A collective in flight. wait() blocks until it is complete and throws zt::Error if it failed;
// the destructor waits too, so a request is never abandoned with its buffers still in use.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  // True once complete (wait() then returns at once); lets callers poll without blocking.
  virtual bool test() = 0;

 protected:
  // For the destructors of requests nobody waited for: wait(), which keeps the buffers in use
  // until the collective is done with them, and since a destructor must not throw, log what it
  // threw (naming `comm`, the Comm's class) instead.
  void wait_reporting_errors(const char* comm) noexcept;
};
using CommHandle = std::unique_ptr<CommRequest>;

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Where the buffers passed to this Comm must live (host for MpiComm).
  virtual Device device() const = 0;

  // In place: data[count] becomes the reduction over all ranks. fp32, fp64, bf16 and fp16 are
  // supported; 16-bit sums add in fp32 and round once per pairwise combination.
  virtual CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) = 0;
  // send[size() * recv_count] is reduced over ranks; rank r receives block r in recv[recv_count].
  // send and recv must not overlap.
  virtual CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) = 0;
  // recv[size() * send_count] receives every rank's send[send_count] in rank order. When send
  // == recv + rank() * send_count (the rank's own block already in place) no copy is made.
  virtual CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) = 0;
  // data[count] on every rank becomes root's data[count].
  virtual CommHandle broadcast(void* data, size_t count, DType dtype, int root) = 0;
  // Blocks until every rank has called barrier().
  virtual void barrier() = 0;

  // Seconds this Comm's collectives were busy since the previous call (or since construction),
  // and restarts the count. Never waits for a collective: one still running is counted by a
  // later call. MpiComm and NcclComm say what they measure; 0 where nothing is measured
  // (SelfComm).
  virtual double take_busy_seconds() { return 0.0; }
};

}  // namespace zt
