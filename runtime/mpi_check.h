// ZT_MPI_CHECK: the MPI member of the check-macro family (DESIGN.md section 9).
//
// MPI reports errors through return codes only when the communicator's error handler is
// MPI_ERRORS_RETURN; under the default MPI_ERRORS_ARE_FATAL, MPI aborts the job itself before
// the macro sees the code. Either way no rank is left waiting for the one that failed.
#pragma once

#include <mpi.h>

#include <string>

#include "runtime/error.h"

namespace zt::detail {

// MPI's own text for an error code, e.g. "MPI_ERR_RANK: invalid rank" in Open MPI.
inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error code";
  return std::string(text, static_cast<size_t>(length));
}

}  // namespace zt::detail

#define ZT_MPI_CHECK(expr)                                                                     \
  do {                                                                                         \
    const int zt_mpi_status_ = (expr);                                                         \
    if (zt_mpi_status_ != MPI_SUCCESS) [[unlikely]]                                            \
      ::zt::detail::throw_check_failure(                                                       \
          __FILE__, __LINE__, #expr,                                                           \
          ::zt::detail::concat("MPI error ", zt_mpi_status_, ": ",                             \
                               ::zt::detail::mpi_error_string(zt_mpi_status_)));               \
  } while (0)
