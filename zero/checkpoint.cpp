// Engine checkpoints (note "engine checkpoint format" in checkpoint.h): writing the rank files and
// the manifest through the shared internals of zero/checkpoint_io.h, and the re-partitioning load.
#include "zero/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/hdf5_check.h"
#include "datasets/token_format.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "zero/checkpoint_io.h"

namespace zt::zero {

namespace fs = std::filesystem;
using datasets::H5Handle;
using namespace checkpoint_io;

namespace {

// This rank's file: its pieces' master, m and v, packed, and the piece table.
void write_rank_file(Engine& engine, const fs::path& path, bool holds_pieces) {
  const std::vector<model::ParamSpec>& specs = engine.specs();
  std::vector<OwnedPiece> pieces;
  if (holds_pieces) pieces = engine.owned_pieces();
  std::vector<int64_t> table;
  int64_t elements = 0;
  for (const OwnedPiece& p : pieces) {
    const int spec = engine.layout().params[size_t(p.param)].spec_index;
    table.insert(table.end(), {int64_t(spec), specs[size_t(spec)].numel(), p.param_begin, p.numel, elements});
    elements += p.numel;
  }
  std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
  H5Handle file = create_rank_file(path, table);
  const hid_t f = file.get();
  H5Handle master = create_array(f, "master", elements);
  H5Handle m = create_array(f, "adam_m", elements);
  H5Handle v = create_array(f, "adam_v", elements);
  std::vector<float> bm, bv, bmaster;
  int64_t offset = 0;
  for (const OwnedPiece& p : pieces) {
    bmaster.resize(size_t(p.numel));
    bm.resize(size_t(p.numel));
    bv.resize(size_t(p.numel));
    engine.read_piece_state(p, bmaster.data(), bm.data(), bv.data());
    array_io(master.get(), offset, p.numel, bmaster.data(), true, path.string());
    array_io(m.get(), offset, p.numel, bm.data(), true, path.string());
    array_io(v.get(), offset, p.numel, bv.data(), true, path.string());
    offset += p.numel;
  }
  write_rank_attributes(f, engine.rank(), engine.world_size(), engine.stage());
  master.reset();
  m.reset();
  v.reset();
  ZT_HDF5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), "flushing ", path.string());
}

// The manifest's kind, model shape and dtype against a run's that would resume from it.
void check_compatible(const CheckpointManifest& m, const fs::path& root,
                      const model::GptjConfig& c, DType param_dtype) {
  const std::string source = (root / kManifest).string();
  // A weights-only checkpoint has no moments or counters to continue from.
  if (!m.optimizer_state)
    throw_user_error(root.string(), " holds weights only (no optimizer state; e.g. written by `zerotrain "
                     "convert hf-to-zt`), so a run cannot resume from it: start training from it with "
                     "model.init_from = \"", root.string(), "\" instead of train.resume");
  std::string diff;
  auto field = [&](const char* name, int64_t saved, int64_t mine) {
    if (saved != mine)
      diff += std::string(diff.empty() ? "" : ", ") + name + " " + std::to_string(saved) +
              " (this run: " + std::to_string(mine) + ")";
  };
  field("vocab_size", m.model.vocab_size, c.vocab_size);
  field("n_positions", m.model.n_positions, c.n_positions);
  field("d_model", m.model.d_model, c.d_model);
  field("n_layer", m.model.n_layer, c.n_layer);
  field("n_head", m.model.n_head, c.n_head);
  field("rotary_dim", m.model.rotary_dim, c.rotary_dim);
  field("d_ff", m.model.d_ff, c.d_ff);
  if (!diff.empty())
    throw_user_error(source, ": the checkpoint is of another model shape: ", diff,
                     "; load it with the model config it was saved with");
  if (m.param_dtype != param_dtype)
    throw_user_error(source, ": the checkpoint was trained with param_dtype ", dtype_name(m.param_dtype),
                     ", this run uses ", dtype_name(param_dtype),
                     "; resume with the same precision");
}

}  // namespace

CheckpointMeta check_resumable(const std::string& dir, const model::GptjConfig& shape,
                               DType param_dtype) {
  const CheckpointManifest m = read_manifest(fs::path(dir));
  check_compatible(m, fs::path(dir), shape, param_dtype);
  return m.meta;
}

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kManifest, ec);
}

void save_checkpoint(Engine& engine, Comm& comm, const std::string& dir, const CheckpointMeta& meta,
                     const SaveOptions& options) {
  ZT_CHECK(comm.rank() == engine.rank() && comm.size() == engine.world_size(),
           "save_checkpoint: the comm is not the engine's");
  engine.finish_update();  // a delayed update in flight belongs to the state being saved
  const fs::path final_dir = fs::path(dir).lexically_normal();
  const int64_t steps = engine.counters().steps_taken;
  const fs::path tmp_dir = final_dir.string() + ".tmp-" + std::to_string(steps);
  const int rank = comm.rank();
  auto hook = [&](std::string_view point) {
    if (options.fault_hook) options.fault_hook(point);
  };

  agreed(engine, "preparing the checkpoint folder", [&] {
    if (rank != 0) return;
    check_destination(final_dir, options.overwrite);
    if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
    fs::remove_all(tmp_dir);  // a save to the same place that died earlier
    fs::create_directories(tmp_dir);
  });

  // Every rank's file, then its checksum beside it for rank 0 (files, not the comm: a shared
  // folder is needed anyway, and the comm may move device buffers only).
  const fs::path rank_path = tmp_dir / rank_file_name(rank);
  agreed(engine, "writing the checkpoint rank files", [&] {
    const fs::path partial = rank_path.string() + ".tmp";
    write_rank_file(engine, partial, engine.stage() > 0 || rank == 0);
    const uint64_t sum = file_checksum(partial);
    sync_path(partial);
    fs::rename(partial, rank_path);
    hook("rank_file");
    write_file_synced(rank_path.string() + ".zt64", datasets::format_checksum(sum));
  });

  agreed(engine, "writing the checkpoint manifest", [&] {
    if (rank != 0) return;
    CheckpointManifest m;
    m.model = engine.config();
    m.param_dtype = engine.param_dtype();
    m.world_size = comm.size();
    m.stage = engine.stage();
    m.counters = engine.counters();
    m.meta = meta;
    for (int r = 0; r < comm.size(); ++r) {
      RankEntry e;
      e.file = rank_file_name(r);
      const fs::path sum_path = tmp_dir / (e.file + ".zt64");
      if (!datasets::parse_checksum(read_file(sum_path, "checkpoint checksum"), &e.checksum))
        throw_user_error(sum_path.string(), " does not hold a zt64 checksum");
      if (engine.stage() > 0 || r == 0) {
        const FlatLayout& layout = engine.layout();
        for (const OwnedPiece& p : layout.owned_pieces(engine.stage() == 0 ? 0 : r)) {
          ++e.pieces;
          e.elements += p.numel;
        }
      }
      m.ranks.push_back(e);
    }
    hook("manifest");
    write_manifest(tmp_dir, m);
    for (int r = 0; r < comm.size(); ++r) fs::remove(tmp_dir / (rank_file_name(r) + ".zt64"));
    sync_path(tmp_dir);  // the checksum files' removal (write_manifest flushed the renames)
    hook("publish");
    publish(tmp_dir, final_dir, options.overwrite, steps);
  });
}

CheckpointMeta load_checkpoint(Engine& engine, Comm& comm, const std::string& dir) {
  ZT_CHECK(comm.rank() == engine.rank() && comm.size() == engine.world_size(),
           "load_checkpoint: the comm is not the engine's");
  engine.finish_update();  // nothing may still write the state being replaced
  const fs::path root(dir);
  CheckpointManifest m;
  agreed(engine, "reading the checkpoint manifest", [&] {
    m = read_manifest(root);
    check_compatible(m, root, engine.config(), engine.param_dtype());
  });
  agreed(engine, "verifying the checkpoint files", [&] {
    for (int64_t f = comm.rank(); f < m.world_size; f += comm.size()) verify_rank_file(root, m, size_t(f));
  });
  agreed(engine, "loading the checkpoint state", [&] {
    const std::vector<model::ParamSpec>& specs = engine.specs();
    // HDF5 ids are closed under the HDF5 lock, also when this throws.
    struct Files {
      std::vector<SavedFile> list;
      ~Files() {
        std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
        list.clear();
      }
    } open_files;
    std::vector<SavedFile>& files = open_files.list;
    for (const RankEntry& e : m.ranks) files.push_back(open_saved(root / e.file, e, specs, /*moments=*/true));
    // Saved pieces by parameter: (file, row).
    std::vector<std::vector<std::pair<size_t, int64_t>>> by_spec(specs.size());
    for (size_t f = 0; f < files.size(); ++f)
      for (int64_t r = 0; r < files[f].rows(); ++r)
        by_spec[size_t(files[f].table[size_t(r * kPieceColumns)])].push_back({f, r});
    std::vector<float> master, mm, vv;
    for (const OwnedPiece& p : engine.owned_pieces()) {
      const int spec = engine.layout().params[size_t(p.param)].spec_index;
      master.resize(size_t(p.numel));
      mm.resize(size_t(p.numel));
      vv.resize(size_t(p.numel));
      int64_t covered = 0;
      for (const auto& [f, r] : by_spec[size_t(spec)]) {
        SavedFile& s = files[f];
        const int64_t* row = s.table.data() + r * kPieceColumns;
        const int64_t begin = std::max(p.param_begin, row[2]);
        const int64_t end = std::min(p.param_begin + p.numel, row[2] + row[3]);
        if (begin >= end) continue;
        const int64_t at = row[4] + (begin - row[2]);  // in the saved arrays
        const size_t to = size_t(begin - p.param_begin);
        std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
        datasets::hdf5_quiet();
        array_io(s.master.get(), at, end - begin, master.data() + to, false, s.path);
        array_io(s.m.get(), at, end - begin, mm.data() + to, false, s.path);
        array_io(s.v.get(), at, end - begin, vv.data() + to, false, s.path);
        covered += end - begin;
      }
      if (covered != p.numel)
        throw_user_error("checkpoint ", root.string(), ": the saved pieces of ", specs[size_t(spec)].name,
                         " cover ", covered, " of the ", p.numel, " elements [", p.param_begin, ", ",
                         p.param_begin + p.numel, ") this rank needs (overlapping or missing pieces)");
      engine.write_piece_state(p, master.data(), mm.data(), vv.data());
    }
    engine.restore_counters(m.counters);
  });
  engine.finish_state_load();
  return m.meta;
}

}  // namespace zt::zero
