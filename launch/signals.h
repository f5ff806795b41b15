// Graceful stop on SIGTERM / SIGINT, what batch schedulers send some time before they kill a job:
// the first signal only sets a flag, which the training loop reads after each step (the ranks
// agree on it, save a checkpoint and end the run); a second signal ends the process at once.
#pragma once

namespace zt::launch {

// Installs the handlers for SIGTERM and SIGINT (idempotent). `announce`: the first signal writes
// one line to stderr saying what will happen (rank 0 passes true, so a job prints it once).
void install_stop_handlers(bool announce);
// Puts back the default dispositions and clears a pending request (tests).
void restore_default_stop_handlers();

// The signal that asked the run to stop (SIGTERM, SIGINT, or what request_stop was given);
// 0 when none did. Async-signal-safe to set, cheap to read.
int stop_signal();
inline bool stop_requested() { return stop_signal() != 0; }
// Asks for a stop as the first signal `sig` would (tests, and callers that stop for other reasons).
void request_stop(int sig);
void clear_stop_request();

// "SIGTERM", "SIGINT" (and a few others by name), or "a stop request".
const char* stop_signal_name(int sig);

}  // namespace zt::launch
