// Hugging Face GPT-J directories: config.json <-> GptjConfig, reading a directory of safetensors
// (one file or an index plus shards) as a WeightSource, and exporting weights to a directory
// that transformers' GPTJForCausalLM.from_pretrained loads.
//
// Parameter names and layouts are the Hugging Face ones already (model/params.h), so the mapping
// is by name only: no transposes, no renames.
#pragma once

#include <memory>
#include <string>

#include "model/config.h"
#include "model/weight_source.h"
#include "runtime/dtype.h"

namespace zt::model {

// Reads a Hugging Face GPT-J config.json (model_type "gptj"). Keys it does not mention take
// transformers' GPTJConfig defaults (those of GPT-J 6B), as from_pretrained would; keys that do
// not affect the computation (dropout, token ids, ...) are ignored. Throws zt::UserError naming
// the file for another model type, an activation other than gelu_new, tied embeddings, a value
// of the wrong type, or shapes GptjConfig::validate() refuses.
GptjConfig gptj_config_from_hf(const std::string& config_json_path);

// The config.json text for `config` with weights stored in `dtype` (fp32, bf16 or fp16), in the
// form transformers writes it (sorted keys, 2-space indent, trailing newline).
std::string hf_config_json(const GptjConfig& config, DType dtype);

// True when dir holds config.json and model.safetensors or model.safetensors.index.json.
bool is_hf_gptj_dir(const std::string& dir);

// Opens a Hugging Face GPT-J directory. Before returning it checks that every parameter of
// gptj_param_specs(config) is present exactly once, with its exact shape and a float dtype
// (F32, BF16, F16); the old mask buffers transformer.h.N.attn.bias / .attn.masked_bias are
// skipped and any other tensor is an error. Throws zt::UserError naming the file otherwise,
// including for a directory that holds only PyTorch .bin weights.
std::unique_ptr<WeightSource> open_hf_gptj(const std::string& dir);

// Writes dir/model.safetensors (every parameter in gptj_param_specs order, in `dtype`: fp32,
// bf16 or fp16, rounded to nearest even; metadata {"format": "pt"}) and dir/config.json,
// streaming one parameter at a time in chunks of at most kExportChunkElements. The directory is
// built as DIR.tmp-<pid> and renamed to DIR only when complete. An existing non-empty DIR is
// refused unless `overwrite`, and is then replaced only once the new one is complete.
void write_hf_gptj(const std::string& dir, WeightSource& src, DType dtype, bool overwrite);

inline constexpr int64_t kExportChunkElements = int64_t(64) << 20;  // 64 Mi fp32 = 256 MiB

}  // namespace zt::model
