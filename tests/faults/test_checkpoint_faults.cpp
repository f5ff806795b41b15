// Damaged engine checkpoints (note "engine checkpoint format", zero/checkpoint.h) through both
// readers, resuming (zero::load_checkpoint) and reading weights (zero::CheckpointWeights): the
// manifest cut at every line or with bad fields, rank files cut short, and rank files whose
// /pieces or /master is missing or wrong (checksums made to match, so the reader meets them).
// Each must be a zt::UserError naming the file (issue 8).
#include <gtest/gtest.h>

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/hdf5_check.h"
#include "datasets/token_format.h"
#include "model/config.h"
#include "runtime/self_comm.h"
#include "tests/faults/outcome.h"
#include "tests/support/temp_dir.h"
#include "zero/checkpoint.h"
#include "zero/checkpoint_io.h"
#include "zero/engine.h"
#include "zero/weights.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;
using testing::expect_clean;
using testing::expect_user_error;
using testing::Outcome;
using testing::outcome_of;

EngineOptions engine_options() {
  EngineOptions o;
  o.stage = 1;
  o.bucket_elements = 1000;  // several pieces per parameter: a real /pieces table
  return o;
}

// A model much smaller than gptj-tiny (8k parameters): the checksums and copies of every case
// stay cheap, also under the sanitizers.
model::GptjConfig small_model() {
  model::GptjConfig c;
  c.vocab_size = 64;
  c.n_positions = 32;
  c.d_model = 32;
  c.n_layer = 1;
  c.n_head = 2;
  c.rotary_dim = 8;
  c.d_ff = 64;
  return c;
}

// A copy of the checkpoint: its folder, manifest and (only) rank file.
struct Copy {
  std::string dir, manifest, rank_file;
};

// One saved checkpoint of gptj-tiny for the suite; each case damages its own copy.
class CheckpointFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(testing::fresh_dir("checkpoint_faults"));
    SelfComm comm;
    Engine e(small_model(), engine_options(), comm);
    save_checkpoint(e, comm, (*root_ / "pristine").string(), {});
  }
  static void TearDownTestSuite() { delete root_; }

  Copy copy(const std::string& name) const {
    const fs::path to = *root_ / name;
    fs::copy(*root_ / "pristine", to, fs::copy_options::recursive);
    return {to.string(), (to / "manifest.toml").string(), (to / "rank-00000.h5").string()};
  }
  std::string pristine_manifest() const { return testing::read_file(*root_ / "pristine" / "manifest.toml"); }

  // Both readers on `dir`: resuming into a fresh engine, and reading it as weights (with and
  // without the checksums).
  std::vector<std::pair<std::string, Outcome>> read_all(const std::string& dir) {
    std::vector<std::pair<std::string, Outcome>> out;
    out.emplace_back("load_checkpoint", outcome_of([&] { load_checkpoint(engine_, comm_, dir); }));
    out.emplace_back("CheckpointWeights", outcome_of([&] {
                       CheckpointWeights w(dir);
                       std::vector<float> buf(size_t(w.specs().front().numel()));
                       w.read(0, 0, w.specs().front().numel(), buf.data());
                     }));
    out.emplace_back("CheckpointWeights unverified", outcome_of([&] {
                       CheckpointWeights w(dir, /*verify_checksums=*/false);
                       for (size_t i = 0; i < w.specs().size(); ++i) {
                         std::vector<float> buf(size_t(w.specs()[i].numel()));
                         w.read(int(i), 0, w.specs()[i].numel(), buf.data());
                       }
                     }));
    return out;
  }

  void expect_refused(const std::string& dir, const std::string& input, const std::vector<std::string>& parts) {
    for (const auto& [reader, o] : read_all(dir)) expect_user_error(o, reader + ", " + input, parts);
  }

  static fs::path* root_;
  SelfComm comm_;
  Engine engine_{small_model(), engine_options(), comm_};
};
fs::path* CheckpointFaults::root_ = nullptr;

// Rewrites the manifest's checksum of the rank file to the file's present bytes, so readers get
// past the checksum to what was changed inside.
void reseal(const Copy& c) {
  std::string text = testing::read_file(c.manifest);
  const size_t at = text.find("checksum = \"zt64:");
  ASSERT_NE(at, std::string::npos);
  text.replace(at + 12, 21, datasets::format_checksum(checkpoint_io::file_checksum(c.rank_file)));
  testing::write_file(fs::path(c.dir), "manifest.toml", text);
}

TEST_F(CheckpointFaults, PristineCheckpointLoads) {
  const Copy c = copy("ok");
  for (const auto& [reader, o] : read_all(c.dir)) EXPECT_EQ(o.kind, Outcome::kAccepted) << reader << ": " << o.message;
}

TEST_F(CheckpointFaults, ManifestCutAtEveryLine) {
  const std::string text = pristine_manifest();
  const Copy c = copy("cut");
  const size_t end = text.find_last_not_of("\n ") + 1;
  for (size_t at = 0; at != std::string::npos; at = text.find('\n', at + 1)) {
    for (size_t cut : {at, std::min(text.size(), at + 5)}) {
      testing::write_file(fs::path(c.dir), "manifest.toml", text.substr(0, cut));
      // Only a cut of trailing blank space leaves the manifest whole.
      for (const auto& [reader, o] : read_all(c.dir)) {
        if (cut >= end) {
          expect_clean(o, reader + ", manifest cut at byte " + std::to_string(cut), /*may_accept=*/true);
        } else {
          expect_user_error(o, reader + ", manifest cut at byte " + std::to_string(cut), {c.manifest});
        }
      }
    }
  }
}

TEST_F(CheckpointFaults, ManifestWithBadFields) {
  struct Case {
    std::string from, to;  // the first `from` in the manifest becomes `to`
    std::string part;      // in the message, beside the manifest's path
  };
  const std::vector<Case> cases = {
      {"format = \"zerotrain-checkpoint\"", "format = \"zerotrain-tokens\"", "format"},
      {"format_version = 1", "format_version = 2", "format_version"},
      {"format_version = 1", "format_version = \"1\"", "format_version"},
      {"param_dtype = \"fp32\"", "param_dtype = \"fp8\"", "param_dtype"},
      {"world_size = 1", "world_size = 0", "world_size"},
      {"world_size = 1", "world_size = -1", "world_size"},
      {"world_size = 1", "world_size = 9223372036854775807", "world_size"},
      {"world_size = 1", "world_size = 2", "[[ranks]]"},
      {"stage = 1", "stage = 7", "stage"},
      {"steps_taken = 0", "steps_taken = -1", "steps_taken"},
      {"[[ranks]]", "[ranks]", "[[ranks]]"},
      {"[[ranks]]", "[[other]]", "[[ranks]]"},
      {"checksum = \"zt64:", "checksum = \"zt64:zz", "checksum"},
      {"checksum = \"zt64:", "checksum = \"", "checksum"},
      {"checksum = \"zt64:", "checksum = 5 #", "checksum"},
      {"pieces = ", "pieces = -1 #", "pieces"},
      {"pieces = ", "pieces = 9223372036854775807 #", "pieces"},
      {"elements = ", "elements = -1 #", "elements"},
      {"elements = ", "elements = 9223372036854775807 #", "elements"},
      {"file = \"rank-00000.h5\"", "file = \"rank-00009.h5\"", "rank-00009.h5"},
      {"file = \"rank-00000.h5\"", "file = \"../pristine/rank-00000.h5\"", "rank-00000.h5"},
      {"file = \"rank-00000.h5\"", "file = \"\"", "file"},
      {"d_model = 32", "d_model = 0", "d_model"},
      {"d_model = 32", "d_model = -32", "d_model"},
      {"n_layer = 1", "n_layer = 9223372036854775807", "n_layer"},
      {"vocab_size = 64", "vocab_size = 9223372036854775807", "vocab_size"},
  };
  int index = 0;
  for (const Case& k : cases) {
    const Copy c = copy("field" + std::to_string(index++));
    std::string text = pristine_manifest();
    const size_t at = text.find(k.from);
    ASSERT_NE(at, std::string::npos) << k.from << " in " << text;
    text.replace(at, k.from.size(), k.to);
    testing::write_file(fs::path(c.dir), "manifest.toml", text);
    // The manifest, or (a count that only the rank file can contradict) the rank file.
    expect_refused(c.dir, "manifest with " + k.to, {c.dir + "/", k.part});
  }
}

TEST_F(CheckpointFaults, RankFileCutShort) {
  const uintmax_t size = fs::file_size(*root_ / "pristine" / "rank-00000.h5");
  for (uintmax_t n : {uintmax_t(0), uintmax_t(7), uintmax_t(512), size / 2, size - 1}) {
    const Copy c = copy("cut" + std::to_string(n));
    fs::resize_file(c.rank_file, n);
    expect_refused(c.dir, "rank file cut to " + std::to_string(n) + " bytes", {c.rank_file});
    reseal(c);  // past the checksum: HDF5 meets the cut file
    expect_refused(c.dir, "resealed rank file cut to " + std::to_string(n) + " bytes", {c.rank_file});
  }
}

// Replaces the rank file's /pieces with `table` ([rows, columns] int64), or deletes it when empty.
void replace_pieces(const std::string& path, const std::vector<int64_t>& table, hsize_t columns) {
  std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
  datasets::H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  ASSERT_TRUE(file);
  ASSERT_GE(H5Ldelete(file.get(), "pieces", H5P_DEFAULT), 0);
  if (table.empty()) return;
  const hsize_t dims[2] = {table.size() / columns, columns};
  datasets::H5Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  datasets::H5Handle ds(H5Dcreate2(file.get(), "pieces", H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                   H5P_DEFAULT),
                        H5Dclose);
  ASSERT_TRUE(ds);
  ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, table.data()), 0);
}

std::vector<int64_t> read_pieces(const std::string& path) {
  std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
  datasets::H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  datasets::H5Handle ds(H5Dopen2(file.get(), "pieces", H5P_DEFAULT), H5Dclose);
  datasets::H5Handle space(H5Dget_space(ds.get()), H5Sclose);
  std::vector<int64_t> table(size_t(H5Sget_simple_extent_npoints(space.get())));
  H5Dread(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, table.data());
  return table;
}

TEST_F(CheckpointFaults, RankFileWithMissingOrWrongArrays) {
  const std::vector<int64_t> good = read_pieces((*root_ / "pristine" / "rank-00000.h5").string());
  ASSERT_GE(good.size(), 10u);
  {
    const Copy c = copy("no_pieces");
    replace_pieces(c.rank_file, {}, 5);
    reseal(c);
    expect_refused(c.dir, "no /pieces", {c.rank_file, "pieces"});
  }
  {
    const Copy c = copy("no_master");
    {
      std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
      datasets::H5Handle file(H5Fopen(c.rank_file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
      ASSERT_GE(H5Ldelete(file.get(), "master", H5P_DEFAULT), 0);
    }
    reseal(c);
    expect_refused(c.dir, "no /master", {c.rank_file, "master"});
  }
  {
    const Copy c = copy("pieces_columns");
    std::vector<int64_t> three;
    for (size_t i = 0; i < good.size(); ++i)
      if (i % 5 < 3) three.push_back(good[i]);
    replace_pieces(c.rank_file, three, 3);
    reseal(c);
    expect_refused(c.dir, "/pieces with 3 columns", {c.rank_file, "pieces"});
  }
  // One bad value in each column of the first and last rows: spec index, parameter size, begin,
  // length, offset.
  const std::vector<int64_t> bad_values = {-1, 999, int64_t(1) << 62, INT64_MIN};
  int index = 0;
  for (size_t row : {size_t(0), good.size() / 5 - 1}) {
    for (size_t column = 0; column < 5; ++column) {
      for (int64_t v : bad_values) {
        const Copy c = copy("piece" + std::to_string(index++));
        std::vector<int64_t> table = good;
        table[row * 5 + column] = v;
        replace_pieces(c.rank_file, table, 5);
        reseal(c);
        const std::string input = "/pieces[" + std::to_string(row) + ", " + std::to_string(column) +
                                  "] = " + std::to_string(v);
        // The rank file, or (pieces that no longer cover a parameter) the checkpoint folder.
        expect_refused(c.dir, input, {c.dir});
      }
    }
  }
}

}  // namespace
}  // namespace zt::zero
