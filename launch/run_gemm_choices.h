// train.gemm_choices: a run's file of cuBLASLt algorithm choices (model/gemm_choices.h), the
// training-time side of `zerotrain bench --tune-gemms`. When the file exists and was written on
// this GPU kind with this cuBLASLt, its choices are used; every GEMM problem it does not list
// (all of them, the first time) is tuned when the run first meets it, and rank 0 writes the file
// again after each step in which tuning added problems (keeping the choices it read for problems
// this run does not meet: another micro-batch size, evaluation shapes). A later run with the same
// file repeats the tuning run's algorithms, so its bits; it starts at full speed without tuning.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/device.h"

namespace zt::launch {

class RunGemmChoices {
 public:
  // Before the run writes anything. A file that cannot be read or parsed, a path that is a
  // folder, or ZT_GEMM_CHOICES set as well is a zt::UserError. A file made on another GPU kind or
  // cuBLASLt version is not used, tuned over or replaced: a warning says so. On the CPU backend
  // (or with `path` empty) nothing happens. `writes_file`: this rank writes the file (rank 0).
  RunGemmChoices(const std::string& path, const Device& device, bool writes_file);
  ~RunGemmChoices();  // turns tuning off again (it is process-wide)
  RunGemmChoices(const RunGemmChoices&) = delete;
  RunGemmChoices& operator=(const RunGemmChoices&) = delete;

  // After a step: writes the file when tuning added problems since it was last written. A
  // failed write is a warning (the run goes on; the file keeps its previous content).
  void after_step();

  bool tuning() const { return tuning_; }

 private:
  std::string path_;
  int device_ = 0;
  bool tuning_ = false;
  bool writes_file_ = false;
  int64_t tuned_written_ = 0;  // gemm_problems_tuned() when the file was last written
};

}  // namespace zt::launch
