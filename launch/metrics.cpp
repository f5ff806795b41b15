// JSONL metrics and the terminal progress line.
#include "launch/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

#include "runtime/error.h"
#include "runtime/log.h"

namespace zt::launch {

namespace {
// JSON has no NaN/Infinity: write null for a non-finite number.
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", (long long)(s / 3600),
                  (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

// The validation fields, in metrics.jsonl and in the log line.
std::string val_json(double val_loss, double val_ppl) {
  return "\"val_loss\": " + json_number(val_loss) + ", \"val_ppl\": " + json_number(val_ppl);
}
std::string val_text(double val_loss, double val_ppl) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), " | val loss %.4f | val ppl %.2f", val_loss, val_ppl);
  return buf;
}
}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, Mode mode) : path_(path) {
  file_ = std::fopen(path.c_str(), mode == Mode::kAppend ? "a" : "w");
  if (file_ == nullptr)
    throw_user_error("cannot write the metrics file \"", path, "\": ", std::strerror(errno),
                     " (check that train.out_dir is writable)");
}

MetricsWriter::MetricsWriter(MetricsWriter&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)) {}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsWriter::write(const StepMetrics& m) {
  if (file_ == nullptr) return;
  const std::string val = std::isnan(m.val_loss) ? std::string() : ", " + val_json(m.val_loss, m.val_ppl);
  std::string times = ", \"fwd_bwd_s\": " + json_number(m.fwd_bwd_s) +
                      ", \"optimizer_s\": " + json_number(m.optimizer_s);
  if (!std::isnan(m.comm_s)) times += ", \"comm_s\": " + json_number(m.comm_s);
  if (!std::isnan(m.offload_cpu_adam_s))
    times += ", \"offload_d2h_wait_s\": " + json_number(m.offload_d2h_wait_s) +
             ", \"offload_cpu_adam_s\": " + json_number(m.offload_cpu_adam_s) +
             ", \"offload_h2d_wait_s\": " + json_number(m.offload_h2d_wait_s) +
             ", \"peak_host_mem_bytes\": " + std::to_string(m.peak_host_mem_bytes);
  std::fprintf(file_,
               "{\"step\": %lld, \"loss\": %s, \"lr\": %s, \"grad_norm\": %s, \"tokens_per_s\": %s, "
               "\"peak_mem_bytes\": %lld, \"elapsed_s\": %s, \"mfu\": %s, \"skipped\": %s%s%s}\n",
               (long long)m.step, json_number(m.loss).c_str(), json_number(m.lr).c_str(),
               json_number(m.grad_norm).c_str(), json_number(m.tokens_per_s).c_str(),
               (long long)m.peak_mem_bytes, json_number(m.elapsed_s).c_str(),
               json_number(m.mfu).c_str(), m.skipped ? "true" : "false", val.c_str(), times.c_str());
  flush_line();
}

void MetricsWriter::write_eval(int64_t step, double val_loss) {
  if (file_ == nullptr) return;
  std::fprintf(file_, "{\"step\": %lld, %s}\n", (long long)step,
               val_json(val_loss, std::exp(val_loss)).c_str());
  flush_line();
}

void MetricsWriter::flush_line() {
  if (std::fflush(file_) != 0)
    throw_user_error("writing the metrics file \"", path_, "\" failed: ", std::strerror(errno));
}

void MetricsWriter::sync() {
  if (file_ == nullptr) return;
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0)
    throw_user_error("flushing the metrics file \"", path_, "\" to disk failed: ", std::strerror(errno));
}

std::string format_eval_line(int64_t step, int64_t total_steps, double val_loss) {
  return "step " + std::to_string(step) + "/" + std::to_string(total_steps) +
         val_text(val_loss, std::exp(val_loss));
}

std::string format_step_line(const StepMetrics& m, int64_t total_steps) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "step %lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tokens/s | peak mem %s",
                (long long)m.step, (long long)total_steps, m.loss, m.lr, m.grad_norm, m.tokens_per_s,
                format_bytes(double(m.peak_mem_bytes)).c_str());
  std::string line = buf;
  if (m.mfu > 0) {
    std::snprintf(buf, sizeof(buf), " | MFU %.1f%%", 100 * m.mfu);
    line += buf;
  }
  if (!std::isnan(m.val_loss)) line += val_text(m.val_loss, m.val_ppl);
  if (!std::isnan(m.comm_s)) {
    std::snprintf(buf, sizeof(buf), " | comm %.2f s", m.comm_s);
    line += buf;
  }
  if (!std::isnan(m.offload_cpu_adam_s)) {
    std::snprintf(buf, sizeof(buf),
                  " | fwd/bwd %.2f s, optimizer %.2f s (d2h wait %.2f, cpu adam %.2f, h2d wait %.2f)"
                  " | host mem %s",
                  m.fwd_bwd_s, m.optimizer_s, m.offload_d2h_wait_s, m.offload_cpu_adam_s,
                  m.offload_h2d_wait_s, format_bytes(double(m.peak_host_mem_bytes)).c_str());
    line += buf;
  }
  if (m.skipped) line += " | SKIPPED";
  return line;
}

std::string format_throughput_line(const std::vector<StepMetrics>& steps, int ranks, int gpus) {
  if (steps.size() < 2) return "";
  const size_t first = std::min<size_t>(2, steps.size() - 1);
  // Every step of a run has the same tokens, so the throughput over steps [first, end) is the
  // harmonic mean of their rates; MFU is proportional to the rate, so it averages the same way.
  double inv_rate = 0.0, inv_mfu = 0.0;
  int64_t peak = 0;
  const bool gpu = gpus > 0;
  for (size_t i = first; i < steps.size(); ++i) {
    inv_rate += 1.0 / steps[i].tokens_per_s;
    if (gpu) inv_mfu += 1.0 / steps[i].mfu;
    peak = std::max(peak, steps[i].peak_mem_bytes);
  }
  const double n = double(steps.size() - first);
  const double rate = n / inv_rate;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "throughput, steps %lld-%lld: %.0f tokens/s, %.0f per %s",
                (long long)steps[first].step, (long long)steps.back().step, rate,
                rate / double(gpu ? gpus : ranks), gpu ? "GPU" : "rank");
  std::string line = buf;
  if (gpu) {
    std::snprintf(buf, sizeof(buf), ", MFU %.1f%%", 100 * n / inv_mfu);
    line += buf;
  }
  return line + ", peak mem " + format_bytes(double(peak)) +
         (gpu && gpus == ranks ? " per GPU" : " per rank");
}

ProgressLine::ProgressLine() : enabled_(isatty(STDOUT_FILENO) == 1 && log_enabled(LogLevel::kInfo)) {}

void ProgressLine::update(const StepMetrics& m, int64_t total_steps) {
  if (!enabled_) return;
  constexpr int kWidth = 24;
  const double frac = total_steps > 0 ? double(m.step) / double(total_steps) : 1.0;
  const int filled = int(frac * kWidth);
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, '.');
  const double eta = m.step > 0 ? m.elapsed_s / double(m.step) * double(total_steps - m.step) : NAN;
  std::printf("\r\033[K[%s] %lld/%lld | loss %.4f | %.0f tokens/s | elapsed %s | ETA %s", bar.c_str(),
              (long long)m.step, (long long)total_steps, m.loss, m.tokens_per_s,
              format_duration(m.elapsed_s).c_str(), format_duration(eta).c_str());
  std::fflush(stdout);
  shown_ = true;
}

void ProgressLine::clear() {
  if (!shown_) return;
  std::printf("\r\033[K");
  std::fflush(stdout);
  shown_ = false;
}

}  // namespace zt::launch
