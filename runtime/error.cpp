// Check-failure reporting: expression, location and rank in one message.
#include "runtime/error.h"

#include <atomic>

namespace zt {

namespace {
std::atomic<int> g_rank{0};
}

void set_process_rank(int rank) { g_rank.store(rank); }
int process_rank() { return g_rank.load(); }

namespace detail {

void throw_check_failure(const char* file, int line, const char* expr, const std::string& message) {
  std::ostringstream os;
  os << (message.empty() ? std::string("internal error") : message) << " [rank " << process_rank()
     << ", " << file << ":" << line;
  if (expr != nullptr) os << ", check `" << expr << "` failed";
  os << "]";
  throw Error(os.str());
}

}  // namespace detail
}  // namespace zt
