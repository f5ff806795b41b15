// Model weights in and out of the engine on one rank (SelfComm): load_weights from an in-memory
// source (master = the weights, zero moments, counters kept), shape mismatches named, a saved
// checkpoint read back as weights, weights-only checkpoints (round trip, refused by the resume
// path, corrupt files, existing destinations, a failing source).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "model/params.h"
#include "runtime/error.h"
#include "tests/support/checkpoint_fixture.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"
#include "zero/weights.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;

using testing::all_zero;
using testing::flip_middle_byte;
using testing::read_file;
using testing::sorted_names;
using testing::user_error_of;

EngineOptions options(DType dtype, int stage, uint64_t seed = 5) {
  EngineOptions o = testing::checkpoint_engine_options(dtype, stage, seed);
  o.loss_scaler.initial_scale = 1024.0;
  o.loss_scaler.growth_interval = 2;  // fp16: a scale that moves within two steps
  return o;
}

// Weights held in memory, distinct per element and not representable in bf16 (so a master that
// was rounded would show). Records the longest read.
class MemoryWeights final : public model::WeightSource {
 public:
  explicit MemoryWeights(const model::GptjConfig& config, uint32_t seed = 1) : config_(config) {
    uint32_t state = seed * 2654435761u + 12345u;
    for (const model::ParamSpec& s : model::gptj_param_specs(config)) {
      std::vector<float> v(size_t(s.numel()));
      for (float& x : v) {
        state = state * 1664525u + 1013904223u;
        x = (float(state >> 8) / float(1 << 24) - 0.5f) * 0.1f;
      }
      values_.push_back(std::move(v));
    }
  }
  const model::GptjConfig& config() const override { return config_; }
  void read(int spec, int64_t begin, int64_t end, float* out) override {
    if (fail_on_read) throw_user_error("test weights: simulated read failure");
    longest_read = std::max(longest_read, end - begin);
    std::copy(values_[size_t(spec)].begin() + begin, values_[size_t(spec)].begin() + end, out);
  }
  std::string describe() const override { return "test weights"; }
  // Every parameter concatenated in spec order (as Engine::gather_master_values() returns them).
  std::vector<float> all() const {
    std::vector<float> out;
    for (const auto& v : values_) out.insert(out.end(), v.begin(), v.end());
    return out;
  }

  int64_t longest_read = 0;
  bool fail_on_read = false;

 private:
  model::GptjConfig config_;
  std::vector<std::vector<float>> values_;
};

// Every parameter of `src` read whole, concatenated in spec order.
std::vector<float> read_all(model::WeightSource& src) {
  const std::vector<model::ParamSpec> specs = model::gptj_param_specs(src.config());
  std::vector<float> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t at = out.size();
    out.resize(at + size_t(specs[i].numel()));
    src.read(int(i), 0, specs[i].numel(), out.data() + at);
  }
  return out;
}

// Bit-for-bit equality (EXPECT_EQ on floats would also accept -0 == +0).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class Weights : public testing::CheckpointTest {};

// After two steps (moments and counters non-trivial), load_weights sets the master to the weights
// exactly and the moments to zero, and leaves the counters; every stage then trains on alike
// (one rank: the stages differ only in where buffers live).
TEST_F(Weights, LoadSetsMasterZeroesMomentsKeepsCounters) {
  MemoryWeights src(config_);
  const std::vector<float> expected = src.all();
  std::vector<double> first_losses;
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int stage = 0; stage <= 3; ++stage) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      Engine e(config_, options(dt, stage), comm_);
      train(e, 2);
      ASSERT_FALSE(all_zero(e.adam_m()));
      const EngineCounters before = e.counters();
      src.longest_read = 0;
      load_weights(e, comm_, src, /*chunk_elements=*/3001);  // chunks cross piece edges
      EXPECT_LE(src.longest_read, 3001);
      EXPECT_TRUE(same_bits(e.gather_master_values(), expected));
      EXPECT_TRUE(all_zero(e.adam_m()));
      EXPECT_TRUE(all_zero(e.adam_v()));
      const EngineCounters after = e.counters();
      EXPECT_EQ(after.steps_taken, before.steps_taken);
      EXPECT_EQ(after.skipped_steps, before.skipped_steps);
      EXPECT_EQ(after.loss_scale, before.loss_scale);
      EXPECT_EQ(after.scaler_clean_steps, before.scaler_clean_steps);
      EXPECT_EQ(after.scaler_hysteresis_left, before.scaler_hysteresis_left);
      if (dt == DType::kBF16) {
        // The model-facing parameters follow the master: the stages train on alike.
        const std::vector<double> losses = train(e, 1);
        if (stage == 0) first_losses = losses;
        EXPECT_EQ(losses, first_losses);
      }
    }
  }
}

TEST_F(Weights, ShapeMismatchNamesEachField) {
  model::GptjConfig other = config_;
  other.d_model = 64;
  other.n_layer = 3;
  MemoryWeights src(other);
  Engine e(config_, options(DType::kBF16, 1), comm_);
  const std::vector<float> master = e.gather_master_values();
  const std::string what = user_error_of([&] { load_weights(e, comm_, src); });
  EXPECT_NE(what.find("test weights has d_model = 64, n_layer = 3 but the run's model has d_model = 128, "
                      "n_layer = 2"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("model.preset"), std::string::npos) << what;
  EXPECT_EQ(e.gather_master_values(), master);  // nothing was written
}

// A normal (optimizer-state) checkpoint read as weights: exactly the saved master, whole
// parameters and ranges that cross saved pieces; and loaded into another stage.
TEST_F(Weights, CheckpointWeightsReadsASavedCheckpoint) {
  Engine a(config_, options(DType::kBF16, 2), comm_);
  train(a, 2);
  CheckpointMeta meta;
  meta.step = 2;
  save_checkpoint(a, comm_, dir("c"), meta);
  const std::vector<float> master = a.gather_master_values();

  CheckpointWeights w(dir("c"));
  EXPECT_EQ(w.describe(), "zerotrain checkpoint " + dir("c") + " (step 2, 1 rank file)");
  EXPECT_EQ(w.param_dtype(), DType::kBF16);
  EXPECT_TRUE(w.has_optimizer_state());
  EXPECT_EQ(w.step(), 2);
  EXPECT_EQ(w.config().d_model, config_.d_model);
  EXPECT_TRUE(same_bits(read_all(w), master));
  // Sub-ranges: [numel / 3, numel - 1) of each parameter.
  int64_t at = 0;
  for (size_t i = 0; i < w.specs().size(); ++i) {
    const int64_t n = w.specs()[i].numel();
    const int64_t b = n / 3, e = n - 1;
    std::vector<float> got(size_t(e - b));
    w.read(int(i), b, e, got.data());
    EXPECT_TRUE(std::equal(got.begin(), got.end(), master.begin() + at + b)) << w.specs()[i].name;
    at += n;
  }

  Engine b(config_, options(DType::kBF16, 3, 99), comm_);
  load_weights(b, comm_, w);
  EXPECT_TRUE(same_bits(b.gather_master_values(), master));
  EXPECT_EQ(b.steps_taken(), 0);
}

// fp32 weights through a weights-only checkpoint come back bit for bit; the layout on disk and the
// manifest record what they are; a CheckpointWeights can itself be converted again.
TEST_F(Weights, WeightsOnlyRoundTripIsBitExact) {
  MemoryWeights src(config_);
  save_weights_checkpoint(dir("w"), src, DType::kF16, /*overwrite=*/false, /*chunk_elements=*/777);
  EXPECT_LE(src.longest_read, 777);
  EXPECT_EQ(sorted_names(root_), std::vector<std::string>{"w"});  // no temporary folder left
  EXPECT_EQ(sorted_names(dir("w")), (std::vector<std::string>{"manifest.toml", "rank-00000.h5"}));
  const std::string manifest = read_file(fs::path(dir("w")) / "manifest.toml");
  EXPECT_NE(manifest.find("optimizer_state = false"), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("format_version = 1"), std::string::npos) << manifest;

  CheckpointWeights w(dir("w"));
  EXPECT_FALSE(w.has_optimizer_state());
  EXPECT_EQ(w.param_dtype(), DType::kF16);
  EXPECT_EQ(w.describe(), "zerotrain weights-only checkpoint " + dir("w") + " (1 rank file)");
  EXPECT_TRUE(same_bits(read_all(w), src.all()));

  // Converted again from the checkpoint (the source reads HDF5 while the writer writes it).
  save_weights_checkpoint(dir("w2"), w, DType::kBF16, false);
  CheckpointWeights w2(dir("w2"));
  EXPECT_EQ(w2.param_dtype(), DType::kBF16);
  EXPECT_TRUE(same_bits(read_all(w2), src.all()));

  // And into an engine: master = the weights.
  Engine e(config_, options(DType::kF16, 2), comm_);
  load_weights(e, comm_, w);
  EXPECT_TRUE(same_bits(e.gather_master_values(), src.all()));
}

TEST_F(Weights, ResumeRefusesAWeightsOnlyCheckpoint) {
  MemoryWeights src(config_);
  save_weights_checkpoint(dir("w"), src, DType::kBF16, false);
  Engine e(config_, options(DType::kBF16, 1), comm_);
  const std::string what = user_error_of([&] { load_checkpoint(e, comm_, dir("w")); });
  EXPECT_NE(what.find("holds weights only"), std::string::npos) << what;
  EXPECT_NE(what.find("model.init_from = \"" + dir("w") + "\""), std::string::npos) << what;
  EXPECT_NE(what.find("train.resume"), std::string::npos) << what;
}

TEST_F(Weights, CorruptRankFileIsRefused) {
  MemoryWeights src(config_);
  save_weights_checkpoint(dir("w"), src, DType::kBF16, false);
  const fs::path file = fs::path(dir("w")) / "rank-00000.h5";
  flip_middle_byte(file);
  const std::string what = user_error_of([&] { CheckpointWeights w(dir("w")); });
  EXPECT_NE(what.find(file.string()), std::string::npos) << what;
  EXPECT_NE(what.find("corrupt"), std::string::npos) << what;
  // Without the checksums the file opens, and the flipped value shows.
  CheckpointWeights unchecked(dir("w"), /*verify_checksums=*/false);
  EXPECT_FALSE(same_bits(read_all(unchecked), src.all()));
}

TEST_F(Weights, ExistingDestinationIsRefusedUnlessOverwrite) {
  MemoryWeights first(config_, 1), second(config_, 2);
  save_weights_checkpoint(dir("w"), first, DType::kBF16, false);
  std::string what = user_error_of([&] { save_weights_checkpoint(dir("w"), second, DType::kBF16, false); });
  EXPECT_NE(what.find("refusing to overwrite"), std::string::npos) << what;
  EXPECT_TRUE(same_bits(read_all(*std::make_unique<CheckpointWeights>(dir("w"))), first.all()));
  // A folder that is not a checkpoint is never written into.
  fs::create_directories(dir("other"));
  std::ofstream(fs::path(dir("other")) / "notes.txt") << "mine";
  what = user_error_of([&] { save_weights_checkpoint(dir("other"), first, DType::kBF16, true); });
  EXPECT_NE(what.find("is not a zerotrain checkpoint"), std::string::npos) << what;

  save_weights_checkpoint(dir("w"), second, DType::kBF16, /*overwrite=*/true);
  CheckpointWeights w(dir("w"));
  EXPECT_TRUE(same_bits(read_all(w), second.all()));
  EXPECT_FALSE(fs::exists(dir("w") + ".tmp-0"));
  EXPECT_FALSE(fs::exists(dir("w") + ".old-0"));
}

// A source that fails midway leaves neither the destination nor a temporary folder, and an earlier
// checkpoint there untouched.
TEST_F(Weights, FailedConversionLeavesNothingBehind) {
  MemoryWeights src(config_);
  src.fail_on_read = true;
  EXPECT_THROW(save_weights_checkpoint(dir("w"), src, DType::kBF16, false), UserError);
  EXPECT_FALSE(fs::exists(dir("w")));
  EXPECT_FALSE(fs::exists(dir("w") + ".tmp-0"));
  MemoryWeights good(config_);
  save_weights_checkpoint(dir("w"), good, DType::kBF16, false);
  EXPECT_THROW(save_weights_checkpoint(dir("w"), src, DType::kBF16, true), UserError);
  CheckpointWeights w(dir("w"));
  EXPECT_TRUE(same_bits(read_all(w), good.all()));
  EXPECT_FALSE(fs::exists(dir("w") + ".tmp-0"));
}

}  // namespace
}  // namespace zt::zero
