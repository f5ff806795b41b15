// The config key table (launch/config_schema.h) and the key reference built from it, as plain
// text for --help and as Markdown for docs/config.md.
#include "launch/config_schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include "model/config.h"
#include "optim/lr_schedule.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/text.h"

namespace zt::launch {
namespace {

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += ", ";
    out += '"' + item + '"';
  }
  return out;
}

// Shortest decimal text of a bound (0, 1) without forcing a float spelling: the reference reads
// "[0, 1)" rather than "[0.0, 1.0)".
std::string bound_text(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, end);
}

// "[0, 1)", ">= 1", "> 0", "<= 5"; "" when unbounded.
std::string interval_text(const ConfigKey& k) {
  if (k.min && k.max)
    return (k.min_exclusive ? "(" : "[") + bound_text(*k.min) + ", " + bound_text(*k.max) +
           (k.max_exclusive ? ")" : "]");
  if (k.min) return (k.min_exclusive ? "> " : ">= ") + bound_text(*k.min);
  if (k.max) return (k.max_exclusive ? "< " : "<= ") + bound_text(*k.max);
  return "";
}

// Builders for the table below. `field` is a generic lambda `[](auto& c) -> auto& {...}` naming
// the RunConfig member, so one expression serves both the const getter and the setter.
template <class Field>
ConfigKey int_key(std::string section, std::string name, Field field, std::optional<double> min,
                  std::string meaning) {
  ConfigKey k;
  k.section = std::move(section);
  k.name = std::move(name);
  k.type = KeyType::kInt;
  k.min = min;
  k.meaning = std::move(meaning);
  k.get = [field](const RunConfig& c) { return ConfigValue(int64_t(field(c))); };
  k.set = [field](RunConfig& c, const ConfigValue& v) { field(c) = std::get<int64_t>(v); };
  return k;
}

template <class Field>
ConfigKey float_key(std::string section, std::string name, Field field, double min,
                    bool min_exclusive, std::string meaning) {
  ConfigKey k;
  k.section = std::move(section);
  k.name = std::move(name);
  k.type = KeyType::kFloat;
  k.min = min;
  k.min_exclusive = min_exclusive;
  k.meaning = std::move(meaning);
  k.get = [field](const RunConfig& c) { return ConfigValue(double(field(c))); };
  k.set = [field](RunConfig& c, const ConfigValue& v) { field(c) = std::get<double>(v); };
  return k;
}

template <class Field>
ConfigKey bool_key(std::string section, std::string name, Field field, std::string meaning) {
  ConfigKey k;
  k.section = std::move(section);
  k.name = std::move(name);
  k.type = KeyType::kBool;
  k.meaning = std::move(meaning);
  k.get = [field](const RunConfig& c) { return ConfigValue(bool(field(c))); };
  k.set = [field](RunConfig& c, const ConfigValue& v) { field(c) = std::get<bool>(v); };
  return k;
}

template <class Field>
ConfigKey string_key(std::string section, std::string name, Field field, std::string meaning) {
  ConfigKey k;
  k.section = std::move(section);
  k.name = std::move(name);
  k.type = KeyType::kString;
  k.non_empty = true;
  k.meaning = std::move(meaning);
  k.get = [field](const RunConfig& c) { return ConfigValue(std::string(field(c))); };
  k.set = [field](RunConfig& c, const ConfigValue& v) { field(c) = std::get<std::string>(v); };
  return k;
}

// An enum key; `get` and `set` convert between the field and its spelling.
ConfigKey enum_key(std::string section, std::string name, std::vector<std::string> choices,
                   std::function<std::string(const RunConfig&)> get,
                   std::function<void(RunConfig&, const std::string&)> set, std::string meaning) {
  ConfigKey k;
  k.section = std::move(section);
  k.name = std::move(name);
  k.type = KeyType::kEnum;
  k.choices = std::move(choices);
  k.meaning = std::move(meaning);
  k.get = [get = std::move(get)](const RunConfig& c) { return ConfigValue(get(c)); };
  k.set = [set = std::move(set)](RunConfig& c, const ConfigValue& v) {
    set(c, std::get<std::string>(v));
  };
  return k;
}

// The model shape keys default to the preset's value rather than to one number, so their
// reference says so and lists what each preset gives.
void mark_preset_default(ConfigKey& k) {
  std::string values;
  for (const std::string& name : model::gptj_preset_names()) {
    RunConfig c;
    c.model.preset = name;
    c.model.shape = model::gptj_preset(name);
    if (!values.empty()) values += ", ";
    values += name + " " + format_config_value(k.get(c));
  }
  k.default_text = "from preset";
  k.meaning += " (presets: " + values + ")";
}

std::vector<ConfigKey> build_schema() {
  using optim::LrDecay;
  std::vector<ConfigKey> keys;

  // [model]
  keys.push_back(enum_key(
      "model", "preset", model::gptj_preset_names(),
      [](const RunConfig& c) { return c.model.preset; },
      [](RunConfig& c, const std::string& name) {
        // parse_config applies the preset before any shape key, so shape keys override it.
        c.model.preset = name;
        c.model.shape = model::gptj_preset(name);
      },
      "Named GPT-J shapes; shape keys set beside it override the preset's values"));
  const size_t first_shape_key = keys.size();
  keys.push_back(int_key(
      "model", "vocab_size", [](auto& c) -> auto& { return c.model.shape.vocab_size; }, 1,
      "Token vocabulary size: rows of the embedding and of the LM head"));
  keys.push_back(int_key(
      "model", "n_positions", [](auto& c) -> auto& { return c.model.shape.n_positions; }, 1,
      "Longest sequence the model accepts"));
  keys.push_back(int_key(
      "model", "d_model", [](auto& c) -> auto& { return c.model.shape.d_model; }, 1,
      "Width of the residual stream"));
  keys.push_back(int_key(
      "model", "n_layer", [](auto& c) -> auto& { return c.model.shape.n_layer; }, 1,
      "Number of transformer blocks"));
  keys.push_back(int_key(
      "model", "n_head", [](auto& c) -> auto& { return c.model.shape.n_head; }, 1,
      "Attention heads per block; must divide d_model"));
  keys.push_back(int_key(
      "model", "rotary_dim", [](auto& c) -> auto& { return c.model.shape.rotary_dim; }, 0,
      "Leading dims of each head that get rotary embeddings; even, <= d_model / n_head"));
  keys.push_back(int_key(
      "model", "d_ff", [](auto& c) -> auto& { return c.model.shape.d_ff; }, 1,
      "Width of the MLP hidden layer"));
  keys.push_back(float_key(
      "model", "layer_norm_eps", [](auto& c) -> auto& { return c.model.shape.layer_norm_eps; }, 0,
      true, "Epsilon added to the variance in LayerNorm"));
  keys.push_back(float_key(
      "model", "init_std", [](auto& c) -> auto& { return c.model.shape.init_std; }, 0, true,
      "Std of the normal init of embeddings and Linear weights"));
  const size_t end_shape_keys = keys.size();
  keys.push_back(bool_key(
      "model", "activation_checkpointing",
      [](auto& c) -> auto& { return c.model.activation_checkpointing; },
      "Recompute each block's activations in the backward pass instead of keeping them"));
  keys.push_back(int_key(
      "model", "keep_activations", [](auto& c) -> auto& { return c.model.keep_activations; }, 0,
      "With activation_checkpointing: the last N blocks keep their activations and are not "
      "recomputed, which saves N blocks' recompute for N blocks' activations of memory "
      "(`zerotrain estimate --keep-activations N` sizes it); 0 = recompute every block; "
      "\"auto\" = the most blocks that fit in the GPU's memory by `zerotrain estimate`'s count "
      "(0 on the CPU backend)"));
  keys.back().int_word = "auto";
  keys.back().get = [](const RunConfig& c) {
    return c.model.keep_activations == kKeepActivationsAuto ? ConfigValue(std::string("auto"))
                                                           : ConfigValue(c.model.keep_activations);
  };
  keys.back().set = [](RunConfig& c, const ConfigValue& v) {
    c.model.keep_activations =
        std::holds_alternative<std::string>(v) ? kKeepActivationsAuto : std::get<int64_t>(v);
  };
  keys.back().cross_rule = "<= model.n_layer; > 0 or \"auto\" needs model.activation_checkpointing = true";
  keys.push_back(string_key(
      "model", "init_from", [](auto& c) -> auto& { return c.model.init_from; },
      "Start from these weights instead of a random init: a Hugging Face GPT-J folder "
      "(config.json + safetensors) or a zerotrain checkpoint; the shapes must match the model "
      "keys. Ignored when resuming; \"\" = random init"));
  keys.back().non_empty = false;

  // [train]
  keys.push_back(int_key(
      "train", "micro_batch_size", [](auto& c) -> auto& { return c.train.micro_batch_size; }, 1,
      "Sequences per rank in one forward/backward pass"));
  keys.push_back(int_key(
      "train", "grad_accum_steps", [](auto& c) -> auto& { return c.train.grad_accum_steps; }, 1,
      "Micro-batches per optimizer step; the step follows the mean of their gradients"));
  keys.push_back(int_key(
      "train", "global_batch_size", [](auto& c) -> auto& { return c.train.global_batch_size; }, 0,
      "Sequences per optimizer step over all ranks (DeepSpeed's train_batch_size): when > 0, "
      "grad_accum_steps becomes global_batch_size / (micro_batch_size x ranks) at launch, so one "
      "config keeps its batch on any number of GPUs; 0 = micro_batch_size x grad_accum_steps x ranks"));
  keys.back().cross_rule =
      "a multiple of train.micro_batch_size (x ranks at launch); grad_accum_steps > 1 must agree";
  keys.push_back(int_key(
      "train", "seq_len", [](auto& c) -> auto& { return c.train.seq_len; }, 1,
      "Tokens per training sequence"));
  keys.back().cross_rule = "<= model.n_positions";
  keys.push_back(int_key(
      "train", "steps", [](auto& c) -> auto& { return c.train.steps; }, 1,
      "Optimizer steps to run"));
  keys.push_back(int_key(
      "train", "seed", [](auto& c) -> auto& { return c.train.seed; }, 0,
      "Seed of the parameter init, the synthetic data and the sample order of hdf5 data"));
  keys.push_back(int_key(
      "train", "log_every", [](auto& c) -> auto& { return c.train.log_every; }, 1,
      "Log loss and throughput every this many optimizer steps"));
  keys.push_back(string_key(
      "train", "out_dir", [](auto& c) -> auto& { return c.train.out_dir; },
      "Folder for the run's outputs"));
  keys.push_back(bool_key(
      "train", "overwrite", [](auto& c) -> auto& { return c.train.overwrite; },
      "Allow replacing the outputs of an earlier run in out_dir (a run resuming from its own "
      "checkpoints continues them without it)"));
  keys.push_back(int_key(
      "train", "threads", [](auto& c) -> auto& { return c.train.threads; }, 0,
      "OpenMP threads per rank; 0 = OpenMP's default (all cores, or OMP_NUM_THREADS)"));
  keys.back().max = 4096;  // more than any host has cores; far more threads crash OpenMP
  keys.push_back(enum_key(
      "train", "precision",
      {std::string(dtype_name(DType::kF32)), std::string(dtype_name(DType::kBF16)),
       std::string(dtype_name(DType::kF16))},
      [](const RunConfig& c) { return std::string(dtype_name(c.train.precision)); },
      [](RunConfig& c, const std::string& name) {
        ZT_CHECK(parse_dtype(name, &c.train.precision), "schema lists dtype \"", name,
                 "\" that parse_dtype does not know");
      },
      "Dtype of the parameters and gradients the model uses; bf16 and fp16 keep fp32 master "
      "weights in the optimizer, fp16 adds dynamic loss scaling ([fp16])"));

  keys.push_back(int_key(
      "train", "eval_every", [](auto& c) -> auto& { return c.train.eval_every; }, 0,
      "Evaluate the validation split every this many steps (and after the last); logs val_loss "
      "and val_ppl; 0 = never"));
  keys.push_back(int_key(
      "train", "eval_batches", [](auto& c) -> auto& { return c.train.eval_batches; }, 1,
      "Batches of micro_batch_size sequences per rank in one evaluation (the same ones each time)"));
  keys.push_back(bool_key(
      "train", "eval_at_start", [](auto& c) -> auto& { return c.train.eval_at_start; },
      "Also evaluate before the first step: the starting weights' val_loss (random init or "
      "model.init_from), logged and written to metrics.jsonl as step 0; not when resuming"));
  keys.back().cross_rule = "needs train.eval_every > 0";
  keys.push_back(string_key(
      "train", "checkpoint_dir", [](auto& c) -> auto& { return c.train.checkpoint_dir; },
      "Folder for checkpoints (step-NNNNNNNN folders and a `latest` file naming the newest); "
      "\"\" = no checkpoints"));
  keys.back().non_empty = false;
  keys.push_back(int_key(
      "train", "save_every", [](auto& c) -> auto& { return c.train.save_every; }, 0,
      "Save a checkpoint every this many steps and after the last; 0 = only after the last "
      "(when checkpoint_dir is set)"));
  keys.back().cross_rule = "needs train.checkpoint_dir when > 0";
  keys.push_back(int_key(
      "train", "keep_last", [](auto& c) -> auto& { return c.train.keep_last; }, 1,
      "Step checkpoints kept in checkpoint_dir; older ones are deleted after each save"));
  keys.push_back(string_key(
      "train", "resume", [](auto& c) -> auto& { return c.train.resume; },
      "Continue a run exactly: \"auto\" = the `latest` checkpoint of checkpoint_dir if there is "
      "one (else start fresh), or the path of a checkpoint folder; \"\" = start fresh. The run "
      "appends to out_dir's metrics.jsonl when out_dir holds the run of the same checkpoint_dir"));
  keys.back().non_empty = false;
  keys.back().cross_rule = "\"auto\" needs train.checkpoint_dir";
  keys.push_back(enum_key(
      "train", "on_checkpoint_error", {"stop", "continue"},
      [](const RunConfig& c) { return c.train.on_checkpoint_error; },
      [](RunConfig& c, const std::string& name) { c.train.on_checkpoint_error = name; },
      "When a checkpoint cannot be written (disk full, permissions): stop the run with the error, "
      "or log it and continue training; either way the previous checkpoint stays the `latest`"));
  keys.push_back(int_key(
      "train", "max_skipped_steps", [](auto& c) -> auto& { return c.train.max_skipped_steps; }, 0,
      "End the run with an error after this many consecutive steps skipped for non-finite "
      "gradients (naming the step and the first layer that had them); 0 = never"));
  keys.push_back(enum_key(
      "train", "device", {"auto", "cuda", "cpu"}, [](const RunConfig& c) { return c.train.device; },
      [](RunConfig& c, const std::string& name) { c.train.device = name; },
      "Where to compute: cuda (one rank per GPU, NCCL between them), cpu, or auto (cuda when a "
      "GPU is visible and precision is bf16 or fp16)"));
  keys.push_back(string_key(
      "train", "gemm_choices", [](auto& c) -> auto& { return c.train.gemm_choices; },
      "File of cuBLASLt algorithm choices for the GEMMs (GPU runs): used when it exists and was "
      "made on this GPU kind and cuBLASLt; each GEMM problem it lacks is tuned (the fastest of up "
      "to 8 candidates, timed on the step's own operands) when first met and rank 0 writes the "
      "file; the same file gives the same algorithms and bits in every run. \"\" = cuBLASLt's "
      "heuristic pick"));
  keys.back().non_empty = false;

  // [optimizer]
  keys.push_back(float_key(
      "optimizer", "lr", [](auto& c) -> auto& { return c.optimizer.lr; }, 0, true,
      "Peak learning rate, reached at the end of warmup"));
  keys.push_back(float_key(
      "optimizer", "min_lr", [](auto& c) -> auto& { return c.optimizer.min_lr; }, 0, false,
      "Learning rate at the end of the decay"));
  keys.back().cross_rule = "<= optimizer.lr";
  keys.push_back(int_key(
      "optimizer", "warmup_steps", [](auto& c) -> auto& { return c.optimizer.warmup_steps; }, 0,
      "Steps of linear warmup from 0 to lr"));
  keys.push_back(enum_key(
      "optimizer", "decay",
      {std::string(optim::lr_decay_name(LrDecay::kConstant)),
       std::string(optim::lr_decay_name(LrDecay::kCosine)),
       std::string(optim::lr_decay_name(LrDecay::kLinear))},
      [](const RunConfig& c) { return std::string(optim::lr_decay_name(c.optimizer.decay)); },
      [](RunConfig& c, const std::string& name) {
        ZT_CHECK(optim::parse_lr_decay(name, &c.optimizer.decay), "schema lists LR decay \"", name,
                 "\" that parse_lr_decay does not know");
      },
      "How the learning rate goes from lr to min_lr after warmup"));
  keys.push_back(float_key(
      "optimizer", "beta1", [](auto& c) -> auto& { return c.optimizer.beta1; }, 0, false,
      "AdamW decay rate of the gradient's running mean"));
  keys.back().max = 1;
  keys.back().max_exclusive = true;
  keys.push_back(float_key(
      "optimizer", "beta2", [](auto& c) -> auto& { return c.optimizer.beta2; }, 0, false,
      "AdamW decay rate of the squared gradient's running mean"));
  keys.back().max = 1;
  keys.back().max_exclusive = true;
  keys.push_back(float_key(
      "optimizer", "eps", [](auto& c) -> auto& { return c.optimizer.eps; }, 0, true,
      "AdamW epsilon added to the denominator"));
  keys.push_back(float_key(
      "optimizer", "weight_decay", [](auto& c) -> auto& { return c.optimizer.weight_decay; }, 0,
      false, "AdamW decoupled weight decay"));
  keys.push_back(bool_key(
      "optimizer", "decay_bias_and_norm",
      [](auto& c) -> auto& { return c.optimizer.decay_bias_and_norm; },
      "Apply weight decay to biases and LayerNorm parameters too"));
  keys.push_back(float_key(
      "optimizer", "grad_clip", [](auto& c) -> auto& { return c.optimizer.grad_clip; }, 0, false,
      "Max global gradient norm; 0 disables clipping"));

  // [data]
  keys.push_back(enum_key(
      "data", "source", {"synthetic", "hdf5"}, [](const RunConfig& c) { return c.data.source; },
      [](RunConfig& c, const std::string& name) { c.data.source = name; },
      "Training data: synthetic is the built-in deterministic corpus; hdf5 reads the token "
      "shards of data.path (docs/data.md)"));
  keys.push_back(string_key(
      "data", "path", [](auto& c) -> auto& { return c.data.path; },
      "Dataset folder made by `zerotrain prepare` (holds manifest.toml)"));
  keys.back().non_empty = false;
  keys.back().cross_rule = "required when data.source = \"hdf5\"";
  keys.push_back(string_key(
      "data", "tokenizer", [](auto& c) -> auto& { return c.data.tokenizer; },
      "Tokenizer folder (vocab.json + merges.txt, ...); when set, the dataset must have been "
      "tokenized with it"));
  keys.back().non_empty = false;
  keys.back().cross_rule = "only with data.source = \"hdf5\"";
  keys.push_back(bool_key(
      "data", "verify", [](auto& c) -> auto& { return c.data.verify; },
      "Read every shard once before training to check its checksum and token ids (the other "
      "dataset checks always run)"));

  // [zero]
  keys.push_back(int_key(
      "zero", "stage", [](auto& c) -> auto& { return c.zero.stage; }, 0,
      "ZeRO stage: 0 replicates everything, 1 partitions optimizer state, 2 also gradients, "
      "3 also parameters"));
  keys.back().max = 3;
  keys.push_back(int_key(
      "zero", "bucket_elements", [](auto& c) -> auto& { return c.zero.bucket_elements; }, 1,
      "Parameters per communication bucket (gradient reduction, parameter gathering); a "
      "bucket never spans two layers"));
  keys.push_back(enum_key(
      "zero", "offload_optimizer", {"none", "cpu"},
      [](const RunConfig& c) { return c.zero.offload_optimizer; },
      [](RunConfig& c, const std::string& name) { c.zero.offload_optimizer = name; },
      "ZeRO-Offload: cpu keeps the fp32 master weights and Adam moments of the rank's shard in "
      "pinned host memory and steps them with the CPU AdamW; gradients go to the host during "
      "backward and the new parameters come back chunk by chunk (stages 1-3)"));
  keys.back().cross_rule = "cpu needs zero.stage >= 1";
  keys.push_back(enum_key(
      "zero", "offload_params", {"none", "cpu"},
      [](const RunConfig& c) { return c.zero.offload_params; },
      [](RunConfig& c, const std::string& name) { c.zero.offload_params = name; },
      "ZeRO-Offload of the parameters: cpu keeps stage 3's 16-bit parameter shard in pinned host "
      "memory; each layer's piece is copied to the GPU ahead of its all-gather, and the CPU "
      "AdamW writes the new parameters there directly"));
  keys.back().cross_rule = "cpu needs zero.stage = 3 and zero.offload_optimizer = \"cpu\"";
  keys.push_back(int_key(
      "zero", "delayed_update_from_step", [](auto& c) -> auto& { return c.zero.delayed_update_from_step; }, 0,
      "ZeRO-Offload's one-step delayed parameter update (DPU), from this step on; 0 = never. The "
      "CPU AdamW of a step runs while the GPU computes the next step, which therefore uses the "
      "parameters from before that update: the CPU AdamW leaves the step time, the training "
      "numerics change (gradients one step stale). Start it after the first few dozen steps, "
      "when the parameters change fast. Evaluations and checkpoint saves apply the pending update "
      "first. Costs a second host copy of the gradient shard"));
  keys.back().cross_rule = "> 0 needs zero.offload_optimizer = \"cpu\" and zero.offload_params = \"none\"";

  // [comm]
  keys.push_back(float_key(
      "comm", "timeout_s", [](auto& c) -> auto& { return c.comm.timeout_s; }, 0, false,
      "Seconds a collective may make no progress before the run is aborted on every rank (NCCL "
      "communicators are aborted, so no rank waits forever for a dead one); 0 = wait forever"));
  keys.push_back(enum_key(
      "comm", "backend", {"auto", "nccl", "mpi"}, [](const RunConfig& c) { return c.comm.backend; },
      [](RunConfig& c, const std::string& name) { c.comm.backend = name; },
      "How GPU ranks exchange tensors: nccl (one rank per GPU), mpi (copied through host memory and "
      "reduced by MPI: much slower and without overlap, but several ranks may share a GPU, to "
      "debug a multi-GPU run on fewer GPUs; comm.timeout_s does not apply), or auto (nccl). The "
      "CPU backend always uses MPI"));
  keys.back().cross_rule = "nccl needs GPUs (train.device = \"cuda\" or \"auto\")";

  // [fp16]
  keys.push_back(float_key(
      "fp16", "initial_scale", [](auto& c) -> auto& { return c.fp16.initial_scale; }, 0, true,
      "Loss scale at the start of an fp16 run"));
  keys.back().cross_rule = ">= fp16.min_scale";
  keys.push_back(int_key(
      "fp16", "growth_interval", [](auto& c) -> auto& { return c.fp16.growth_interval; }, 1,
      "Overflow-free steps after which the loss scale doubles"));
  keys.push_back(int_key(
      "fp16", "hysteresis", [](auto& c) -> auto& { return c.fp16.hysteresis; }, 1,
      "Overflows tolerated (steps skipped, scale kept) before the loss scale halves"));
  keys.push_back(float_key(
      "fp16", "min_scale", [](auto& c) -> auto& { return c.fp16.min_scale; }, 0, true,
      "Smallest loss scale; an overflow at it stops the run with an error"));

  const RunConfig defaults;
  for (size_t i = 0; i < keys.size(); ++i) {
    ConfigKey& k = keys[i];
    k.key = k.section + "." + k.name;
    if (i >= first_shape_key && i < end_shape_keys) {
      mark_preset_default(k);
    } else {
      k.default_text = format_config_value(k.get(defaults));
    }
  }
  return keys;
}

// Markdown table cells: '|' would end the cell.
std::string md_cell(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|') out += '\\';
    out += ch;
  }
  return out;
}

}  // namespace

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = build_schema();
  return schema;
}

const std::vector<std::string>& config_sections() {
  static const std::vector<std::string> sections = {"model", "train", "optimizer", "data", "zero",
                                                    "comm", "fp16"};
  return sections;
}

const ConfigKey* find_config_key(std::string_view key) {
  for (const ConfigKey& k : config_schema())
    if (k.key == key) return &k;
  return nullptr;
}

std::string format_config_value(const ConfigValue& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (const auto* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (const auto* d = std::get_if<double>(&value)) return toml_float(*d);
  return toml_quote(std::get<std::string>(value));
}

std::string check_config_range(const ConfigKey& k, const ConfigValue& value) {
  switch (k.type) {
    case KeyType::kInt:
    case KeyType::kFloat: {
      if (const auto* word = std::get_if<std::string>(&value)) {  // a kInt key's int_word
        if (k.int_word.empty()) return "must be a number";
        return *word == k.int_word ? "" : "use an integer or \"" + k.int_word + "\"";
      }
      const double v =
          k.type == KeyType::kInt ? double(std::get<int64_t>(value)) : std::get<double>(value);
      const std::string interval = interval_text(k);
      const std::string rule =
          interval.empty() ? "" : (k.min && k.max ? "in " + interval : interval);
      if (!std::isfinite(v)) return rule.empty() ? "must be finite" : "must be finite and " + rule;
      const bool low = k.min && (k.min_exclusive ? !(v > *k.min) : !(v >= *k.min));
      const bool high = k.max && (k.max_exclusive ? !(v < *k.max) : !(v <= *k.max));
      return low || high ? "must be " + rule : "";
    }
    case KeyType::kBool: return "";
    case KeyType::kString: {
      // config.toml is TOML, which is UTF-8: a --set value of other bytes would be written into
      // it and read back as an error (on the other ranks, too late to report it cleanly).
      const std::string& s = std::get<std::string>(value);
      if (!is_valid_utf8(s)) return "must be UTF-8 text (it holds other bytes)";
      return k.non_empty && s.empty() ? "must be non-empty" : "";
    }
    case KeyType::kEnum: {
      const std::string& s = std::get<std::string>(value);
      if (std::find(k.choices.begin(), k.choices.end(), s) != k.choices.end()) return "";
      return "use one of " + quoted_list(k.choices);
    }
  }
  return "";
}

std::string_view config_type_name(KeyType type) {
  switch (type) {
    case KeyType::kInt: return "int";
    case KeyType::kFloat: return "float";
    case KeyType::kBool: return "bool";
    case KeyType::kString: return "string";
    case KeyType::kEnum: return "enum";
  }
  return "?";
}

std::string config_allowed_text(const ConfigKey& k) {
  std::string text;
  switch (k.type) {
    case KeyType::kInt:
    case KeyType::kFloat: text = interval_text(k); break;
    case KeyType::kBool: text = "true, false"; break;
    case KeyType::kString: text = k.non_empty ? "non-empty" : "any"; break;
    case KeyType::kEnum: text = quoted_list(k.choices); break;
  }
  if (!k.int_word.empty()) text += (text.empty() ? "\"" : " or \"") + k.int_word + "\"";
  if (!k.cross_rule.empty()) text += (text.empty() ? "" : ", ") + k.cross_rule;
  return text;
}

std::string config_reference_text() {
  // Two lines per key (what it is, then what it means) so the text fits a terminal.
  std::string out =
      "Config keys: set them in the TOML file under [section], or with --set section.key=value\n"
      "(later --set flags win over earlier ones and over the file).\n";
  for (const std::string& section : config_sections()) {
    out += "\n[" + section + "]\n";
    for (const ConfigKey& k : config_schema()) {
      if (k.section != section) continue;
      out += "  " + k.key + "  (" + std::string(config_type_name(k.type)) + ", default " +
             k.default_text + "; " + config_allowed_text(k) + ")\n";
      out += "      " + k.meaning + "\n";
    }
  }
  return out;
}

std::string config_reference_markdown() {
  std::string out =
      "# Config reference\n"
      "\n"
      "<!-- Generated from launch/config_schema.cpp: do not edit. Regenerate with\n"
      "     ZT_UPDATE_DOCS=1 zt_tests_launch --gtest_filter=ConfigDocs.* -->\n"
      "\n"
      "A run is configured by a TOML file (`zerotrain train CONFIG.toml`) whose sections and keys\n"
      "are listed below; `--set section.key=value` overrides a key after the file is\n"
      "read, later flags winning. Keys not given take their default. Unknown sections or keys,\n"
      "values of the wrong type and values outside the allowed range are errors.\n";
  for (const std::string& section : config_sections()) {
    out += "\n## [" + section + "]\n\n";
    out += "| Key | Type | Default | Allowed | Meaning |\n";
    out += "| --- | --- | --- | --- | --- |\n";
    for (const ConfigKey& k : config_schema()) {
      if (k.section != section) continue;
      // Literal values in code spans; the preset's "from preset" is prose.
      std::string default_cell = md_cell(k.default_text);
      if (k.default_text != "from preset") default_cell = '`' + default_cell + '`';
      out += "| `" + k.key + "` | " + std::string(config_type_name(k.type)) + " | " + default_cell +
             " | " + md_cell(config_allowed_text(k)) + " | " + md_cell(k.meaning) + " |\n";
    }
  }
  return out;
}

}  // namespace zt::launch
