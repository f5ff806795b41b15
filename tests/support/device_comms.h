// The two Comms that move a GPU's buffers, for MPI tests parameterised over both: NcclComm (one
// GPU per rank) and HostStagedComm (comm.backend = "mpi"; ranks share GPUs round-robin).
#pragma once

#ifdef ZT_WITH_CUDA
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "runtime/cuda/host_staged_comm.h"
#include "runtime/cuda/nccl_comm.h"
#include "runtime/device.h"

namespace zt::testing {

enum class DeviceCommKind { kNccl, kHostStaged };

// Why a test of `kind` cannot run with `ranks` ranks on this machine ("" when it can).
inline std::string device_comm_skip_reason(DeviceCommKind kind, int ranks) {
  const int gpus = cuda_device_count();
  if (gpus == 0) return "needs a GPU";
  if (kind == DeviceCommKind::kNccl && gpus < ranks)
    return "NCCL needs one GPU per rank: " + std::to_string(gpus) + " GPUs, " +
           std::to_string(ranks) + " ranks";
  return "";
}

// The GPU of `rank` (round-robin, as the trainer places ranks with comm.backend = "mpi").
inline int device_of_rank(int rank) { return rank % cuda_device_count(); }

// The comm of `kind` over `host` (MPI) for this rank's GPU `device`, ordered after `stream`.
inline std::unique_ptr<Comm> make_device_comm(DeviceCommKind kind, Comm& host, int device,
                                              cudaStream_t stream) {
  if (kind == DeviceCommKind::kNccl) return std::make_unique<NcclComm>(host, device, stream);
  return std::make_unique<HostStagedComm>(host, device);
}

// Instantiation names: Comms/<Test>/Nccl, Comms/<Test>/HostStaged.
inline std::string device_comm_name(const ::testing::TestParamInfo<DeviceCommKind>& info) {
  return info.param == DeviceCommKind::kNccl ? "Nccl" : "HostStaged";
}

}  // namespace zt::testing
#endif  // ZT_WITH_CUDA
