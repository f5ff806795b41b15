// SelfComm: the Comm of a world of one rank (every collective is a copy or nothing), for
// single-process use without MPI, such as unit tests of the engine.
#pragma once

#include "runtime/comm.h"

namespace zt {

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::cpu(); }
  CommHandle all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override;
  CommHandle reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                            ReduceOp op) override;
  CommHandle all_gather(const void* send, void* recv, size_t send_count, DType dtype) override;
  CommHandle broadcast(void* data, size_t count, DType dtype, int root) override;
  void barrier() override {}
};

}  // namespace zt
