// GPT-J shape configuration, the named presets, and the exact parameter count.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zt::model {

// Shapes of a GPT-J model (DESIGN.md section 6). Defaults are the gptj-tiny preset.
struct GptjConfig {
  int64_t vocab_size = 512;
  int64_t n_positions = 256;   // longest sequence the model accepts
  int64_t d_model = 128;
  int64_t n_layer = 2;
  int64_t n_head = 4;
  int64_t rotary_dim = 16;     // leading dims of each head that get rotary embeddings
  int64_t d_ff = 512;
  double layer_norm_eps = 1e-5;
  double init_std = 0.02;      // std of the normal init of embeddings and Linear weights

  int64_t head_dim() const { return d_model / n_head; }
  // Throws zt::UserError naming the field and the rule it breaks.
  void validate() const;
};

// "gptj-6b" (EleutherAI/gpt-j-6B shapes) and "gptj-tiny" (a seconds-on-CPU model).
std::vector<std::string> gptj_preset_names();
// Throws zt::UserError listing the presets when `name` is not one.
GptjConfig gptj_preset(std::string_view name);

// Number of parameters, computed from the shapes alone (no allocation).
int64_t gptj_param_count(const GptjConfig& config);

// The most elements a model's parameters or a micro-batch's activation may hold (validate and
// the run config check it): far above any run that fits in memory, far below where the int64
// products of sizes overflow.
inline constexpr double kMaxElements = 0x1p48;
// Elements of a micro-batch's largest activation (the logits, fc_in's output, or q, k and v
// together), in double so that no shape overflows it.
double gptj_widest_activation(const GptjConfig& config, int64_t micro_batch, int64_t seq_len);

// Training FLOPs per token for MFU, the convention of DESIGN.md section 6: 6 N + 12 L d T
// (dense matmuls forward and backward, plus attention scores and values; activation recompute
// is not counted). 39.12 GFLOP for gptj-6b at T = 2048.
double gptj_flops_per_token(const GptjConfig& config, int64_t seq_len);

}  // namespace zt::model
