// GPT-J presets and shape validation.
#include "model/config.h"

#include <algorithm>

#include "runtime/error.h"

namespace zt::model {

namespace {

// The parameter count in T: int64_t for the exact count, double for a bound that cannot overflow.
template <class T>
T param_count(const GptjConfig& c) {
  const T d = T(c.d_model), f = T(c.d_ff), v = T(c.vocab_size);
  const T per_layer = 2 * d          // ln_1
                      + 4 * d * d    // q, k, v, out (no bias)
                      + f * d + f    // fc_in
                      + d * f + d;   // fc_out
  return v * d                  // wte
         + T(c.n_layer) * per_layer
         + 2 * d                // ln_f
         + v * d + v;           // lm_head with bias
}

}  // namespace

void GptjConfig::validate() const {
  auto positive = [](const char* key, int64_t v) {
    if (v <= 0) throw_user_error("model.", key, " must be positive, got ", v);
  };
  positive("vocab_size", vocab_size);
  positive("n_positions", n_positions);
  positive("d_model", d_model);
  positive("n_layer", n_layer);
  positive("n_head", n_head);
  positive("d_ff", d_ff);
  if (vocab_size > (int64_t(1) << 31) - 1)
    throw_user_error("model.vocab_size = ", vocab_size, " does not fit token ids of 31 bits");
  if (d_model % n_head != 0)
    throw_user_error("model.d_model (", d_model, ") must be divisible by model.n_head (", n_head,
                     ")");
  if (rotary_dim < 0 || rotary_dim > head_dim() || rotary_dim % 2 != 0)
    throw_user_error("model.rotary_dim = ", rotary_dim,
                     " must be even and between 0 and the head dim d_model / n_head = ",
                     head_dim());
  // Sizes are int64 products of these: bounded far above any trainable model, and far below
  // overflow (2^63), in double so that the check itself cannot overflow.
  if (n_positions > (int64_t(1) << 24))
    throw_user_error("model.n_positions = ", n_positions, " is out of range: at most 2^24 = ",
                     int64_t(1) << 24, " positions");
  const double params = param_count<double>(*this);
  if (params > kMaxElements)
    throw_user_error("model.vocab_size = ", vocab_size, ", model.d_model = ", d_model,
                     ", model.n_layer = ", n_layer, " and model.d_ff = ", d_ff, " give ", params,
                     " parameters: at most 2^48 (", kMaxElements, ") are supported");
  if (!(layer_norm_eps > 0.0))
    throw_user_error("model.layer_norm_eps must be positive, got ", layer_norm_eps);
  if (!(init_std > 0.0)) throw_user_error("model.init_std must be positive, got ", init_std);
}

std::vector<std::string> gptj_preset_names() { return {"gptj-6b", "gptj-tiny"}; }

GptjConfig gptj_preset(std::string_view name) {
  if (name == "gptj-tiny") return GptjConfig{};
  if (name == "gptj-6b") {
    GptjConfig c;
    c.vocab_size = 50400;
    c.n_positions = 2048;
    c.d_model = 4096;
    c.n_layer = 28;
    c.n_head = 16;
    c.rotary_dim = 64;
    c.d_ff = 16384;
    return c;
  }
  throw_user_error("unknown model preset \"", name, "\": use \"gptj-6b\" or \"gptj-tiny\"; any "
                   "shape key set beside it (model.d_model, model.n_layer, ...) overrides the preset");
}

int64_t gptj_param_count(const GptjConfig& c) { return param_count<int64_t>(c); }

double gptj_widest_activation(const GptjConfig& c, int64_t micro_batch, int64_t seq_len) {
  return double(micro_batch) * double(seq_len) *
         std::max({double(c.vocab_size), double(c.d_ff), 3.0 * double(c.d_model)});
}

}  // namespace zt::model

namespace zt::model {

double gptj_flops_per_token(const GptjConfig& c, int64_t seq_len) {
  return 6.0 * double(gptj_param_count(c)) + 12.0 * double(c.n_layer) * double(c.d_model) * double(seq_len);
}

}  // namespace zt::model
