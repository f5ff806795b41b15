// Damaged token datasets through the trainer's dataset check (launch::TrainingData, the check
// every run makes before training): shards cut short, bytes flipped, datasets and attributes
// deleted with the HDF5 C API, and manifest.toml cut or with bad fields. Each must be a
// zt::UserError naming the file (issue 8).
#include <gtest/gtest.h>

#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "datasets/hdf5_check.h"
#include "launch/config.h"
#include "launch/training_data.h"
#include "runtime/self_comm.h"
#include "tests/faults/outcome.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_dataset.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;
using testing::expect_clean;
using testing::expect_user_error;
using testing::Outcome;
using testing::outcome_of;

// One tiny dataset for the whole suite (train and val splits, several train shards); each case
// damages its own copy.
const std::string& pristine_dataset() {
  static const std::string ds = [] {
    const std::string dir = (fs::path(::testing::TempDir()) / ("zt_faults_ds_" + std::to_string(getpid()))).string();
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::atexit([] { fs::remove_all(fs::path(::testing::TempDir()) / ("zt_faults_ds_" + std::to_string(getpid()))); });
    return testing::make_tiny_dataset(dir, 60, 4);
  }();
  return ds;
}

// A fresh copy of the dataset in dir/name.
std::string copy_dataset(const std::string& dir, const std::string& name) {
  const fs::path to = fs::path(dir) / name;
  fs::copy(pristine_dataset(), to, fs::copy_options::recursive);
  return to.string();
}

// The trainer's check of data.path (with the validation split, and checksums unless !verify).
Outcome check(const std::string& ds, bool verify = true) {
  return outcome_of([&] {
    RunConfig c = parse_config("", "test", {"data.source=hdf5", "data.path=" + ds});
    c.train.micro_batch_size = 2;
    c.train.seq_len = 16;
    c.train.eval_every = 5;
    c.train.device = "cpu";
    c.data.verify = verify;
    SelfComm comm;
    TrainingData data(c, comm);
  });
}

TEST(DatasetFaults, PristineDatasetPasses) {
  const Outcome o = check(pristine_dataset());
  EXPECT_EQ(o.kind, Outcome::kAccepted) << o.message;
}

TEST(DatasetFaults, ShardCutShort) {
  const std::string dir = testing::fresh_dir("cut");
  const uintmax_t size = fs::file_size(fs::path(pristine_dataset()) / "train-00000.h5");
  for (uintmax_t n : {uintmax_t(0), uintmax_t(1), uintmax_t(7), uintmax_t(8), uintmax_t(100), uintmax_t(512),
                      size / 4, size / 2, size - 100, size - 1}) {
    for (bool verify : {true, false}) {
      const std::string ds = copy_dataset(dir, "cut" + std::to_string(n) + (verify ? "v" : ""));
      const std::string shard = ds + "/train-00000.h5";
      fs::resize_file(shard, n);
      expect_user_error(check(ds, verify), "train-00000.h5 cut to " + std::to_string(n) + " bytes", {shard});
    }
  }
}

TEST(DatasetFaults, ShardWithFlippedBytes) {
  const std::string dir = testing::fresh_dir("flip");
  std::mt19937 rng(8);  // fixed seed: the same damage every run
  for (int trial = 0; trial < 30; ++trial) {
    const std::string ds = copy_dataset(dir, "flip" + std::to_string(trial));
    const std::string shard = ds + "/val-00000.h5";
    std::string bytes = testing::read_file(shard);
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] ^= char(1 + rng() % 255);
    std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
    // A flip in unused space (padding, free blocks) changes nothing the reader sees.
    const Outcome o = check(ds);
    expect_clean(o, "val-00000.h5 with flipped bytes, trial " + std::to_string(trial), /*may_accept=*/true);
    if (o.kind == Outcome::kUserError) {
      EXPECT_NE(o.message.find(shard), std::string::npos) << "trial " << trial << ": " << o.message;
    }
  }
}

TEST(DatasetFaults, ShardMissingADatasetOrAttribute) {
  const std::string dir = testing::fresh_dir("delete");
  const std::vector<std::string> datasets = {"tokens", "doc_offsets"};
  const std::vector<std::string> attributes = {"format", "tokenizer", "format_version", "vocab_size", "eos_id"};
  // These repeat what the arrays themselves show (their dtype and lengths, checked against the
  // manifest): without them the shard still reads right.
  const std::vector<std::string> redundant = {"token_dtype", "split", "tokens", "documents"};
  auto damaged = [&](const std::string& name, bool attribute) {
    const std::string ds = copy_dataset(dir, (attribute ? "attr_" : "ds_") + name);
    const std::string shard = ds + "/train-00001.h5";
    {
      std::lock_guard<std::mutex> lock(datasets::hdf5_mutex());
      datasets::H5Handle file(H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
      EXPECT_TRUE(file);
      if (attribute) {
        EXPECT_GE(H5Adelete(file.get(), name.c_str()), 0) << name;
      } else {
        EXPECT_GE(H5Ldelete(file.get(), name.c_str(), H5P_DEFAULT), 0) << name;
      }
    }
    return std::make_pair(ds, shard);
  };
  for (const std::string& name : datasets) {
    const auto [ds, shard] = damaged(name, false);
    // The cheap checks alone must already see it.
    expect_user_error(check(ds, /*verify=*/false), "no /" + name, {shard, name});
  }
  for (const std::string& name : attributes) {
    const auto [ds, shard] = damaged(name, true);
    expect_user_error(check(ds, /*verify=*/false), "no attribute " + name, {shard, name});
  }
  for (const std::string& name : redundant) {
    const auto [ds, shard] = damaged(name, true);
    const Outcome o = check(ds);
    EXPECT_EQ(o.kind, Outcome::kAccepted) << "no attribute " << name << ": " << o.message;
  }
}

TEST(DatasetFaults, ManifestCutAtEveryLine) {
  const std::string dir = testing::fresh_dir("manifest_cut");
  const std::string text = testing::read_file(fs::path(pristine_dataset()) / "manifest.toml");
  const std::string ds = copy_dataset(dir, "ds");
  const std::string manifest = ds + "/manifest.toml";
  int lines = 0;
  for (size_t at = 0; at != std::string::npos; at = text.find('\n', at + 1)) {
    // Cut after a line, and in the middle of the next one.
    for (size_t cut : {at, std::min(text.size(), at + 6)}) {
      testing::write_file(ds, "manifest.toml", text.substr(0, cut));
      // A cut at the end of a [[train]] or [[val]] table leaves a smaller dataset that is
      // still consistent; every other cut must be refused.
      const Outcome o = check(ds, /*verify=*/false);
      expect_clean(o, "manifest cut at byte " + std::to_string(cut), /*may_accept=*/true);
      if (o.kind == Outcome::kUserError) {
        EXPECT_NE(o.message.find(ds + "/"), std::string::npos) << "cut at " << cut << ": " << o.message;
      }
    }
    ++lines;
  }
  EXPECT_GT(lines, 10);
}

TEST(DatasetFaults, ManifestWithBadFields) {
  const std::string dir = testing::fresh_dir("manifest_fields");
  const std::string text = testing::read_file(fs::path(pristine_dataset()) / "manifest.toml");
  struct Case {
    std::string from, to;              // the first `from` in the manifest becomes `to`
    std::vector<std::string> parts;    // in the message, beside the manifest's path
  };
  const std::vector<Case> cases = {
      {"format = \"zerotrain-tokens\"", "format = \"other\"", {"format"}},
      {"format_version = 1", "format_version = 99", {"format_version"}},
      {"format_version = 1", "format_version = \"1\"", {"format_version"}},
      {"vocab_size = 257", "vocab_size = 0", {"vocab_size"}},
      {"vocab_size = 257", "vocab_size = -257", {"vocab_size"}},
      {"vocab_size = 257", "vocab_size = 9223372036854775807", {"vocab_size"}},
      {"eos_id = ", "eos_id = -1 #", {"eos_id"}},
      {"eos_id = ", "eos_id = 100000 #", {"eos_id"}},
      {"token_dtype = \"uint16\"", "token_dtype = \"int8\"", {"token_dtype"}},
      {"token_dtype = \"uint16\"", "token_dtype = \"uint32\"", {"uint32"}},
      {"checksum = \"zt64:", "checksum = \"zt64:xyz", {"checksum"}},
      {"checksum = \"zt64:", "checksum = \"md5:", {"checksum"}},
      {"\ntokens = ", "\ntokens = -5 #", {"tokens"}},
      {"\ntokens = ", "\ntokens = 9223372036854775807 #", {"tokens"}},
      {"documents = ", "documents = -1 #", {"documents"}},
      {"file = \"train-00000.h5\"", "file = \"../elsewhere.h5\"", {"elsewhere.h5"}},
      {"file = \"train-00000.h5\"", "file = \"\"", {"file"}},
      {"file = \"train-00000.h5\"", "file = \"/\"", {"file"}},
      {"file = \"train-00000.h5\"", "file = 7", {"file"}},
      {"[[train]]", "[train]", {"train"}},
  };
  int index = 0;
  for (const Case& c : cases) {
    const std::string ds = copy_dataset(dir, "case" + std::to_string(index++));
    const size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    std::string bad = text;
    bad.replace(at, c.from.size(), c.to);
    testing::write_file(ds, "manifest.toml", bad);
    std::vector<std::string> parts = c.parts;
    parts.push_back(ds + "/");
    expect_user_error(check(ds), "manifest with " + c.to, parts);
  }
}

}  // namespace
}  // namespace zt::launch
