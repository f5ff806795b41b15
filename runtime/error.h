// Errors and the check-macro family (DESIGN.md section 9).
//
// Every failed check throws zt::Error carrying the expression, file:line and the process rank;
// errors propagate to main, which prints them and ends every rank. UserError is for bad input
// (config, files, flags): its message is the whole story, so main prints it without a location.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace zt {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from the user: the message names what is wrong and how to fix it.
class UserError : public Error {
 public:
  using Error::Error;
};

// The rank reported by check failures and log lines (0 until the launcher sets it).
void set_process_rank(int rank);
int process_rank();

namespace detail {

template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] void throw_check_failure(const char* file, int line, const char* expr,
                                      const std::string& message);

}  // namespace detail

// Throws zt::UserError with the concatenated arguments as its message.
template <class... Args>
[[noreturn]] void throw_user_error(Args&&... args) {
  throw UserError(detail::concat(std::forward<Args>(args)...));
}

}  // namespace zt

// ZT_CHECK(cond, message parts...): message parts are streamed together, e.g.
//   ZT_CHECK(n > 0, "batch size must be positive, got ", n);
#define ZT_CHECK(cond, ...)                                                                      \
  do {                                                                                           \
    if (!(cond)) [[unlikely]]                                                                    \
      ::zt::detail::throw_check_failure(__FILE__, __LINE__, #cond,                               \
                                        ::zt::detail::concat(__VA_ARGS__));                      \
  } while (0)

// Unconditional failure with the same report as a failed check.
#define ZT_FAIL(...) \
  ::zt::detail::throw_check_failure(__FILE__, __LINE__, nullptr, ::zt::detail::concat(__VA_ARGS__))
