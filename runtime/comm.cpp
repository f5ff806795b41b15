// What every Comm's requests share (runtime/comm.h).
#include "runtime/comm.h"

#include <exception>

#include "runtime/log.h"

namespace zt {

void CommRequest::wait_reporting_errors(const char* comm) noexcept {
  try {
    wait();
  } catch (const std::exception& e) {
    try {
      log_error(comm, ": a collective failed while its request was destroyed: ", e.what());
    } catch (...) {
    }
  } catch (...) {
  }
}

}  // namespace zt
