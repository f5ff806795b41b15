// Agreeing on failure across ranks: for a step every rank runs where one rank's error must stop
// all of them, instead of leaving the others waiting in a collective the failed rank never joins.
#pragma once

#include <exception>

#include "runtime/comm.h"
#include "runtime/error.h"

namespace zt {

// Runs `fn` on this rank, then votes with `any_rank(failed)` (collective; true when any rank
// failed): the rank whose `fn` threw rethrows its own exception, the others throw a
// zt::UserError "<what> failed on another rank (see its message)".
template <class AnyRank, class Fn>
void run_agreed_by(AnyRank&& any_rank, const char* what, Fn&& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  const bool any = any_rank(error != nullptr);
  if (error) std::rethrow_exception(error);
  if (any) throw_user_error(what, " failed on another rank (see its message)");
}

// The same with the vote over a comm that moves host buffers (MpiComm, SelfComm).
template <class Fn>
void run_agreed(Comm& host_comm, const char* what, Fn&& fn) {
  run_agreed_by(
      [&](bool failed) {
        double flag = failed ? 1.0 : 0.0;
        host_comm.all_reduce(&flag, 1, DType::kF64, ReduceOp::kMax)->wait();
        return flag > 0.0;
      },
      what, fn);
}

}  // namespace zt
