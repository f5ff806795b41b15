// Internals shared by engine checkpoints and weight import/export (zero/checkpoint_io.h): files,
// checksums, the manifest (written by hand so its keys keep a readable order; read with TOML++),
// HDF5 array I/O and the crash-safe publish of note "engine checkpoint format" (checkpoint.h).
#include "zero/checkpoint_io.h"

#include <toml++/toml.h>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>

#include "datasets/manifest_toml.h"
#include "datasets/token_format.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/text.h"

namespace zt::zero::checkpoint_io {

using datasets::H5Handle;

std::string rank_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.h5", rank);
  return buf;
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

// ---- the manifest ----

std::string manifest_to_toml(const CheckpointManifest& m) {
  std::ostringstream os;
  os << (m.optimizer_state ? "# zerotrain checkpoint: per-rank optimizer-state shards"
                            : "# zerotrain checkpoint: model weights only, no optimizer state")
     << " (note \"engine checkpoint format\",\n"
     << "# zero/checkpoint.h). Written last: every rank file listed here is complete.\n"
     << "format = " << toml_quote(kCheckpointFormat) << "\n"
     << "format_version = " << m.format_version << "\n"
     << "optimizer_state = " << (m.optimizer_state ? "true" : "false") << "\n"
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

namespace {

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

}  // namespace

CheckpointManifest parse_manifest(const std::string& text, const std::string& source) {
  const toml::table root = datasets::parse_manifest_toml(text, source, kRemedy);
  CheckpointManifest m;
  m.format_version = datasets::manifest_format_version(root, kCheckpointFormat, kCheckpointFormatVersion,
                                                       source, kRemedy, "");
  // Absent in checkpoints written before weights-only ones existed: those all hold the moments.
  if (const toml::node* node = root.get("optimizer_state")) {
    const auto flag = node->value<bool>();
    if (!flag) bad_manifest(source, "optimizer_state is not true or false");
    m.optimizer_state = *flag;
  }
  const std::string dtype = require_string(root, "param_dtype", "", source);
  if (!parse_dtype(dtype, &m.param_dtype)) bad_manifest(source, "param_dtype = \"" + dtype + "\" is not a dtype");
  m.world_size = require_int(root, "world_size", "", source);
  m.stage = require_int(root, "stage", "", source);
  m.counters.steps_taken = require_int(root, "steps_taken", "", source);
  m.counters.skipped_steps = require_int(root, "skipped_steps", "", source);
  // Values no save writes (a damaged or edited manifest): refused here, naming the manifest,
  // rather than deeper in a loader that would name something else or nothing.
  if (m.stage < 0 || m.stage > 3)
    bad_manifest(source, "stage = " + std::to_string(m.stage) + " is not a ZeRO stage (0 to 3)");
  if (m.counters.steps_taken < 0 || m.counters.skipped_steps < 0)
    bad_manifest(source, "steps_taken = " + std::to_string(m.counters.steps_taken) + " and skipped_steps = " +
                             std::to_string(m.counters.skipped_steps) + " must not be negative");
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
    if (r.pieces < 0 || r.elements < 0)
      bad_manifest(source, where + "pieces = " + std::to_string(r.pieces) + " and elements = " +
                               std::to_string(r.elements) + " must not be negative");
    m.ranks.push_back(std::move(r));
  }
  return m;
}

CheckpointManifest read_manifest(const fs::path& dir) {
  const fs::path manifest_path = dir / kManifest;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw_user_error("checkpoint folder ", dir.string(), " does not exist (or is not a folder)");
  if (!fs::is_regular_file(manifest_path, ec))
    throw_user_error(manifest_path.string(), " is missing: ", dir.string(),
                     " is not a complete zerotrain checkpoint (its save did not finish?)");
  return parse_manifest(read_file(manifest_path, "checkpoint manifest"), manifest_path.string());
}

void verify_rank_file(const fs::path& dir, const CheckpointManifest& m, size_t index) {
  const fs::path path = dir / m.ranks[index].file;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw_user_error("checkpoint file ", path.string(), " is missing (listed in ", (dir / kManifest).string(), ")");
  const uint64_t sum = file_checksum(path);
  if (sum != m.ranks[index].checksum)
    throw_user_error("checkpoint file ", path.string(), " is corrupt: its checksum is ",
                     datasets::format_checksum(sum), ", the manifest says ",
                     datasets::format_checksum(m.ranks[index].checksum));
}

// ---- HDF5 ----

H5Handle create_rank_file(const fs::path& path, const std::vector<int64_t>& table) {
  datasets::hdf5_quiet();
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0)
    throw_user_error("cannot create checkpoint file ", path.string(), " (", datasets::hdf5_error_message(),
                     "): check that the checkpoint folder is writable and has space");
  H5Handle file(f, H5Fclose);
  write_piece_table(f, table, path.string());
  return file;
}

H5Handle create_array(hid_t file, const char* name, int64_t n) {
  const hsize_t dims[1] = {hsize_t(n)};
  H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(1, dims, nullptr), "creating the ", name, " space"), H5Sclose);
  return H5Handle(ZT_HDF5_CHECK(H5Dcreate2(file, name, H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                           H5P_DEFAULT, H5P_DEFAULT),
                                "creating /", name),
                  H5Dclose);
}

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

void write_piece_table(hid_t file, const std::vector<int64_t>& table, const std::string& path) {
  const hsize_t dims[2] = {hsize_t(table.size() / kPieceColumns), hsize_t(kPieceColumns)};
  H5Handle space(ZT_HDF5_CHECK(H5Screate_simple(2, dims, nullptr), "creating the pieces space"), H5Sclose);
  H5Handle ds(ZT_HDF5_CHECK(H5Dcreate2(file, "pieces", H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT),
                            "creating /pieces in ", path),
              H5Dclose);
  if (!table.empty())
    ZT_HDF5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, table.data()),
                  "writing /pieces to ", path);
}

void write_rank_attributes(hid_t file, int64_t rank, int64_t world_size, int64_t stage) {
  datasets::write_string_attribute(file, "format", std::string(kCheckpointFormat));
  datasets::write_int_attribute(file, "format_version", kCheckpointFormatVersion);
  datasets::write_int_attribute(file, "rank", rank);
  datasets::write_int_attribute(file, "world_size", world_size);
  datasets::write_int_attribute(file, "stage", stage);
}

SavedFile open_saved(const fs::path& path, const RankEntry& entry, const std::vector<model::ParamSpec>& specs,
                     bool moments) {
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
  if (moments) {
    s.m = open("adam_m");
    s.v = open("adam_v");
  }
  for (const H5Handle* d : {&s.master, &s.m, &s.v}) {
    if (!*d) continue;
    H5Handle ds(ZT_HDF5_CHECK(H5Dget_space(d->get()), "getting an array space"), H5Sclose);
    if (H5Sget_simple_extent_npoints(ds.get()) != entry.elements)
      throw_user_error("checkpoint file ", s.path, ": its arrays do not hold ", entry.elements,
                       " elements as the manifest says");
  }
  // Compared by subtraction, which cannot overflow for any stored values. The pieces lie packed
  // in row order (note "engine checkpoint format"): another offset is a damaged table.
  int64_t packed = 0;
  for (int64_t r = 0; r < s.rows(); ++r) {
    const int64_t* row = s.table.data() + r * kPieceColumns;
    const int64_t spec = row[0], param_numel = row[1], begin = row[2], n = row[3], offset = row[4];
    if (spec < 0 || spec >= int64_t(specs.size()) || param_numel != specs[size_t(spec)].numel() ||
        begin < 0 || n < 0 || begin > param_numel || n > param_numel - begin || offset != packed ||
        n > entry.elements - offset)
      throw_user_error("checkpoint file ", s.path, ": /pieces row ", r, " (", spec, ", ", param_numel, ", ",
                       begin, ", ", n, ", ", offset, ") does not fit this model's parameters");
    packed += n;
  }
  return s;
}

// ---- publishing ----

void check_destination(const fs::path& final_dir, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) return;
  if (is_complete_checkpoint(final_dir.string())) {
    if (!overwrite)
      throw_user_error("checkpoint folder ", final_dir.string(),
                       " already holds a complete checkpoint; refusing to overwrite it (choose "
                       "another folder, or delete it)");
    return;
  }
  if (!fs::is_directory(final_dir, ec) || !fs::is_empty(final_dir, ec))
    throw_user_error(final_dir.string(), " exists and is not a zerotrain checkpoint (no ", kManifest,
                     "); refusing to write a checkpoint there");
}

void write_manifest(const fs::path& tmp_dir, const CheckpointManifest& m) {
  const fs::path manifest = tmp_dir / kManifest;
  replace_file(manifest, manifest_to_toml(m));
}

void publish(const fs::path& tmp_dir, const fs::path& final_dir, bool overwrite, int64_t steps) {
  check_destination(final_dir, overwrite);
  // With overwrite (check_destination refused otherwise) a complete checkpoint at final_dir is
  // swapped with the new one atomically, so `latest` never names a missing folder.
  replace_dir(tmp_dir, final_dir, final_dir.string() + ".old-" + std::to_string(steps));
}

}  // namespace zt::zero::checkpoint_io
