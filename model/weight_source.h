// WeightSource: full-model GPT-J weights read by parameter and element range, in fp32, whatever
// holds them (a Hugging Face directory, model/hf_gptj.h; a zerotrain checkpoint,
// zero/checkpoint.h). `model.init_from`, `zerotrain convert` and zero::load_weights read through it,
// so each rank reads only the ranges of its own shard.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace zt::model {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The shapes the weights belong to (the source's own record: config.json, manifest.toml).
  virtual const GptjConfig& config() const = 0;
  // Elements [begin, end) of parameter `spec_index` (gptj_param_specs(config()) order, flattened
  // row-major as model/params.h stores it), converted exactly to fp32, into out[0 .. end-begin).
  // Throws zt::UserError naming the file when the data cannot be read.
  virtual void read(int spec_index, int64_t begin, int64_t end, float* out) = 0;
  // What the weights are, for logs and errors: e.g. "Hugging Face GPT-J in DIR (bf16, 2 files)".
  virtual std::string describe() const = 0;
};

}  // namespace zt::model
