// GPT-J parameters: Hugging Face names, shapes and order, grouped into the layers the model
// walks, plus the deterministic initialisation.
//
// Layer numbering (shared with ParamProvider and zero/): layer 0 is the embedding, layers
// 1..n_layer are the transformer blocks h.0..h.{n_layer-1}, layer n_layer+1 is the head
// (ln_f + lm_head). Within a layer, parameters come in Hugging Face state_dict order, and a
// Linear weight is stored [out, in] as in PyTorch, so import/export is a name mapping only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/tensor.h"

namespace zt::model {

enum class ParamKind { kEmbedding, kNormWeight, kNormBias, kLinearWeight, kLinearBias };

struct ParamSpec {
  std::string name;  // Hugging Face name, e.g. "transformer.h.3.attn.q_proj.weight"
  Shape shape;       // [out, in] for Linear weights, [vocab, d_model] for wte, [n] for vectors
  ParamKind kind;
  int layer;         // provider layer index (see the top of this file)
  int index_in_layer;
  int64_t numel() const { return shape.numel(); }
  // Biases and LayerNorm parameters are excluded from weight decay by default.
  bool is_bias_or_norm() const { return kind == ParamKind::kNormWeight || kind == ParamKind::kNormBias || kind == ParamKind::kLinearBias; }
};

// Index of each parameter within a block layer, in Hugging Face order.
enum BlockParam : int {
  kLn1Weight, kLn1Bias, kKProj, kVProj, kQProj, kOutProj, kFcInWeight, kFcInBias, kFcOutWeight,
  kFcOutBias, kNumBlockParams
};
// Index of each parameter within the head layer.
enum HeadParam : int { kLnFWeight, kLnFBias, kLmHeadWeight, kLmHeadBias, kNumHeadParams };

inline int num_layers_total(const GptjConfig& c) { return int(c.n_layer) + 2; }
inline int head_layer(const GptjConfig& c) { return int(c.n_layer) + 1; }

// A provider layer as a user finds it in the model: "transformer.wte", "transformer.h.3", or
// "the head: transformer.ln_f, lm_head".
std::string layer_name(const GptjConfig& config, int layer);

// All parameters in forward (Hugging Face) order.
std::vector<ParamSpec> gptj_param_specs(const GptjConfig& config);

// Runs of fewer elements than this are initialised on one thread.
inline constexpr int64_t kInitChunkElements = int64_t(1) << 20;

// Threads the initialisation uses by default: OpenMP's thread count on the calling thread
// (OMP_NUM_THREADS, train.threads, the offload CPU group), at most 16.
int default_init_threads();

// Calls fn(begin, end) on runs that cover [0, n) once each, from up to `threads` std::threads
// (the caller is one of them). Each run has at least min_chunk elements, so n < 2 * min_chunk
// stays on the calling thread. The first exception thrown by fn is rethrown here.
void parallel_ranges(int64_t n, int threads, int64_t min_chunk,
                     const std::function<void(int64_t, int64_t)>& fn);

// Fills elements [begin, end) of parameter `spec` (flattened row-major) with its initial values
// in fp32: normal(0, init_std) for wte and Linear weights, 0 for biases, 1 for LayerNorm weights.
// The value of each element depends only on (seed, spec.name, element index): any shard can be
// initialised on its own and every rank and thread count agrees. The range is split over
// `threads` threads (0: default_init_threads()) in runs of at least min_chunk elements.
void init_param_values(const ParamSpec& spec, const GptjConfig& config, uint64_t seed,
                       int64_t begin, int64_t end, float* out, int threads = 0,
                       int64_t min_chunk = kInitChunkElements);

}  // namespace zt::model
