// MPI session: init/finalize, world and node-local ranks, string broadcast, abort.
#include "launch/bootstrap.h"

#include <mpi.h>

#include <vector>

#include "runtime/error.h"
#include "runtime/mpi_check.h"
#include "runtime/mpi_comm.h"

namespace zt::launch {

MpiSession::MpiSession() {
  int initialized = 0;
  ZT_MPI_CHECK(MPI_Initialized(&initialized));
  ZT_CHECK(!initialized, "MPI is already initialised: one MpiSession per process");
  int provided = 0;
  ZT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  // MPI failures come back as codes, become zt::Error through ZT_MPI_CHECK, and reach main,
  // which prints them and aborts every rank (instead of MPI aborting with its own message).
  ZT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  ZT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank));
  ZT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info_.size));
  set_process_rank(info_.rank);
  MPI_Comm node;
  ZT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &node));
  ZT_MPI_CHECK(MPI_Comm_rank(node, &info_.local_rank));
  ZT_MPI_CHECK(MPI_Comm_size(node, &info_.local_size));
  ZT_MPI_CHECK(MPI_Comm_free(&node));
  char host[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  ZT_MPI_CHECK(MPI_Get_processor_name(host, &len));
  info_.host.assign(host, size_t(len));
  world_ = std::make_unique<MpiComm>(MPI_COMM_WORLD);
}

MpiSession::~MpiSession() {
  world_.reset();
  MPI_Finalize();
}

std::string MpiSession::broadcast_string(const std::string& value) {
  int64_t size = int64_t(value.size());
  ZT_MPI_CHECK(MPI_Bcast(&size, 1, MPI_INT64_T, 0, MPI_COMM_WORLD));
  std::string out = info_.rank == 0 ? value : std::string(size_t(size), '\0');
  if (size > 0) ZT_MPI_CHECK(MPI_Bcast(out.data(), int(size), MPI_CHAR, 0, MPI_COMM_WORLD));
  return out;
}

void MpiSession::abort(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace zt::launch
