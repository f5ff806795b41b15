// `zerotrain convert`: Hugging Face GPT-J weights to a zerotrain checkpoint (hf-to-zt) and a
// zerotrain checkpoint to a Hugging Face directory that GPTJForCausalLM.from_pretrained loads
// (zt-to-hf). One process; memory stays at one parameter (in chunks) whatever the model size.
#pragma once

#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace zt::launch {

struct ConvertArgs {
  bool help = false;
  std::string direction;  // "hf-to-zt" or "zt-to-hf"
  std::string in_dir, out_dir;
  DType dtype = DType::kF32;  // zt-to-hf: the dtype of the written weights
  bool overwrite = false;
};

// Parses the arguments after `convert`; throws zt::UserError naming a bad or missing flag.
ConvertArgs parse_convert_args(const std::vector<std::string>& args);
std::string convert_usage_text();
// Converts and returns the closing report (what was read, what was written).
std::string run_convert(const ConvertArgs& args);

}  // namespace zt::launch
