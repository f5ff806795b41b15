// Wall-clock timers: a stopwatch and named phase totals for per-step breakdowns.
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace zt {

class Timer {
 public:
  Timer() { reset(); }
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Accumulates seconds per named phase ("forward", "backward", "optimizer", ...).
class PhaseTimers {
 public:
  void add(const std::string& phase, double seconds) { totals_[phase] += seconds; }
  double total(const std::string& phase) const {
    auto it = totals_.find(phase);
    return it == totals_.end() ? 0.0 : it->second;
  }
  const std::map<std::string, double>& totals() const { return totals_; }
  void clear() { totals_.clear(); }

 private:
  std::map<std::string, double> totals_;
};

// Adds the scope's duration to a phase when it ends.
class ScopedPhase {
 public:
  ScopedPhase(PhaseTimers& timers, std::string phase) : timers_(timers), phase_(std::move(phase)) {}
  ~ScopedPhase() { timers_.add(phase_, timer_.seconds()); }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  PhaseTimers& timers_;
  std::string phase_;
  Timer timer_;
};

}  // namespace zt
