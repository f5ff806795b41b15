// Engine checkpoints: every rank saves its own optimizer-state shard (fp32 master, Adam m and v)
// with the parameter ranges it covers; loading re-partitions them onto any world size and stage.
// Weights-only checkpoints and reading a checkpoint as model weights: zero/weights.h.
//
// Note "engine checkpoint format" (cited by checkpoint.cpp and the tests):
//
//   DIR/
//     manifest.toml     written LAST by rank 0, once every rank file is complete: its presence
//                       means the checkpoint is complete. It holds
//                         format = "zerotrain-checkpoint", format_version = 1,
//                         optimizer_state = true | false (absent: true, as in checkpoints
//                                 written before weights-only ones existed),
//                         param_dtype = "fp32" | "bf16" | "fp16", world_size, stage (at save),
//                         steps_taken, skipped_steps,
//                         [model] vocab_size, n_positions, d_model, n_layer, n_head, rotary_dim,
//                                 d_ff,
//                         [loss_scaler] scale, clean_steps, hysteresis_left (fp16; what
//                                 optim::DynamicLossScaler needs to continue bit for bit),
//                         [meta] step, [meta.extra] "key" = "value" ... (CheckpointMeta),
//                         [[ranks]] {file, checksum, pieces, elements} in rank order.
//     rank-00000.h5 ... one HDF5 file per saving rank:
//       /master, /adam_m, /adam_v   1-D float32 [elements]: the rank's owned pieces packed one
//                                   after another (no padding); /adam_m and /adam_v only when
//                                   optimizer_state is true
//       /pieces   2-D int64 [pieces, 5], one row per owned piece:
//                 spec_index (model::gptj_param_specs order), param_numel (that parameter's
//                 size, a consistency check), param_begin (first element within the parameter,
//                 row-major), numel, offset (where the piece starts in the three arrays)
//       attributes of the root group: format (string), format_version, rank, world_size,
//                 stage (int64).
//     Stage 0 saves once: every rank owns everything, so only rank 0's file holds pieces (the
//     other ranks' files are empty, so the file count is always the world size).
//
// Weights-only checkpoints (zero::save_weights_checkpoint, e.g. `zerotrain convert hf-to-zt`):
// optimizer_state = false, world_size 1, stage 0, steps_taken 0, a default [loss_scaler]; one rank
// file whose /pieces has one row per parameter (spec order) and which holds /master only;
// param_dtype is the dtype the weights are meant to train in. load_checkpoint (resuming) refuses
// them: a run starts from them with `model.init_from` (zero::load_weights over
// zero::CheckpointWeights, which reads both kinds).
//
// Checksums: zt64 (datasets/token_format.h) over the whole rank file's bytes as written, so any
// change to the arrays, the piece table or the attributes is caught. On load, rank r verifies
// files r, r + N, r + 2N, ... (N the loading world size), and the outcome is agreed across ranks
// before any state is read.
//
// Crash safety: everything is written into DIR.tmp-<steps_taken>/ (each rank file first as
// rank-XXXXX.h5.tmp, renamed once closed and checksummed), then rank 0 writes manifest.toml (via
// manifest.toml.tmp) and renames the folder to DIR. A crash at any point leaves DIR either absent
// or the previous complete checkpoint; a stale DIR.tmp-* is removed by the next save to DIR.
// Files and folders are fsync'ed before the renames that publish them.
// Overwriting a complete DIR (SaveOptions::overwrite) swaps the new one into place atomically
// and deletes the old one (runtime/file_io.h replace_dir; a filesystem without the exchange
// moves the old one to DIR.old-<steps_taken> first).
//
// Re-partitioning: each loading rank takes, for each of its own owned pieces (parameter p,
// elements [b, b + n)), the overlap with every saved piece of p, and checks that the overlaps
// cover the piece exactly. Then the model-facing parameters are rebuilt from the loaded master
// (the rank's pieces rounded to the parameter dtype, all-gathered for stages 1-2).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/comm.h"
#include "zero/engine.h"

namespace zt::zero {

inline constexpr std::string_view kCheckpointFormat = "zerotrain-checkpoint";
inline constexpr int64_t kCheckpointFormatVersion = 1;

// What the trainer keeps beside the engine's state.
struct CheckpointMeta {
  int64_t step = 0;                           // the trainer's step count at save
  std::map<std::string, std::string> extra;   // e.g. sampler position, RNG state, LR state
};

struct SaveOptions {
  // Replace a complete checkpoint already at the destination (refused otherwise).
  bool overwrite = false;
  // Tests: called on the ranks that reach each named point; throwing there simulates a save that
  // dies midway. Points: "rank_file" (every rank, its file renamed into the temporary folder),
  // "manifest" (rank 0, before writing the manifest), "publish" (rank 0, manifest written,
  // before renaming the folder to its final name).
  std::function<void(std::string_view point)> fault_hook;
};

// Collective: every rank of `comm` (the engine's comm) calls it between steps. Throws on every rank
// when any rank fails (zt::UserError for an existing destination); DIR is then unchanged.
void save_checkpoint(Engine& engine, Comm& comm, const std::string& dir, const CheckpointMeta& meta,
                     const SaveOptions& options = {});

// Collective. Verifies the manifest (a weights-only checkpoint is refused: see the note above) and
// the checksums, fills this rank's owned pieces from whatever saved pieces overlap them (any saved
// world size and stage), rebuilds the parameters and restores the counters and loss-scaler state.
// A missing file, a checksum mismatch, another model shape or parameter dtype: zt::UserError
// naming the file and what is wrong (on the rank that found it; the other ranks throw a UserError
// saying another rank failed).
CheckpointMeta load_checkpoint(Engine& engine, Comm& comm, const std::string& dir);

// True when DIR holds a manifest.toml (a complete checkpoint, see the note above).
bool is_complete_checkpoint(const std::string& dir);

// What load_checkpoint checks of DIR's manifest before it reads any state, for a run to refuse a
// checkpoint before it writes anything: it holds optimizer state, and `shape` and `param_dtype`
// are its own (zt::UserError otherwise, as for a manifest that cannot be read). Returns the
// manifest's meta.
CheckpointMeta check_resumable(const std::string& dir, const model::GptjConfig& shape,
                               DType param_dtype);

}  // namespace zt::zero
