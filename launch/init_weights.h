// Starting weights from outside the run: `model.init_from` and `zerotrain convert` open a Hugging
// Face GPT-J directory or a zerotrain checkpoint through one function.
#pragma once

#include <memory>
#include <string>

#include "model/weight_source.h"

namespace zt::launch {

// Opens DIR as weights, whichever it is:
//   - a Hugging Face GPT-J directory (config.json + model.safetensors or a sharded index),
//   - a zerotrain checkpoint (a folder with manifest.toml: a step-NNNNNNNN folder or the output
//     of `zerotrain convert hf-to-zt`),
//   - a train.checkpoint_dir (the checkpoint its `latest` names).
// `what` starts error messages (e.g. "model.init_from = \"DIR\""). Throws zt::UserError saying
// what DIR holds and which of the above it expected. `verify_checksums`: a checkpoint's rank
// files are checked against the manifest on opening (the trainer does it on rank 0 only).
std::unique_ptr<model::WeightSource> open_weights(const std::string& dir, const std::string& what,
                                                  bool verify_checksums = true);

}  // namespace zt::launch
