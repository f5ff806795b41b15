// SIGTERM / SIGINT handlers of `zerotrain train`: a flag for the training loop, then a hard exit.
#include "launch/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

namespace zt::launch {

namespace {

// Lock-free, so setting it from a handler is async-signal-safe.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
volatile std::sig_atomic_t g_announce = 0;

// Only async-signal-safe calls here (write, signal, raise).
extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, sig)) {
    // The second signal: the user or scheduler does not want to wait for the step and the save.
    // The handler runs with `sig` blocked: unblock it so the re-raised signal is delivered now.
    std::signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    std::raise(sig);
    _exit(128 + sig);  // should the default action not end the process
  }
  if (g_announce != 0) {
    static const char kText[] =
        "zerotrain: stop requested: finishing the current step, then saving a checkpoint "
        "(signal again to exit at once)\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kText, sizeof(kText) - 1);
  }
}

}  // namespace

void install_stop_handlers(bool announce) {
  g_announce = announce ? 1 : 0;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  // Restart interrupted system calls: MPI progress and file writes carry on through the signal.
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

void restore_default_stop_handlers() {
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  clear_stop_request();
}

int stop_signal() { return g_stop_signal.load(std::memory_order_relaxed); }

void request_stop(int sig) {
  int expected = 0;
  g_stop_signal.compare_exchange_strong(expected, sig);
}

void clear_stop_request() { g_stop_signal.store(0); }

const char* stop_signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a stop request";
  }
}

}  // namespace zt::launch
