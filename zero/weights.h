// Model weights in and out of the engine (issue 7): loading any model::WeightSource into an engine
// as the start of training (`model.init_from`), a zerotrain checkpoint read as a WeightSource
// without an engine, and weights-only checkpoints (`zerotrain convert hf-to-zt`). The files are
// those of note "engine checkpoint format" in zero/checkpoint.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/weight_source.h"
#include "runtime/comm.h"
#include "runtime/dtype.h"
#include "zero/engine.h"

namespace zt::zero {

// Elements read from a WeightSource at a time: bounds the extra host memory of an import or a
// conversion (64 MiB of fp32 per buffer) whatever the model size.
inline constexpr int64_t kWeightChunkElements = int64_t(16) << 20;

// Throws zt::UserError when weights with shapes `source` (described by `what`) cannot go into a
// model with shapes `run`: names every field that differs with both values, and how to fix it.
void check_weight_shapes(const model::GptjConfig& source, const model::GptjConfig& run,
                         const std::string& what);

// Collective: every rank of `comm` (the engine's comm) calls it between steps. "Start training from
// these weights": checks that src has the engine's model shapes (zt::UserError naming each field
// that differs, with both values), then each rank reads only its own owned pieces from src
// (stage 0: everything) in chunks of kWeightChunkElements, sets the fp32 master to them and the
// Adam moments to zero, and the model-facing parameters follow (rounded to the parameter dtype,
// all-gathered for stages 1-2). Counters (steps taken, loss scaler) are left as they are. A
// failure on any rank throws on every rank (the others say another rank failed).
// `chunk_elements`: tests pass small ones so chunks cross piece edges.
void load_weights(Engine& engine, Comm& comm, model::WeightSource& src,
                  int64_t chunk_elements = kWeightChunkElements);

// A complete zerotrain checkpoint folder (manifest.toml present), full or weights-only, read as a
// WeightSource by a single process: no engine or comm. Opening reads and checks the manifest,
// verifies the zt64 checksums of every rank file (unless verify_checksums is false; they read
// every byte once) and indexes their /pieces tables; read() then takes hyperslabs of the /master
// arrays of whichever files hold overlapping pieces. Errors are zt::UserError naming the file.
class CheckpointWeights final : public model::WeightSource {
 public:
  explicit CheckpointWeights(const std::string& dir, bool verify_checksums = true);
  ~CheckpointWeights() override;
  CheckpointWeights(const CheckpointWeights&) = delete;
  CheckpointWeights& operator=(const CheckpointWeights&) = delete;

  const model::GptjConfig& config() const override { return config_; }
  // A range not fully covered by the saved pieces is a zt::UserError naming the parameter.
  void read(int spec_index, int64_t begin, int64_t end, float* out) override;
  // "zerotrain checkpoint DIR (step 200, 4 rank files)"; "zerotrain weights-only checkpoint DIR
  // (1 rank file)".
  std::string describe() const override;

  // The manifest's record: the parameter dtype it was trained (or converted) for, whether it holds
  // the Adam moments (false: weights-only), and the trainer's step at save ([meta] step).
  DType param_dtype() const { return param_dtype_; }
  bool has_optimizer_state() const { return optimizer_state_; }
  int64_t step() const { return step_; }
  const std::vector<model::ParamSpec>& specs() const { return specs_; }

 private:
  struct Files;          // the open rank files (HDF5 handles)
  struct Piece {         // one saved piece of a parameter
    int64_t param_begin, numel;
    size_t file;
    int64_t offset;      // in that file's /master
  };

  std::string dir_;
  model::GptjConfig config_;
  std::vector<model::ParamSpec> specs_;
  DType param_dtype_ = DType::kF32;
  bool optimizer_state_ = true;
  int64_t step_ = 0;
  std::unique_ptr<Files> files_;
  std::vector<std::vector<Piece>> pieces_;  // per spec, sorted by param_begin
};

// Single process: writes `src` as a weights-only checkpoint at DIR (note "engine checkpoint
// format": world_size 1, stage 0, steps 0, optimizer_state = false, one rank file with one /pieces
// row per parameter and /master only; param_dtype recorded for the runs that start from it).
// Streams parameter by parameter in chunks of kWeightChunkElements. Crash safe as
// save_checkpoint (DIR.tmp-0/, manifest last, rename); an existing complete checkpoint at DIR is
// refused (zt::UserError) unless `overwrite`.
void save_weights_checkpoint(const std::string& dir, model::WeightSource& src, DType param_dtype,
                             bool overwrite, int64_t chunk_elements = kWeightChunkElements);

}  // namespace zt::zero
