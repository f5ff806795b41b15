// Model weights in and out of the engine (zero/weights.h): load_weights, CheckpointWeights and
// weights-only checkpoints, over the files of note "engine checkpoint format" (checkpoint.h) and
// the internals shared with the engine checkpoints (checkpoint_io.h).
#include "zero/weights.h"

#include <algorithm>
#include <memory>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "datasets/hdf5_check.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "zero/checkpoint_io.h"

namespace zt::zero {

namespace fs = std::filesystem;
using datasets::H5Handle;
using namespace checkpoint_io;

namespace {

// A piece of `p`: elements [p.param_begin + at, + n) with the same placement (write_piece_state
// takes any run of an owned piece).
OwnedPiece sub_piece(const OwnedPiece& p, int64_t at, int64_t n) {
  return OwnedPiece{p.param, p.param_begin + at, p.flat_begin + at, p.local_begin + at, n};
}

}  // namespace

// ---- load_weights ----

void check_weight_shapes(const model::GptjConfig& source, const model::GptjConfig& run, const std::string& what) {
  std::string theirs, ours;
  auto field = [&](const char* name, const auto& a, const auto& b) {
    if (a == b) return;
    std::ostringstream t, o;
    t << (theirs.empty() ? "" : ", ") << name << " = " << a;
    o << (ours.empty() ? "" : ", ") << name << " = " << b;
    theirs += t.str();
    ours += o.str();
  };
  field("vocab_size", source.vocab_size, run.vocab_size);
  field("n_positions", source.n_positions, run.n_positions);
  field("d_model", source.d_model, run.d_model);
  field("n_layer", source.n_layer, run.n_layer);
  field("n_head", source.n_head, run.n_head);
  field("rotary_dim", source.rotary_dim, run.rotary_dim);
  field("d_ff", source.d_ff, run.d_ff);
  field("layer_norm_eps", source.layer_norm_eps, run.layer_norm_eps);  // not a shape; changes every result
  if (!theirs.empty())
    throw_user_error(what, " has ", theirs, " but the run's model has ", ours,
                     " (set model.preset / the model.* keys to the weights' shapes)");
}


void load_weights(Engine& engine, Comm& comm, model::WeightSource& src, int64_t chunk_elements) {
  ZT_CHECK(comm.rank() == engine.rank() && comm.size() == engine.world_size(),
           "load_weights: the comm is not the engine's");
  engine.finish_update();  // nothing may still write the state being replaced
  ZT_CHECK(chunk_elements > 0, "load_weights: chunk_elements must be positive");
  agreed(engine, "loading the model weights", [&] {
    check_weight_shapes(src.config(), engine.config(), src.describe());
    int64_t largest = 0;
    for (const OwnedPiece& p : engine.owned_pieces()) largest = std::max(largest, p.numel);
    const size_t chunk = size_t(std::max<int64_t>(1, std::min(largest, chunk_elements)));
    std::vector<float> master(chunk);
    for (const OwnedPiece& p : engine.owned_pieces()) {
      const int spec = engine.layout().params[size_t(p.param)].spec_index;
      for (int64_t at = 0; at < p.numel; at += int64_t(chunk)) {
        const int64_t n = std::min(int64_t(chunk), p.numel - at);
        src.read(spec, p.param_begin + at, p.param_begin + at + n, master.data());
        engine.write_piece_state(sub_piece(p, at, n), master.data(), nullptr, nullptr);  // m = v = 0
      }
    }
  });
  engine.finish_state_load();
}

// ---- CheckpointWeights ----

// HDF5 ids are closed under the HDF5 lock, also when the constructor throws halfway.
struct CheckpointWeights::Files {
  std::vector<SavedFile> list;
  ~Files() {
    std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
    list.clear();
  }
};

CheckpointWeights::CheckpointWeights(const std::string& dir, bool verify_checksums) : dir_(dir) {
  const fs::path root(dir);
  const CheckpointManifest m = read_manifest(root);
  const std::string manifest_path = (root / kManifest).string();
  config_ = m.model;
  try {
    config_.validate();
  } catch (const UserError& e) {
    throw_user_error(manifest_path, ": its [model] shapes are not a valid GPT-J (", e.what(), ")");
  }
  // The manifest's shapes size the spec table and every index after it: a damaged manifest (say
  // n_layer = 2^63 - 1) must be refused before they are used, not exhaust memory. Every parameter
  // element is saved exactly once, so the shapes' parameter count (in double: no overflow) must
  // be the [[ranks]] elements in all; open_saved then holds those counts to the files.
  double elements = 0;
  for (const RankEntry& e : m.ranks) elements += double(e.elements);
  const double d = double(config_.d_model), f = double(config_.d_ff), v = double(config_.vocab_size);
  const double params = 2 * v * d + v + double(config_.n_layer) * (4 * d * d + 2 * f * d + f + 3 * d) + 2 * d;
  if (params != elements)
    throw_user_error(manifest_path, ": its [model] shapes (vocab_size ", config_.vocab_size, ", d_model ",
                     config_.d_model, ", n_layer ", config_.n_layer, ", d_ff ", config_.d_ff, ") have ", params,
                     " parameters but its [[ranks]] hold ", elements, " elements: the manifest is damaged; "
                     "save or convert the checkpoint again");
  specs_ = model::gptj_param_specs(config_);
  param_dtype_ = m.param_dtype;
  optimizer_state_ = m.optimizer_state;
  step_ = m.meta.step;
  if (verify_checksums)
    for (size_t i = 0; i < m.ranks.size(); ++i) verify_rank_file(root, m, i);
  files_ = std::make_unique<Files>();
  for (const RankEntry& e : m.ranks)
    files_->list.push_back(open_saved(root / e.file, e, specs_, /*moments=*/false));

  pieces_.assign(specs_.size(), {});
  for (size_t f = 0; f < files_->list.size(); ++f) {
    const SavedFile& s = files_->list[f];
    for (int64_t r = 0; r < s.rows(); ++r) {
      const int64_t* row = s.table.data() + r * kPieceColumns;
      if (row[3] > 0) pieces_[size_t(row[0])].push_back(Piece{row[2], row[3], f, row[4]});
    }
  }
  for (size_t spec = 0; spec < pieces_.size(); ++spec) {
    std::vector<Piece>& list = pieces_[spec];
    std::sort(list.begin(), list.end(), [](const Piece& a, const Piece& b) { return a.param_begin < b.param_begin; });
    for (size_t i = 1; i < list.size(); ++i) {
      const Piece& a = list[i - 1];
      const Piece& b = list[i];
      if (b.param_begin < a.param_begin + a.numel)
        throw_user_error("checkpoint ", dir_, ": the saved pieces of ", specs_[spec].name, " overlap (elements [",
                         a.param_begin, ", ", a.param_begin + a.numel, ") in ", files_->list[a.file].path, " and [",
                         b.param_begin, ", ", b.param_begin + b.numel, ") in ", files_->list[b.file].path,
                         "): the piece tables are inconsistent; save the checkpoint again");
    }
  }
}

CheckpointWeights::~CheckpointWeights() = default;

void CheckpointWeights::read(int spec_index, int64_t begin, int64_t end, float* out) {
  ZT_CHECK(spec_index >= 0 && size_t(spec_index) < specs_.size() && begin >= 0 && begin <= end &&
               end <= specs_[size_t(spec_index)].numel(),
           "CheckpointWeights::read: parameter ", spec_index, " elements [", begin, ", ", end, ") out of range");
  const std::vector<Piece>& list = pieces_[size_t(spec_index)];
  // The first piece that ends after `begin` (pieces are sorted and do not overlap).
  auto it = std::partition_point(list.begin(), list.end(),
                                 [&](const Piece& p) { return p.param_begin + p.numel <= begin; });
  int64_t covered = 0;
  std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
  datasets::hdf5_quiet();
  for (; it != list.end() && it->param_begin < end; ++it) {
    const int64_t from = std::max(begin, it->param_begin);
    const int64_t to = std::min(end, it->param_begin + it->numel);
    const SavedFile& s = files_->list[it->file];
    array_io(s.master.get(), it->offset + (from - it->param_begin), to - from, out + (from - begin), false, s.path);
    covered += to - from;
  }
  if (covered != end - begin)
    throw_user_error("checkpoint ", dir_, ": its rank files hold only ", covered, " of the elements [", begin, ", ",
                     end, ") of ", specs_[size_t(spec_index)].name,
                     " (pieces are missing: the checkpoint is incomplete; save it again)");
}

std::string CheckpointWeights::describe() const {
  const size_t n = files_->list.size();
  const std::string files = std::to_string(n) + (n == 1 ? " rank file" : " rank files");
  if (!optimizer_state_) return "zerotrain weights-only checkpoint " + dir_ + " (" + files + ")";
  return "zerotrain checkpoint " + dir_ + " (step " + std::to_string(step_) + ", " + files + ")";
}

// ---- weights-only checkpoints ----

void save_weights_checkpoint(const std::string& dir, model::WeightSource& src, DType param_dtype,
                             bool overwrite, int64_t chunk_elements) {
  ZT_CHECK(chunk_elements > 0, "save_weights_checkpoint: chunk_elements must be positive");
  ZT_CHECK(param_dtype == DType::kF32 || param_dtype == DType::kBF16 || param_dtype == DType::kF16,
           "save_weights_checkpoint: param_dtype ", dtype_name(param_dtype), " is not a parameter dtype");
  const model::GptjConfig config = src.config();
  config.validate();
  const std::vector<model::ParamSpec> specs = model::gptj_param_specs(config);
  const fs::path final_dir = fs::path(dir).lexically_normal();
  if (final_dir.empty()) throw_user_error("save_weights_checkpoint: no destination folder given");
  constexpr int64_t kSteps = 0;  // names the temporary folder, as save_checkpoint's steps do
  const fs::path tmp_dir = final_dir.string() + ".tmp-" + std::to_string(kSteps);

  check_destination(final_dir, overwrite);
  if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
  fs::remove_all(tmp_dir);  // a conversion to the same place that died earlier
  fs::create_directories(tmp_dir);
  try {
    // One piece per parameter, packed in spec order.
    std::vector<int64_t> table;
    int64_t elements = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      const int64_t n = specs[i].numel();
      table.insert(table.end(), {int64_t(i), n, 0, n, elements});
      elements += n;
    }
    const fs::path rank_path = tmp_dir / rank_file_name(0);
    const fs::path partial = rank_path.string() + ".tmp";
    {
      // The ids close under the HDF5 lock; the lock is not held while `src` reads (a
      // CheckpointWeights source takes it itself).
      struct Open {
        H5Handle file, master;
        ~Open() {
          std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
          master.reset();
          file.reset();
        }
      } h;
      {
        std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
        h.file = create_rank_file(partial, table);
        h.master = create_array(h.file.get(), "master", elements);
        write_rank_attributes(h.file.get(), /*rank=*/0, /*world_size=*/1, /*stage=*/0);
      }
      std::vector<float> buf(size_t(std::max<int64_t>(1, std::min(elements, chunk_elements))));
      int64_t offset = 0;
      for (size_t i = 0; i < specs.size(); ++i) {
        const int64_t numel = specs[i].numel();
        for (int64_t at = 0; at < numel; at += int64_t(buf.size())) {
          const int64_t n = std::min(int64_t(buf.size()), numel - at);
          src.read(int(i), at, at + n, buf.data());
          std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
          datasets::hdf5_quiet();
          array_io(h.master.get(), offset + at, n, buf.data(), true, partial.string());
        }
        offset += numel;
      }
      std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
      ZT_HDF5_CHECK(H5Fflush(h.file.get(), H5F_SCOPE_GLOBAL), "flushing ", partial.string());
    }
    const uint64_t sum = file_checksum(partial);
    sync_path(partial);
    fs::rename(partial, rank_path);

    CheckpointManifest m;
    m.optimizer_state = false;
    m.model = config;
    m.param_dtype = param_dtype;
    m.world_size = 1;
    m.stage = 0;
    m.counters = EngineCounters{};  // steps 0; the scaler fields are unused without moments
    m.ranks.push_back(RankEntry{rank_file_name(0), sum, int64_t(specs.size()), elements});
    write_manifest(tmp_dir, m);  // also flushes tmp_dir, with the renamed rank file in it
    publish(tmp_dir, final_dir, overwrite, kSteps);
  } catch (...) {
    // Single process: nobody else can be using the temporary folder; a partial multi-GB file
    // should not outlive the failure.
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    throw;
  }
}

}  // namespace zt::zero
