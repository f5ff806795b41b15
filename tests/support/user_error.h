// The message of the zt::UserError a piece of code throws, for tests of error reports.
#pragma once

#include <string>

#include "runtime/error.h"

namespace zt::testing {

// The what() of the UserError that f() throws; "" when it throws none.
template <class F>
std::string user_error_of(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace zt::testing
