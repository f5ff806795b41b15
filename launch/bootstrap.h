// Process bootstrap for MPI launches: MPI init, ranks, the node-local rank, and ending the job.
//
// `mpirun -np N zerotrain train cfg.toml` and a plain `zerotrain train cfg.toml` (an MPI
// singleton, world size 1) both go through here. The local rank comes from
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), not from launcher-specific variables, so any MPI
// launcher works (mpirun, srun --mpi=pmix).
#pragma once

#include <memory>
#include <string>

#include "runtime/comm.h"

namespace zt::launch {

struct ProcessInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes on this node
  int local_size = 1;
  std::string host;
};

// Owns the MPI session of the process: initialises MPI (MPI_THREAD_FUNNELED) on construction
// and finalises it on destruction.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  const ProcessInfo& info() const { return info_; }
  Comm& world() { return *world_; }
  // Rank 0's string on every rank.
  std::string broadcast_string(const std::string& value);
  // Ends every rank of the job at once (after the caller printed why).
  [[noreturn]] void abort(int exit_code);

 private:
  ProcessInfo info_;
  std::unique_ptr<Comm> world_;
};

}  // namespace zt::launch
