// How a reader met a bad input in the fault tests: accepted it, refused it with a zt::UserError
// (the only acceptable failure), or failed some other way (a bug: another exception type).
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/error.h"

namespace zt::testing {

struct Outcome {
  enum Kind { kAccepted, kUserError, kOtherError } kind = kAccepted;
  std::string message;  // what() of the exception; "" when accepted
};

// Runs f() and classifies what it threw. A crash or hang is caught by the test runner (and the
// sanitizers), not here.
template <class F>
Outcome outcome_of(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return {Outcome::kUserError, e.what()};
  } catch (const std::exception& e) {
    return {Outcome::kOtherError, e.what()};
  } catch (...) {
    return {Outcome::kOtherError, "(not a std::exception)"};
  }
  return {};
}

// Adds a failure (with `input` describing the bad input) unless `o` is a UserError, or also an
// acceptance when `may_accept`.
inline void expect_clean(const Outcome& o, const std::string& input, bool may_accept) {
  if (o.kind == Outcome::kOtherError)
    ADD_FAILURE() << input << ": not a zt::UserError: " << o.message;
  else if (o.kind == Outcome::kAccepted && !may_accept)
    ADD_FAILURE() << input << ": accepted, expected a zt::UserError";
}

// Adds a failure unless `o` is a UserError whose message contains every one of `parts`.
inline void expect_user_error(const Outcome& o, const std::string& input,
                              const std::vector<std::string>& parts) {
  expect_clean(o, input, /*may_accept=*/false);
  for (const std::string& p : parts)
    EXPECT_NE(o.message.find(p), std::string::npos) << input << ": missing \"" << p << "\" in: " << o.message;
}

}  // namespace zt::testing
