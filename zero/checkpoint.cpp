// Engine checkpoints (note "engine checkpoint format" in checkpoint.h): HDF5 rank files, the
// manifest (written by hand so its keys keep a readable order; read with TOML++), and the
// re-partitioning load.
#include "zero/checkpoint.h"

#include <fcntl.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "datasets/hdf5_check.h"
#include "datasets/manifest_toml.h"
#include "datasets/token_format.h"
#include "model/params.h"
#include "runtime/agreed.h"
#include "runtime/error.h"
#include "runtime/text.h"

namespace zt::zero {

namespace fs = std::filesystem;
using datasets::H5Handle;
using datasets::write_int_attribute;
using datasets::write_string_attribute;

namespace {

constexpr std::string_view kManifest = "manifest.toml";
constexpr int kPieceColumns = 5;  // spec_index, param_numel, param_begin, numel, offset

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.h5", rank);
  return buf;
}

// run_agreed (runtime/agreed.h) with the vote through the engine, whose comm may move device
// buffers only.
template <class F>
void agreed(Engine& engine, const char* what, F&& f) {
  run_agreed_by([&](bool failed) { return engine.any_rank(failed); }, what, f);
}

uint64_t file_checksum(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_user_error("cannot read checkpoint file ", path.string());
  datasets::Checksum64 sum;
  std::vector<char> buf(size_t(1) << 22);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    const std::streamsize got = in.gcount();
    if (got > 0) sum.update(buf.data(), size_t(got));
  }
  if (in.bad()) throw_user_error("error reading checkpoint file ", path.string());
  return sum.value();
}

// Flushes a file's (or a folder's entries') data to the storage device, so a rename that
// publishes it cannot survive a power loss that its contents do not.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw_user_error("cannot open ", path.string(), " to flush it to disk");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw_user_error("cannot flush ", path.string(), " to disk (fsync failed)");
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw_user_error("cannot write ", path.string(), ": check that the folder is writable and has space");
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_user_error("cannot read ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- HDF5 helpers (callers hold the HDF5 lock) ----

H5Handle create_array(hid_t file, const char* name, int64_t n) {
  const hsize_t dims[1] = {hsize_t(n)};
  H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(1, dims, nullptr), "creating the ", name, " space"), H5Sclose);
  return H5Handle(ZT_HDF5_CHECK(H5Dcreate2(file, name, H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                           H5P_DEFAULT, H5P_DEFAULT),
                                "creating /", name),
                  H5Dclose);
}

// Writes (or reads) floats [offset, offset + n) of a 1-D float32 dataset.
void array_io(hid_t dataset, int64_t offset, int64_t n, float* data, bool write, const std::string& path) {
  if (n == 0) return;
  H5Handle file_space(ZT_HDF5_CHECK(H5Dget_space(dataset), "getting a dataset space"), H5Sclose);
  const hsize_t start[1] = {hsize_t(offset)}, count[1] = {hsize_t(n)};
  ZT_HDF5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                "selecting elements of ", path);
  H5Handle mem_space(ZT_HDF5_CHECK(H5Screate_simple(1, count, nullptr), "creating a memory space"), H5Sclose);
  if (write)
    ZT_HDF5_CHECK(H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(), H5P_DEFAULT, data),
                  "writing ", path);
  else
    ZT_HDF5_CHECK(H5Dread(dataset, H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(), H5P_DEFAULT, data),
                  "reading ", path);
}

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
  datasets::hdf5_quiet();
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0)
    throw_user_error("cannot create checkpoint file ", path.string(), " (", datasets::hdf5_error_message(),
                     "): check that the checkpoint folder is writable and has space");
  H5Handle file(f, H5Fclose);
  {
    const hsize_t dims[2] = {hsize_t(pieces.size()), hsize_t(kPieceColumns)};
    H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(2, dims, nullptr), "creating the pieces space"), H5Sclose);
    H5Handle ds(ZT_HDF5_CHECK(H5Dcreate2(f, "pieces", H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                         H5P_DEFAULT, H5P_DEFAULT),
                              "creating /pieces in ", path.string()),
                H5Dclose);
    if (!table.empty())
      ZT_HDF5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, table.data()),
                    "writing /pieces to ", path.string());
  }
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
  write_string_attribute(f, "format", std::string(kCheckpointFormat));
  write_int_attribute(f, "format_version", kCheckpointFormatVersion);
  write_int_attribute(f, "rank", engine.rank());
  write_int_attribute(f, "world_size", engine.world_size());
  write_int_attribute(f, "stage", engine.stage());
  master.reset();
  m.reset();
  v.reset();
  ZT_HDF5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), "flushing ", path.string());
}

// ---- the manifest ----

struct RankEntry {
  std::string file;
  uint64_t checksum = 0;
  int64_t pieces = 0;
  int64_t elements = 0;
};

struct CheckpointManifest {
  int64_t format_version = kCheckpointFormatVersion;
  model::GptjConfig model;
  DType param_dtype = DType::kF32;
  int64_t world_size = 1;
  int64_t stage = 0;
  EngineCounters counters;
  CheckpointMeta meta;
  std::vector<RankEntry> ranks;
};

std::string manifest_to_toml(const CheckpointManifest& m) {
  std::ostringstream os;
  os << "# zerotrain checkpoint: per-rank optimizer-state shards (note \"engine checkpoint format\",\n"
     << "# zero/checkpoint.h). Written last: every rank file listed here is complete.\n"
     << "format = " << toml_quote(kCheckpointFormat) << "\n"
     << "format_version = " << m.format_version << "\n"
     << "param_dtype = " << toml_quote(dtype_name(m.param_dtype)) << "\n"
     << "world_size = " << m.world_size << "\n"
     << "stage = " << m.stage << "\n"
     << "steps_taken = " << m.counters.steps_taken << "\n"
     << "skipped_steps = " << m.counters.skipped_steps << "\n"
     << "\n[model]\n"
     << "vocab_size = " << m.model.vocab_size << "\n"
     << "n_positions = " << m.model.n_positions << "\n"
     << "d_model = " << m.model.d_model << "\n"
     << "n_layer = " << m.model.n_layer << "\n"
     << "n_head = " << m.model.n_head << "\n"
     << "rotary_dim = " << m.model.rotary_dim << "\n"
     << "d_ff = " << m.model.d_ff << "\n"
     << "\n[loss_scaler]\n"
     << "scale = " << toml_float(m.counters.loss_scale) << "\n"
     << "clean_steps = " << m.counters.scaler_clean_steps << "\n"
     << "hysteresis_left = " << m.counters.scaler_hysteresis_left << "\n"
     << "\n[meta]\n"
     << "step = " << m.meta.step << "\n"
     << "\n[meta.extra]\n";
  for (const auto& [key, value] : m.meta.extra) os << toml_quote(key) << " = " << toml_quote(value) << "\n";
  for (const RankEntry& r : m.ranks)
    os << "\n[[ranks]]\n"
       << "file = " << toml_quote(r.file) << "\n"
       << "checksum = " << toml_quote(datasets::format_checksum(r.checksum)) << "\n"
       << "pieces = " << r.pieces << "\n"
       << "elements = " << r.elements << "\n";
  return os.str();
}

constexpr std::string_view kRemedy = "it is not a complete zerotrain checkpoint manifest";

[[noreturn]] void bad_manifest(const std::string& source, const std::string& what) {
  datasets::manifest_error(source, what, kRemedy);
}
const toml::table& require_table(const toml::table& t, const char* key, const std::string& source) {
  return datasets::manifest_table(t, key, source, kRemedy);
}
int64_t require_int(const toml::table& t, const char* key, const std::string& where, const std::string& source) {
  return datasets::manifest_int(t, key, where, source, kRemedy);
}
std::string require_string(const toml::table& t, const char* key, const std::string& where,
                           const std::string& source) {
  return datasets::manifest_string(t, key, where, source, kRemedy);
}

CheckpointManifest parse_manifest(const std::string& text, const std::string& source) {
  const toml::table root = datasets::parse_manifest_toml(text, source, kRemedy);
  CheckpointManifest m;
  const std::string format = require_string(root, "format", "", source);
  if (format != kCheckpointFormat)
    bad_manifest(source, "format = \"" + format + "\", expected \"" + std::string(kCheckpointFormat) + "\"");
  m.format_version = require_int(root, "format_version", "", source);
  if (m.format_version > kCheckpointFormatVersion)
    throw_user_error(source, ": format_version = ", m.format_version, " is newer than this zerotrain reads (",
                     kCheckpointFormatVersion, "): update zerotrain");
  if (m.format_version < 1) bad_manifest(source, "format_version must be >= 1");
  const std::string dtype = require_string(root, "param_dtype", "", source);
  if (!parse_dtype(dtype, &m.param_dtype)) bad_manifest(source, "param_dtype = \"" + dtype + "\" is not a dtype");
  m.world_size = require_int(root, "world_size", "", source);
  m.stage = require_int(root, "stage", "", source);
  m.counters.steps_taken = require_int(root, "steps_taken", "", source);
  m.counters.skipped_steps = require_int(root, "skipped_steps", "", source);
  const toml::table& model = require_table(root, "model", source);
  m.model.vocab_size = require_int(model, "vocab_size", "[model] ", source);
  m.model.n_positions = require_int(model, "n_positions", "[model] ", source);
  m.model.d_model = require_int(model, "d_model", "[model] ", source);
  m.model.n_layer = require_int(model, "n_layer", "[model] ", source);
  m.model.n_head = require_int(model, "n_head", "[model] ", source);
  m.model.rotary_dim = require_int(model, "rotary_dim", "[model] ", source);
  m.model.d_ff = require_int(model, "d_ff", "[model] ", source);
  const toml::table& scaler = require_table(root, "loss_scaler", source);
  const auto scale = scaler["scale"].value<double>();
  if (!scale) bad_manifest(source, "[loss_scaler] key \"scale\" is missing or not a number");
  m.counters.loss_scale = *scale;
  m.counters.scaler_clean_steps = require_int(scaler, "clean_steps", "[loss_scaler] ", source);
  m.counters.scaler_hysteresis_left = require_int(scaler, "hysteresis_left", "[loss_scaler] ", source);
  const toml::table& meta = require_table(root, "meta", source);
  m.meta.step = require_int(meta, "step", "[meta] ", source);
  if (const toml::table* extra = meta["extra"].as_table()) {
    for (const auto& [key, value] : *extra) {
      const auto s = value.value<std::string>();
      if (!s) bad_manifest(source, "[meta.extra] \"" + std::string(key.str()) + "\" is not a string");
      m.meta.extra[std::string(key.str())] = *s;
    }
  }
  const toml::array* ranks = root["ranks"].as_array();
  if (ranks == nullptr || !ranks->is_array_of_tables() || int64_t(ranks->size()) != m.world_size)
    bad_manifest(source, "[[ranks]] must list one table per saving rank (world_size = " +
                             std::to_string(m.world_size) + ")");
  for (size_t i = 0; i < ranks->size(); ++i) {
    const toml::table& t = *ranks->get(i)->as_table();
    const std::string where = "[[ranks]] #" + std::to_string(i + 1) + ": ";
    RankEntry r;
    r.file = require_string(t, "file", where, source);
    if (r.file != rank_file_name(int(i)))
      bad_manifest(source, where + "file \"" + r.file + "\", expected \"" + rank_file_name(int(i)) + "\"");
    const std::string checksum = require_string(t, "checksum", where, source);
    if (!datasets::parse_checksum(checksum, &r.checksum))
      bad_manifest(source, where + "checksum \"" + checksum + "\" is not zt64:<16 hex digits>");
    r.pieces = require_int(t, "pieces", where, source);
    r.elements = require_int(t, "elements", where, source);
    m.ranks.push_back(std::move(r));
  }
  return m;
}

// The manifest's model shape and dtype against the loading engine's.
void check_compatible(const CheckpointManifest& m, const Engine& engine, const std::string& source) {
  const model::GptjConfig& c = engine.config();
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
  if (m.param_dtype != engine.param_dtype())
    throw_user_error(source, ": the checkpoint was trained with param_dtype ", dtype_name(m.param_dtype),
                     ", this run uses ", dtype_name(engine.param_dtype()),
                     "; resume with the same precision");
}

// One saved rank file, open for reading, with its piece table.
struct SavedFile {
  std::string path;
  H5Handle file;
  H5Handle master, m, v;
  std::vector<int64_t> table;  // rows of kPieceColumns
  int64_t rows() const { return int64_t(table.size()) / kPieceColumns; }
};

SavedFile open_saved(const fs::path& path, const RankEntry& entry, const std::vector<model::ParamSpec>& specs) {
  SavedFile s;
  s.path = path.string();
  std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
  datasets::hdf5_quiet();
  const hid_t f = H5Fopen(s.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw_user_error("cannot open checkpoint file ", s.path, " (", datasets::hdf5_error_message(), ")");
  s.file = H5Handle(f, H5Fclose);
  auto open = [&](const char* name) {
    const hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) throw_user_error("checkpoint file ", s.path, " has no /", name, " dataset");
    return H5Handle(d, H5Dclose);
  };
  H5Handle pieces = open("pieces");
  H5Handle space(ZT_HDF5_CHECK(H5Dget_space(pieces.get()), "getting the pieces space"), H5Sclose);
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(space.get()) != 2 ||
      H5Sget_simple_extent_dims(space.get(), dims, nullptr) != 2 || dims[1] != hsize_t(kPieceColumns) ||
      int64_t(dims[0]) != entry.pieces)
    throw_user_error("checkpoint file ", s.path, ": /pieces is not a [", entry.pieces, ", ", kPieceColumns,
                     "] table as the manifest says");
  s.table.resize(size_t(dims[0]) * kPieceColumns);
  if (!s.table.empty())
    ZT_HDF5_CHECK(H5Dread(pieces.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.table.data()),
                  "reading /pieces of ", s.path);
  s.master = open("master");
  s.m = open("adam_m");
  s.v = open("adam_v");
  for (const H5Handle* d : {&s.master, &s.m, &s.v}) {
    H5Handle ds(ZT_HDF5_CHECK(H5Dget_space(d->get()), "getting an array space"), H5Sclose);
    if (H5Sget_simple_extent_npoints(ds.get()) != entry.elements)
      throw_user_error("checkpoint file ", s.path, ": its arrays do not hold ", entry.elements,
                       " elements as the manifest says");
  }
  for (int64_t r = 0; r < s.rows(); ++r) {
    const int64_t* row = s.table.data() + r * kPieceColumns;
    const int64_t spec = row[0], param_numel = row[1], begin = row[2], n = row[3], offset = row[4];
    if (spec < 0 || spec >= int64_t(specs.size()) || param_numel != specs[size_t(spec)].numel() ||
        begin < 0 || n < 0 || begin + n > param_numel || offset < 0 || offset + n > entry.elements)
      throw_user_error("checkpoint file ", s.path, ": /pieces row ", r, " (", spec, ", ", param_numel, ", ",
                       begin, ", ", n, ", ", offset, ") does not fit this model's parameters");
  }
  return s;
}

}  // namespace

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kManifest, ec);
}

void save_checkpoint(Engine& engine, Comm& comm, const std::string& dir, const CheckpointMeta& meta,
                     const SaveOptions& options) {
  ZT_CHECK(comm.rank() == engine.rank() && comm.size() == engine.world_size(),
           "save_checkpoint: the comm is not the engine's");
  const fs::path final_dir = fs::path(dir).lexically_normal();
  const int64_t steps = engine.counters().steps_taken;
  const fs::path tmp_dir = final_dir.string() + ".tmp-" + std::to_string(steps);
  const int rank = comm.rank();
  auto hook = [&](std::string_view point) {
    if (options.fault_hook) options.fault_hook(point);
  };
  // What is at the destination now: nothing, an empty folder, or a complete checkpoint (only with
  // overwrite). Anything else is not ours to replace.
  auto check_destination = [&] {
    std::error_code ec;
    if (!fs::exists(final_dir, ec)) return;
    if (is_complete_checkpoint(final_dir.string())) {
      if (!options.overwrite)
        throw_user_error("checkpoint folder ", final_dir.string(),
                         " already holds a complete checkpoint; refusing to overwrite it (choose "
                         "another folder, or delete it)");
      return;
    }
    if (!fs::is_directory(final_dir, ec) || !fs::is_empty(final_dir, ec))
      throw_user_error(final_dir.string(), " exists and is not a zerotrain checkpoint (no ", kManifest,
                       "); refusing to write a checkpoint there");
  };

  agreed(engine, "preparing the checkpoint folder", [&] {
    if (rank != 0) return;
    check_destination();
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
    write_text(rank_path.string() + ".zt64", datasets::format_checksum(sum));
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
      if (!datasets::parse_checksum(read_text(sum_path), &e.checksum))
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
    const fs::path manifest = tmp_dir / kManifest;
    write_text(manifest.string() + ".tmp", manifest_to_toml(m));
    sync_path(manifest.string() + ".tmp");
    fs::rename(manifest.string() + ".tmp", manifest);
    for (int r = 0; r < comm.size(); ++r) fs::remove(tmp_dir / (rank_file_name(r) + ".zt64"));
    sync_path(tmp_dir);  // the renamed rank files and manifest are entries of it
    hook("publish");
    check_destination();
    std::error_code ec;
    if (fs::exists(final_dir, ec) && is_complete_checkpoint(final_dir.string())) {
      // overwrite (check_destination refused otherwise): the old one is moved aside first, so
      // some complete checkpoint exists at every moment.
      const fs::path old = final_dir.string() + ".old-" + std::to_string(steps);
      fs::remove_all(old);
      fs::rename(final_dir, old);
      fs::rename(tmp_dir, final_dir);
      fs::remove_all(old);
    } else {
      fs::rename(tmp_dir, final_dir);  // onto nothing, or onto an empty folder
    }
    sync_path(final_dir.has_parent_path() ? final_dir.parent_path() : fs::path("."));
  });
}

CheckpointMeta load_checkpoint(Engine& engine, Comm& comm, const std::string& dir) {
  ZT_CHECK(comm.rank() == engine.rank() && comm.size() == engine.world_size(),
           "load_checkpoint: the comm is not the engine's");
  const fs::path root(dir);
  const fs::path manifest_path = root / kManifest;
  CheckpointManifest m;
  agreed(engine, "reading the checkpoint manifest", [&] {
    std::error_code ec;
    if (!fs::is_directory(root, ec))
      throw_user_error("checkpoint folder ", root.string(), " does not exist (or is not a folder)");
    if (!fs::is_regular_file(manifest_path, ec))
      throw_user_error(manifest_path.string(), " is missing: ", root.string(),
                       " is not a complete zerotrain checkpoint (its save did not finish?)");
    m = parse_manifest(read_text(manifest_path), manifest_path.string());
    check_compatible(m, engine, manifest_path.string());
  });
  agreed(engine, "verifying the checkpoint files", [&] {
    for (int64_t f = comm.rank(); f < m.world_size; f += comm.size()) {
      const fs::path path = root / m.ranks[size_t(f)].file;
      std::error_code ec;
      if (!fs::is_regular_file(path, ec))
        throw_user_error("checkpoint file ", path.string(), " is missing (listed in ", manifest_path.string(), ")");
      const uint64_t sum = file_checksum(path);
      if (sum != m.ranks[size_t(f)].checksum)
        throw_user_error("checkpoint file ", path.string(), " is corrupt: its checksum is ",
                         datasets::format_checksum(sum), ", the manifest says ",
                         datasets::format_checksum(m.ranks[size_t(f)].checksum));
    }
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
    for (const RankEntry& e : m.ranks) files.push_back(open_saved(root / e.file, e, specs));
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
