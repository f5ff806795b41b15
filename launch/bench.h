// `zerotrain bench`: per-op timings of the CUDA backend at a model's layer shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/dtype.h"

namespace zt::launch {

struct BenchArgs {
  model::GptjConfig model;
  int64_t micro_batch = 4;
  int64_t seq_len = 2048;
  DType precision = DType::kBF16;
  int iters = 20;
  // --tune-gemms FILE: time cuBLASLt's candidates for each GEMM problem of the bench and write
  // the fastest to FILE (model/gemm_choices.h), for runs with ZT_GEMM_CHOICES=FILE.
  std::string tune_gemms;
};

// Parses the flags after `bench`; throws zt::UserError naming a bad flag or value.
BenchArgs parse_bench_args(const std::vector<std::string>& args);
std::string bench_usage_text();
// Runs the timings on GPU 0 and returns the report; a zt::UserError without a GPU or CUDA build.
std::string run_bench(const BenchArgs& args);

}  // namespace zt::launch
