// A folder that every rank of an MPI test writes into (checkpoints of a multi-rank run): one
// path on all ranks, named after rank 0's process id so parallel test programs stay apart.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "runtime/mpi_comm.h"

namespace zt::testing {

// Collective: <gtest temp dir>/<prefix>_<rank 0's pid>, fresh and empty when this returns.
inline std::filesystem::path make_shared_dir(MpiComm& world, const std::string& prefix) {
  int pid = int(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (prefix + "_" + std::to_string(pid));
  if (world.rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  world.barrier();
  return dir;
}

// Collective: removes it once every rank is done with it.
inline void remove_shared_dir(MpiComm& world, const std::filesystem::path& dir) {
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace zt::testing
