// Opening `model.init_from` / `zerotrain convert` inputs: Hugging Face directories and zerotrain
// checkpoints as one WeightSource, and the shape check against a run's model.
#include "launch/init_weights.h"

#include <filesystem>
#include <sstream>

#include "launch/run_checkpoints.h"
#include "model/hf_gptj.h"
#include "runtime/error.h"
#include "zero/checkpoint.h"
#include "zero/weights.h"

namespace zt::launch {

namespace fs = std::filesystem;

std::unique_ptr<model::WeightSource> open_weights(const std::string& dir, const std::string& what,
                                                  bool verify_checksums) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw_user_error(what, ": no such folder; give a Hugging Face GPT-J folder (config.json + "
                     "model.safetensors) or a zerotrain checkpoint folder");
  if (model::is_hf_gptj_dir(dir)) return model::open_hf_gptj(dir);
  if (zero::is_complete_checkpoint(dir)) return std::make_unique<zero::CheckpointWeights>(dir, verify_checksums);
  const std::string latest = latest_checkpoint(dir, what);
  if (!latest.empty()) return std::make_unique<zero::CheckpointWeights>(latest, verify_checksums);
  // Name what is there, so a wrong folder or a half-downloaded one is easy to tell apart.
  std::ostringstream seen;
  int shown = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (shown == 8) {
      seen << ", ...";
      break;
    }
    seen << (shown++ ? ", " : "") << entry.path().filename().string();
  }
  throw_user_error(what, ": the folder holds neither Hugging Face GPT-J weights (config.json with "
                   "model.safetensors or model.safetensors.index.json) nor a zerotrain checkpoint "
                   "(manifest.toml, or a `latest` file naming one); it has: ",
                   shown ? seen.str() : std::string("nothing"));
}

}  // namespace zt::launch
