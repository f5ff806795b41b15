// GPT-J parameter list (Hugging Face names and order) and deterministic initialisation.
#include "model/params.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <thread>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace zt::model {

std::vector<ParamSpec> gptj_param_specs(const GptjConfig& c) {
  std::vector<ParamSpec> specs;
  const int64_t d = c.d_model, f = c.d_ff, v = c.vocab_size;
  auto add = [&](std::string name, Shape shape, ParamKind kind, int layer) {
    int index = 0;
    for (auto it = specs.rbegin(); it != specs.rend() && it->layer == layer; ++it) ++index;
    specs.push_back(ParamSpec{std::move(name), shape, kind, layer, index});
  };
  add("transformer.wte.weight", Shape{v, d}, ParamKind::kEmbedding, 0);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    const int layer = int(i) + 1;
    add(p + "ln_1.weight", Shape{d}, ParamKind::kNormWeight, layer);
    add(p + "ln_1.bias", Shape{d}, ParamKind::kNormBias, layer);
    add(p + "attn.k_proj.weight", Shape{d, d}, ParamKind::kLinearWeight, layer);
    add(p + "attn.v_proj.weight", Shape{d, d}, ParamKind::kLinearWeight, layer);
    add(p + "attn.q_proj.weight", Shape{d, d}, ParamKind::kLinearWeight, layer);
    add(p + "attn.out_proj.weight", Shape{d, d}, ParamKind::kLinearWeight, layer);
    add(p + "mlp.fc_in.weight", Shape{f, d}, ParamKind::kLinearWeight, layer);
    add(p + "mlp.fc_in.bias", Shape{f}, ParamKind::kLinearBias, layer);
    add(p + "mlp.fc_out.weight", Shape{d, f}, ParamKind::kLinearWeight, layer);
    add(p + "mlp.fc_out.bias", Shape{d}, ParamKind::kLinearBias, layer);
  }
  const int head = head_layer(c);
  add("transformer.ln_f.weight", Shape{d}, ParamKind::kNormWeight, head);
  add("transformer.ln_f.bias", Shape{d}, ParamKind::kNormBias, head);
  add("lm_head.weight", Shape{v, d}, ParamKind::kLinearWeight, head);
  add("lm_head.bias", Shape{v}, ParamKind::kLinearBias, head);
  return specs;
}

namespace {
// Stable 64-bit FNV-1a of the name: the random stream of a parameter.
uint64_t name_stream(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}
}  // namespace

std::string layer_name(const GptjConfig& config, int layer) {
  if (layer == 0) return "transformer.wte";
  if (layer == head_layer(config)) return "the head: transformer.ln_f, lm_head";
  return "transformer.h." + std::to_string(layer - 1);
}

int default_init_threads() { return std::clamp(omp_get_max_threads(), 1, 16); }

void parallel_ranges(int64_t n, int threads, int64_t min_chunk,
                     const std::function<void(int64_t, int64_t)>& fn) {
  ZT_CHECK(n >= 0 && min_chunk > 0, "parallel_ranges: ", n, " elements in runs of ", min_chunk);
  const int64_t runs = std::max<int64_t>(1, std::min<int64_t>(threads, n / min_chunk));
  if (runs == 1) {
    if (n > 0) fn(0, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(runs));
  auto run = [&](int64_t r) {
    try {
      fn(n * r / runs, n * (r + 1) / runs);
    } catch (...) {
      errors[size_t(r)] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(size_t(runs - 1));
  for (int64_t r = 1; r < runs; ++r) workers.emplace_back(run, r);
  run(0);
  for (std::thread& w : workers) w.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

void init_param_values(const ParamSpec& spec, const GptjConfig& config, uint64_t seed,
                       int64_t begin, int64_t end, float* out, int threads, int64_t min_chunk) {
  ZT_CHECK(0 <= begin && begin <= end && end <= spec.numel(), "init range [", begin, ", ", end,
           ") outside ", spec.name, " of ", spec.numel(), " elements");
  const int64_t n = end - begin;
  switch (spec.kind) {
    case ParamKind::kNormWeight:
      std::fill(out, out + n, 1.0f);
      return;
    case ParamKind::kNormBias:
    case ParamKind::kLinearBias:
      std::fill(out, out + n, 0.0f);
      return;
    case ParamKind::kEmbedding:
    case ParamKind::kLinearWeight: {
      const uint64_t stream = name_stream(spec.name);
      const double std = config.init_std;
      parallel_ranges(n, threads > 0 ? threads : default_init_threads(), min_chunk,
                      [&](int64_t a, int64_t b) {
                        for (int64_t i = a; i < b; ++i)
                          out[i] = float(std * random_normal(seed, stream, uint64_t(begin + i)));
                      });
      return;
    }
  }
}

}  // namespace zt::model
