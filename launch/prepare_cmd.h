// `zerotrain prepare`: tokenizes text or jsonl files into a token dataset (HDF5 shards and
// manifest.toml; datasets/prepare.h does the work, docs/data.md describes the result).
#pragma once

#include <string>
#include <vector>

#include "datasets/prepare.h"

namespace zt::launch {

struct PrepareArgs {
  bool help = false;
  std::string tokenizer_dir;
  datasets::PrepareOptions options;
};

// Throws zt::UserError naming the bad flag and the fix.
PrepareArgs parse_prepare_args(const std::vector<std::string>& args);
std::string prepare_usage_text();
// Loads the tokenizer, runs the pipeline (progress on stderr) and returns the closing report.
std::string run_prepare(const PrepareArgs& args);

}  // namespace zt::launch
