// Logging implementation: a mutex keeps lines whole when threads log at once.
#include "runtime/log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace zt {

namespace {
LogOptions g_options;
std::mutex g_mutex;

LogLevel parse_level(const char* s, LogLevel fallback) {
  const std::string_view v(s);
  if (v == "debug") return LogLevel::kDebug;
  if (v == "info") return LogLevel::kInfo;
  if (v == "warn") return LogLevel::kWarn;
  if (v == "error") return LogLevel::kError;
  return fallback;
}
}  // namespace

void log_configure(const LogOptions& options, bool from_env) {
  g_options = options;
  if (!from_env) return;
  if (const char* s = std::getenv("ZT_LOG_LEVEL")) g_options.level = parse_level(s, options.level);
  if (const char* s = std::getenv("ZT_LOG_ALL_RANKS")) g_options.all_ranks = std::string_view(s) == "1";
}

bool log_enabled(LogLevel level) {
  if (level == LogLevel::kError) return true;
  if (level < g_options.level) return false;
  return g_options.all_ranks || process_rank() == 0;
}

void log_message(LogLevel level, std::string_view message) {
  static const char* const kTags[] = {"debug", "info", "warn", "error"};
  std::FILE* out = level >= LogLevel::kWarn ? stderr : stdout;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_options.all_ranks || level == LogLevel::kError)
    std::fprintf(out, "[zerotrain %s rank %d] %.*s\n", kTags[int(level)], process_rank(),
                 int(message.size()), message.data());
  else if (level == LogLevel::kInfo)
    std::fprintf(out, "[zerotrain] %.*s\n", int(message.size()), message.data());
  else
    std::fprintf(out, "[zerotrain %s] %.*s\n", kTags[int(level)], int(message.size()), message.data());
  std::fflush(out);
}

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  double v = bytes < 0 ? -bytes : bytes;
  while (v >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), unit == 0 ? "%s%.0f %s" : "%s%.2f %s", bytes < 0 ? "-" : "", v,
                kUnits[unit]);
  return buf;
}

}  // namespace zt
