// Step metrics: the JSONL metrics file and the terminal progress line.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace zt::launch {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  double tokens_per_s = 0.0;
  int64_t peak_mem_bytes = 0;  // peak bytes so far on the compute device, max over ranks
  double elapsed_s = 0.0;
  double mfu = 0.0;  // model FLOPs utilisation per GPU (0 on the CPU backend)
  bool skipped = false;
  // Validation loss (mean nats/token) and perplexity exp(val_loss) on the steps that evaluated
  // (train.eval_every); NaN elsewhere, and then left out of the JSONL line.
  double val_loss = NAN;
  double val_ppl = NAN;
  // Where the step's time went (rank 0's host clock): the micro-batches' forward and backward
  // (each ends when its loss is known), and the optimizer step. With zero.offload_optimizer the
  // optimizer splits into waiting for gradients on the host, the CPU AdamW, and waiting for the
  // last parameters on the device (NaN without offload, and then left out), and the peak host
  // memory (pinned optimizer state and staging) is reported too.
  double fwd_bwd_s = 0.0;
  double optimizer_s = 0.0;
  double offload_d2h_wait_s = NAN;
  double offload_cpu_adam_s = NAN;
  double offload_h2d_wait_s = NAN;
  int64_t peak_host_mem_bytes = 0;  // max over ranks; reported with offload
  // Seconds the engine's collectives were busy in the step (rank 0; zero::StepStats::comm_s). It
  // overlaps the phase times. NaN: not measured, and then left out.
  double comm_s = NAN;
};

// One JSON object per line, flushed per step so a crash loses at most the current line.
class MetricsWriter {
 public:
  enum class Mode { kCreate, kAppend };
  MetricsWriter() = default;
  // Creates (truncates) `path`, or appends to it; throws zt::UserError when it cannot be written.
  MetricsWriter(const std::string& path, Mode mode);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  MetricsWriter(MetricsWriter&& other) noexcept;
  MetricsWriter& operator=(MetricsWriter&& other) = delete;
  void write(const StepMetrics& m);
  // An evaluation outside a step (train.eval_at_start: step 0): {"step": 0, "val_loss": ...,
  // "val_ppl": ...}.
  void write_eval(int64_t step, double val_loss);
  // Flushes the lines written so far to disk (fsync): the trainer calls it before it moves
  // `latest` to a new checkpoint, so a resume after a power loss finds every line up to it.
  void sync();

 private:
  void flush_line();  // after each line: a crash loses at most the line being written

  std::FILE* file_ = nullptr;
  std::string path_;
};

// The log line of a step: "step 10/200 | loss 4.1234 | lr 3.00e-03 | grad norm 1.23 | ...".
std::string format_step_line(const StepMetrics& m, int64_t total_steps);
// The line after a run's last step: its steady-state throughput over the steps of this launch
// but the first two (the memory pool grows and cuBLASLt plans are made in them; with only 2
// steps, the second): "throughput, steps 3-10: 28416 tokens/s, 14208 per GPU, MFU 56.1%, peak
// mem 110.03 GiB per GPU". tokens/s is the tokens of those steps over their time (so a slow step
// weighs as it cost), MFU likewise. `gpus` is the number of GPUs the `ranks` run on: fewer when
// ranks share GPUs (comm.backend = "mpi"), and then the peak memory (a rank's) is "per rank";
// 0 on the CPU backend, which has no MFU and says "per rank" in place of "per GPU". "" with
// fewer than 2 steps.
std::string format_throughput_line(const std::vector<StepMetrics>& steps, int ranks, int gpus);
// The log line of an evaluation outside a step: "step 0/200 | val loss 6.2400 | val ppl 512.00".
std::string format_eval_line(int64_t step, int64_t total_steps, double val_loss);

// On a terminal, a single self-overwriting line with progress and ETA; elsewhere (pipes, files,
// CI logs) nothing, so logs hold only the regular step lines.
class ProgressLine {
 public:
  ProgressLine();  // enabled when stdout is a terminal
  void update(const StepMetrics& m, int64_t total_steps);
  // Erases the line before a regular log line is printed.
  void clear();

 private:
  bool enabled_ = false;
  bool shown_ = false;
};

}  // namespace zt::launch
