// Logging: rank 0 only by default, every rank on request; warnings and errors go to stderr.
#pragma once

#include <string>
#include <string_view>

#include "runtime/error.h"

namespace zt {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

struct LogOptions {
  LogLevel level = LogLevel::kInfo;
  bool all_ranks = false;  // false: only rank 0 prints (errors are printed by every rank)
};

// Reads ZT_LOG_LEVEL (debug|info|warn|error) and ZT_LOG_ALL_RANKS=1 when `from_env` is set.
void log_configure(const LogOptions& options, bool from_env = true);
void log_message(LogLevel level, std::string_view message);
bool log_enabled(LogLevel level);

template <class... Args>
void log_info(Args&&... args) {
  if (log_enabled(LogLevel::kInfo)) log_message(LogLevel::kInfo, detail::concat(args...));
}
template <class... Args>
void log_warn(Args&&... args) {
  if (log_enabled(LogLevel::kWarn)) log_message(LogLevel::kWarn, detail::concat(args...));
}
template <class... Args>
void log_debug(Args&&... args) {
  if (log_enabled(LogLevel::kDebug)) log_message(LogLevel::kDebug, detail::concat(args...));
}
template <class... Args>
void log_error(Args&&... args) {
  log_message(LogLevel::kError, detail::concat(args...));
}

// Human-readable byte count: "1.50 GiB".
std::string format_bytes(double bytes);

}  // namespace zt
