// A run's whole configuration as typed structs, and its TOML front end (the only place that
// reads TOML: DESIGN.md section 9).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "optim/config.h"
#include "optim/loss_scaler.h"
#include "runtime/dtype.h"

namespace zt::launch {

// model.keep_activations = "auto", as the struct holds it.
inline constexpr int64_t kKeepActivationsAuto = -1;

struct ModelSection {
  std::string preset = "gptj-tiny";
  model::GptjConfig shape;  // the preset's shapes with any explicitly set key applied on top
  bool activation_checkpointing = false;
  // With checkpointing: the last N blocks are not recomputed; kKeepActivationsAuto ("auto") lets
  // the trainer pick the most that fit in the GPU's memory (launch/trainer.h).
  int64_t keep_activations = 0;
  std::string init_from;    // weights to start from (launch/init_weights.h); "" = random init
};

struct TrainSection {
  int64_t micro_batch_size = 8;
  int64_t grad_accum_steps = 1;
  // Sequences per optimizer step over all ranks (DeepSpeed's train_batch_size); > 0 derives
  // grad_accum_steps from the rank count at launch (with_rank_count below); 0 = not fixed.
  int64_t global_batch_size = 0;
  int64_t seq_len = 64;
  int64_t steps = 200;
  int64_t seed = 1234;
  int64_t log_every = 10;
  std::string out_dir = "runs/tiny-cpu";
  bool overwrite = false;  // allow replacing the outputs of an earlier run in out_dir
  int64_t threads = 0;     // OpenMP threads; 0 = OpenMP's default (all cores, or OMP_NUM_THREADS)
  DType precision = DType::kF32;  // storage dtype of the parameters the model reads
  // "cuda", "cpu", or "auto": cuda when a GPU is visible and precision is bf16/fp16 (the CUDA
  // backend computes in 16 bits), else cpu.
  std::string device = "auto";
  // cuBLASLt algorithm choices (launch/run_gemm_choices.h): "" = the heuristic's pick.
  std::string gemm_choices;
  int64_t eval_every = 0;    // evaluate the validation split every this many steps; 0 = never
  int64_t eval_batches = 8;  // global batches of micro_batch_size x world sequences per evaluation
  bool eval_at_start = false;  // also evaluate before step 1 (a fresh run only; needs eval_every > 0)
  // Checkpoints (launch/trainer.h, note "trainer checkpoints"): "" = none.
  std::string checkpoint_dir;
  int64_t save_every = 0;  // steps between saves; 0 = only after the last step
  int64_t keep_last = 2;   // step checkpoints kept in checkpoint_dir (the `latest` one always)
  // "" = start fresh, "auto" = checkpoint_dir's `latest` if there is one, else a checkpoint folder.
  std::string resume;
  std::string on_checkpoint_error = "stop";  // "stop" | "continue" when a save fails
  int64_t max_skipped_steps = 50;  // consecutive non-finite steps that end the run; 0 = never
};

struct ZeroSection {
  int64_t stage = 0;                     // 0..3: what is partitioned across ranks
  int64_t bucket_elements = 25'000'000;  // gradient/parameter communication granularity
  std::string offload_optimizer = "none";  // "none" | "cpu": master + moments in host memory
  std::string offload_params = "none";     // "none" | "cpu": stage 3's parameter shard too
  // ZeRO-Offload's one-step delayed parameter update from this step on (0 = never): the CPU
  // AdamW of a step overlaps the next step's forward and backward (zero/engine.h).
  int64_t delayed_update_from_step = 0;
};

struct CommSection {
  double timeout_s = 600.0;  // a collective without progress this long aborts the run; 0 = never
  // How GPU ranks exchange tensors: "nccl" (one rank per GPU), "mpi" (through host memory over
  // MPI; ranks may share a GPU) or "auto" (nccl). The CPU backend always uses MPI.
  std::string backend = "auto";
};

struct DataSection {
  std::string source = "synthetic";  // "synthetic" or "hdf5" (a folder from `zerotrain prepare`)
  std::string path;                  // hdf5: the dataset folder (holds manifest.toml)
  std::string tokenizer;             // hdf5, optional: a tokenizer folder whose id must match
  bool verify = true;                // hdf5: checksum every shard before training starts
};

struct RunConfig {
  ModelSection model;
  optim::OptimizerConfig optimizer;
  TrainSection train;
  DataSection data;
  ZeroSection zero;
  CommSection comm;
  optim::LossScalerConfig fp16;  // dynamic loss scaling, used when train.precision = "fp16"
};

// Parses TOML text (`source_name` names it in errors, e.g. the file path), applies `overrides`
// ("section.key=value", as given to --set) in order, fills and validates a RunConfig.
// Every problem is a zt::UserError that names the key, the value and what is allowed: an unknown
// key also gives its line and the closest valid key.
RunConfig parse_config(std::string_view toml_text, std::string_view source_name,
                       const std::vector<std::string>& overrides);
// Reads the file at `path` (empty path: defaults only) and calls parse_config.
RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides);

// The config of a run on `ranks` ranks: with train.global_batch_size > 0, grad_accum_steps =
// global_batch_size / (micro_batch_size x ranks). Throws zt::UserError, naming the keys and
// what would work, when that is not a whole number or grad_accum_steps was set (> 1) to another.
RunConfig with_rank_count(const RunConfig& config, int ranks);

// The resolved config as TOML, every key present, loadable by parse_config to the same result.
std::string config_to_toml(const RunConfig& config);

// The reference of every key (type, default, allowed values, meaning): plain text for
// `zerotrain train --help`, Markdown for docs/config.md (a test keeps the file in sync).
std::string config_reference_text();
std::string config_reference_markdown();

}  // namespace zt::launch
