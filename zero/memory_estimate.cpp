// The memory estimator: model state from the engine's flat layout, activations and transient
// buffers from the shapes, and the tables that print them.
#include "zero/memory_estimate.h"

#include <algorithm>
#include <cstdio>

#include "model/gptj.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "zero/engine.h"
#include "zero/flat_layout.h"

namespace zt::zero {

namespace {

constexpr double kGpuUsable = 0.95;  // CUDA context, NCCL buffers and allocator slack take the rest
constexpr double kCpuUsable = 0.90;  // the OS, data loading and pinned staging take the rest

int64_t max_layer_elements(const FlatLayout& l) {
  int64_t m = 0;
  for (size_t i = 0; i < l.layer_begin.size(); ++i) m = std::max(m, l.layer_end[i] - l.layer_begin[i]);
  return m;
}

// The largest piece of one layer a rank owns (the upload staging of offload_params).
int64_t max_layer_shard_elements(const FlatLayout& l) {
  int64_t m = 0;
  for (int i = 0; i < int(l.layer_begin.size()); ++i)
    m = std::max(m, l.layer_shard_end(i) - l.layer_shard_begin(i));
  return m;
}

const char* offload_name(const StageEstimate& e) {
  return e.offload_params ? "cpu+params" : e.offload ? "cpu" : "none";
}

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", double(bytes) / double(int64_t(1) << 30));
  return buf;
}

bool fits_gpu(int64_t bytes, const EstimateInput& in) {
  return double(bytes) <= kGpuUsable * double(in.gpu_bytes);
}

std::string max_keep_text(const StageEstimate& e) {
  return e.max_keep_activations < 0 ? "-" : std::to_string(e.max_keep_activations);
}

std::string verdict(const StageEstimate& e) {
  if (e.fits_gpu && e.fits_cpu) return "yes";
  if (!e.fits_gpu && !e.fits_cpu) return "no (GPU and CPU)";
  return e.fits_gpu ? "no (CPU)" : "no (GPU)";
}

std::string describe(const EstimateInput& in) {
  const std::string checkpointing =
      model::describe_checkpointing(in.activation_checkpointing, in.keep_activations);
  char buf[640];
  std::snprintf(buf, sizeof(buf),
                "%lld parameters (d_model %lld, %lld layers, vocab %lld); %s; %d GPU%s (%d per node); "
                "micro-batch %lld x %lld tokens; activation checkpointing %s; fits = under %.0f%% of "
                "%s per GPU and %.0f%% of %s per node",
                (long long)model::gptj_param_count(in.model), (long long)in.model.d_model,
                (long long)in.model.n_layer, (long long)in.model.vocab_size,
                std::string(dtype_name(in.precision)).c_str(), in.gpus, in.gpus == 1 ? "" : "s",
                std::min(in.gpus, in.gpus_per_node), (long long)in.micro_batch, (long long)in.seq_len,
                checkpointing.c_str(), kGpuUsable * 100, gib(in.gpu_bytes).c_str(),
                kCpuUsable * 100, gib(in.cpu_bytes).c_str());
  return buf;
}

constexpr int64_t kActivationBytes = 2;  // 16-bit (fp32 runs are CPU-only and not estimated here)

// A block's input [N, D]: kept for every block when checkpointing.
int64_t block_input_bytes(const EstimateInput& in) {
  return in.micro_batch * in.seq_len * in.model.d_model * kActivationBytes;
}

}  // namespace

int64_t kept_block_bytes(const EstimateInput& in) {
  const model::GptjConfig& c = in.model;
  const int64_t n = in.micro_batch * in.seq_len;
  // q, k, v, attention output (4 x [N, D]) and fc_in output ([N, F]); fp32 LayerNorm mean/rstd
  // and per-head softmax log-sum-exp per token. ln_1's output and gelu's are recomputed.
  return n * (4 * c.d_model + c.d_ff) * kActivationBytes + n * (8 + 4 * c.n_head);
}

int64_t max_keep_from_peak(int64_t peak, int64_t gpu_bytes, int64_t per_block, int64_t keep,
                           int64_t n_layer) {
  ZT_CHECK(per_block > 0 && keep >= 0 && keep <= n_layer, "max_keep_from_peak: per_block ",
           per_block, ", keep ", keep, " of ", n_layer);
  const double room = kGpuUsable * double(gpu_bytes) - double(peak);
  if (room < double(per_block)) return keep;
  const int64_t more = std::min<int64_t>(int64_t(room / double(per_block)), n_layer - keep);
  const int64_t best = keep + more;
  return best == n_layer - 1 ? n_layer : best;
}

int64_t activation_bytes(const EstimateInput& in) {
  const model::GptjConfig& c = in.model;
  const int64_t n = in.micro_batch * in.seq_len;
  const int64_t input = block_input_bytes(in);
  const int64_t rest = kept_block_bytes(in);  // everything a block saves but its input
  // The model's workspace (model/gptj_graph.h): every block's input and the head's; the saved
  // tensors of the last keep_activations blocks (all blocks without checkpointing), and one
  // shared area the others are recomputed into; the ln_1 output scratch, the residual gradient
  // and a scratch (3 x [N, D]); the backward's d(attention output), dq, dk, dv (4 x [N, D]) and
  // d(gelu output), d(fc_in output) (2 x [N, F], the second shared with the gelu output).
  const int64_t kept = in.activation_checkpointing ? in.keep_activations : c.n_layer;
  const int64_t shared = kept < c.n_layer ? rest : 0;
  const int64_t scratch = n * (7 * c.d_model + 2 * c.d_ff) * kActivationBytes;
  const int64_t blocks = (c.n_layer + 1) * input + kept * rest + shared + scratch;
  // Head: ln_f output and the logits, 16-bit like the rest (their gradient overwrites them in
  // place; the fused cross-entropy keeps only a loss per token), and ln_f's fp32 mean and rstd.
  const int64_t head = n * (c.d_model + c.vocab_size) * kActivationBytes + n * 8;
  // Token ids and targets (int32) and the fp32 loss per token.
  const int64_t tokens = n * 12;
  return blocks + head + tokens;
}

std::vector<StageEstimate> estimate_memory(const EstimateInput& in, bool with_offload) {
  ZT_CHECK(in.gpus >= 1 && in.gpus_per_node >= 1, "need at least one GPU and one GPU per node");
  in.model.validate();
  ZT_CHECK(in.keep_activations >= 0 && in.keep_activations <= in.model.n_layer,
           "keep_activations = ", in.keep_activations, " must be in [0, n_layer = ", in.model.n_layer,
           "]");
  const auto specs = model::gptj_param_specs(in.model);
  const int layers = model::num_layers_total(in.model);
  const int64_t w = int64_t(dtype_size(in.precision));
  const int ranks_per_node = std::min(in.gpus, in.gpus_per_node);
  // (stage, offload_optimizer, offload_params) of each row.
  struct Row {
    int stage;
    bool offload, offload_params;
  };
  std::vector<Row> which;
  for (int stage = 0; stage <= 3; ++stage) which.push_back({stage, false, false});
  if (with_offload) {
    for (int stage = 1; stage <= 3; ++stage) which.push_back({stage, true, false});
    which.push_back({3, true, true});
  }
  EstimateInput checkpointed = in;  // every block recomputed: where max keep starts from
  checkpointed.activation_checkpointing = true;
  checkpointed.keep_activations = 0;
  const int64_t recomputed_activations = activation_bytes(checkpointed);
  std::vector<StageEstimate> rows;
  for (const Row& r : which) {
    const int stage = r.stage;
    const FlatLayout l = make_flat_layout(specs, layers, stage == 0 ? 1 : in.gpus, in.bucket_elements);
    const ModelStateBytes state = model_state_bytes(l, stage, in.precision, r.offload, r.offload_params,
                                                    in.delayed_update && !r.offload_params);
    StageEstimate e;
    e.stage = stage;
    e.offload = r.offload;
    e.offload_params = r.offload_params;
    e.params = state.params;
    e.grads = state.grads;
    e.optimizer = state.optimizer;
    e.cpu_per_node = (state.host_optimizer + state.host_buffers + state.host_params) * ranks_per_node;
    e.activations = activation_bytes(in);
    // Transient buffers, as the engine allocates them: stage 1 the reduce-scattered gradient
    // shard; stages 2-3 three layers of full gradients with their reduce-scatter staging (the
    // peak comes when a layer's reduction is queued behind two still in flight, before the
    // oldest is drained); stage 3 also two gathered layers (the current one and the prefetched
    // next), and with offload_params the uploaded shard piece the prefetch gathers from.
    const int64_t layer = max_layer_elements(l);
    if (stage == 1) e.buffers = w * l.shard_size;
    if (stage >= 2) e.buffers = 3 * w * layer + 3 * w * (layer / std::max(1, l.partitions));
    if (stage == 3) e.buffers += 2 * w * layer;
    if (r.offload_params) e.buffers += w * max_layer_shard_elements(l);
    e.fits_gpu = fits_gpu(e.gpu_total(), in);
    e.fits_cpu = double(e.cpu_per_node) <= kCpuUsable * double(in.cpu_bytes);
    // max keep: from the total with every block recomputed, as the trainer's hint does from a
    // measured peak.
    const int64_t all_recomputed = e.gpu_total() - e.activations + recomputed_activations;
    if (fits_gpu(all_recomputed, in))
      e.max_keep_activations =
          max_keep_from_peak(all_recomputed, in.gpu_bytes, kept_block_bytes(in), 0, in.model.n_layer);
    rows.push_back(e);
  }
  return rows;
}

std::string format_estimate_table(const EstimateInput& in, const std::vector<StageEstimate>& rows) {
  std::string out = describe(in) + "\n\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%-6s %-10s %11s %11s %11s %12s %11s %12s %12s  %-16s %s\n",
                "stage", "offload", "params", "grads", "optimizer", "activations", "buffers",
                "total/GPU", "CPU/node", "fits", "max keep");
  out += line;
  for (const StageEstimate& e : rows) {
    std::snprintf(line, sizeof(line), "%-6d %-10s %11s %11s %11s %12s %11s %12s %12s  %-16s %s\n",
                  e.stage, offload_name(e), gib(e.params).c_str(), gib(e.grads).c_str(),
                  gib(e.optimizer).c_str(), gib(e.activations).c_str(), gib(e.buffers).c_str(),
                  gib(e.gpu_total()).c_str(), e.offload ? gib(e.cpu_per_node).c_str() : "-",
                  verdict(e).c_str(), max_keep_text(e).c_str());
    out += line;
  }
  out += "\nmax keep: the most blocks model.keep_activations (--keep-activations) can keep with\n"
         "activation checkpointing on while the GPU still fits, at " + gib(kept_block_bytes(in)) +
         " per block per GPU;\n" + std::to_string(in.model.n_layer) +
         " keeps every block, as checkpointing off does.\n";
  return out;
}

std::string format_estimate_markdown(const EstimateInput& in, const std::vector<StageEstimate>& rows) {
  std::string out = describe(in) + ".\n\n";
  out += "| stage | offload | params | grads | optimizer | activations | buffers | total per GPU | CPU per node | fits | max keep |\n";
  out += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const StageEstimate& e : rows) {
    out += "| " + std::to_string(e.stage) + " | " + offload_name(e) + " | " + gib(e.params) +
           " | " + gib(e.grads) + " | " + gib(e.optimizer) + " | " + gib(e.activations) + " | " +
           gib(e.buffers) + " | " + gib(e.gpu_total()) + " | " + (e.offload ? gib(e.cpu_per_node) : "-") +
           " | " + verdict(e) + " | " + max_keep_text(e) + " |\n";
  }
  return out;
}

}  // namespace zt::zero
