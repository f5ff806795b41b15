// Internals shared by the engine checkpoints (zero/checkpoint.cpp) and the weight import/export
// (zero/weights.cpp): rank-file names, checksums, the manifest record and its TOML, HDF5 array
// I/O, opening a saved rank file, and the crash-safe publish (flushed to disk with
// runtime/file_io.h). Not part of the public API; the format they implement is the note "engine
// checkpoint format" in zero/checkpoint.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/hdf5_check.h"
#include "model/config.h"
#include "model/params.h"
#include "runtime/agreed.h"
#include "runtime/dtype.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"

namespace zt::zero::checkpoint_io {

namespace fs = std::filesystem;

inline constexpr std::string_view kManifest = "manifest.toml";
inline constexpr int kPieceColumns = 5;  // spec_index, param_numel, param_begin, numel, offset

std::string rank_file_name(int rank);  // "rank-00003.h5"

// run_agreed (runtime/agreed.h) with the vote through the engine, whose comm may move device
// buffers only.
template <class F>
void agreed(Engine& engine, const char* what, F&& f) {
  run_agreed_by([&](bool failed) { return engine.any_rank(failed); }, what, f);
}

// zt64 over the whole file's bytes (read in 4 MiB blocks).
uint64_t file_checksum(const fs::path& path);

// ---- the manifest ----

struct RankEntry {
  std::string file;
  uint64_t checksum = 0;
  int64_t pieces = 0;
  int64_t elements = 0;
};

struct CheckpointManifest {
  int64_t format_version = kCheckpointFormatVersion;
  // False for a weights-only checkpoint (save_weights_checkpoint): no /adam_m, /adam_v.
  bool optimizer_state = true;
  model::GptjConfig model;
  DType param_dtype = DType::kF32;
  int64_t world_size = 1;
  int64_t stage = 0;
  EngineCounters counters;
  CheckpointMeta meta;
  std::vector<RankEntry> ranks;
};

std::string manifest_to_toml(const CheckpointManifest& m);
// Throws zt::UserError naming `source` for anything that is not a manifest this zerotrain reads.
CheckpointManifest parse_manifest(const std::string& text, const std::string& source);
// manifest.toml of DIR: a UserError when DIR or its manifest is missing.
CheckpointManifest read_manifest(const fs::path& dir);
// Every rank file listed exists and has the manifest's checksum (UserError naming the file).
void verify_rank_file(const fs::path& dir, const CheckpointManifest& m, size_t index);

// ---- HDF5 (callers hold datasets::hdf5_mutex()) ----

// Creates (truncating) the rank file at `path` and writes its /pieces `table` (rows of
// kPieceColumns); a file that cannot be created is a UserError naming it.
datasets::H5Handle create_rank_file(const std::filesystem::path& path, const std::vector<int64_t>& table);
// A 1-D float32 dataset of n elements.
datasets::H5Handle create_array(hid_t file, const char* name, int64_t n);
// Writes (or reads) floats [offset, offset + n) of a 1-D float32 dataset.
void array_io(hid_t dataset, int64_t offset, int64_t n, float* data, bool write, const std::string& path);
// /pieces (rows of kPieceColumns) and the root attributes of a rank file.
void write_piece_table(hid_t file, const std::vector<int64_t>& table, const std::string& path);
void write_rank_attributes(hid_t file, int64_t rank, int64_t world_size, int64_t stage);

// One saved rank file, open for reading, with its piece table (checked against `specs`).
struct SavedFile {
  std::string path;
  datasets::H5Handle file;
  datasets::H5Handle master, m, v;  // m and v stay closed unless asked for
  std::vector<int64_t> table;       // rows of kPieceColumns
  int64_t rows() const { return int64_t(table.size()) / kPieceColumns; }
};
// Takes the HDF5 lock itself. `moments`: also open /adam_m and /adam_v.
SavedFile open_saved(const fs::path& path, const RankEntry& entry, const std::vector<model::ParamSpec>& specs,
                     bool moments);

// ---- publishing (note "engine checkpoint format": crash safety) ----

// Nothing, an empty folder, or (with overwrite) a complete checkpoint at final_dir; anything else
// is not ours to replace (UserError).
void check_destination(const fs::path& final_dir, bool overwrite);
// tmp_dir/manifest.toml via manifest.toml.tmp, flushed before the rename; then tmp_dir is flushed
// too, which makes every rename into it so far (the rank files') durable.
void write_manifest(const fs::path& tmp_dir, const CheckpointManifest& m);
// Renames the complete tmp_dir to final_dir (an existing complete checkpoint there is moved to
// final_dir.old-<steps> first and deleted after), then flushes the parent folder.
void publish(const fs::path& tmp_dir, const fs::path& final_dir, bool overwrite, int64_t steps);

}  // namespace zt::zero::checkpoint_io
