// Engine checkpoints on one rank (SelfComm): exact resume for every stage and dtype, reloading
// into another layout, the meta round trip, refused corrupt or mismatched checkpoints, and saves
// that die midway leaving the previous checkpoint intact.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "runtime/error.h"
#include "tests/support/checkpoint_fixture.h"
#include "tests/support/user_error.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;

using testing::flip_middle_byte;
using testing::sorted_names;
using testing::user_error_of;

EngineOptions options(DType dtype, int stage, uint64_t seed = 5) {
  EngineOptions o = testing::checkpoint_engine_options(dtype, stage, seed);
  o.optimizer.warmup_steps = 2;  // the LR schedule reads steps_taken: a wrong restore shows
  o.optimizer.grad_clip = 1.0;
  o.optimizer.weight_decay = 0.1;
  // fp16: a scaler whose state changes within a few steps (growth every 2 clean steps), so the
  // resumed run needs the restored scale and counters to match.
  o.loss_scaler.initial_scale = 1024.0;
  o.loss_scaler.growth_interval = 2;
  o.loss_scaler.hysteresis = 2;
  return o;
}

class Checkpoint : public testing::CheckpointTest {};

// k steps, save, k more, against a fresh engine (another init seed) that loads and trains k:
// every loss and the final master bit for bit, and the counters.
TEST_F(Checkpoint, ResumeIsBitExactForEveryStageAndDtype) {
  constexpr int k = 2;
  for (DType dt : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (int stage = 0; stage <= 3; ++stage) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      const std::string path = dir(std::string("resume-") + std::string(dtype_name(dt)) + std::to_string(stage));
      Engine a(config_, options(dt, stage), comm_);
      train(a, k);
      CheckpointMeta meta;
      meta.step = k;
      meta.extra["sampler"] = "epoch=1 pos=\"17\"\\";
      save_checkpoint(a, comm_, path, meta);
      const EngineCounters saved = a.counters();
      const std::vector<double> expected = train(a, k);
      const std::vector<float> expected_master = a.gather_master_values();

      Engine b(config_, options(dt, stage, /*seed=*/99), comm_);
      const CheckpointMeta got = load_checkpoint(b, comm_, path);
      EXPECT_EQ(got.step, k);
      EXPECT_EQ(got.extra, meta.extra);
      const EngineCounters c = b.counters();
      EXPECT_EQ(c.steps_taken, saved.steps_taken);
      EXPECT_EQ(c.skipped_steps, saved.skipped_steps);
      EXPECT_EQ(c.loss_scale, saved.loss_scale);
      EXPECT_EQ(c.scaler_clean_steps, saved.scaler_clean_steps);
      EXPECT_EQ(c.scaler_hysteresis_left, saved.scaler_hysteresis_left);
      EXPECT_EQ(train(b, k), expected);
      EXPECT_EQ(b.gather_master_values(), expected_master);
      if (dt == DType::kF16) {
        EXPECT_NE(saved.loss_scale, 1024.0);  // the scaler state was not the initial one
      }
    }
  }
}

// Saved at stage 2 with one bucket size, loaded into stages 0, 1 and 3 with other buckets (other
// pieces, offsets and paddings), and into offloaded engines (the state in host memory, stage 3
// with the parameter shard there too): the same master values, and training on gives the same
// losses (one rank: the stages and offload differ only in where buffers live).
TEST_F(Checkpoint, ReloadsIntoAnotherStageAndLayout) {
  Engine a(config_, options(DType::kBF16, 2), comm_);
  train(a, 2);
  save_checkpoint(a, comm_, dir("c"), {});
  const std::vector<float> master = a.gather_master_values();
  const std::vector<double> next = train(a, 2);
  struct Variant {
    int stage;
    bool offload_optimizer, offload_params;
  };
  for (const Variant v : {Variant{0, false, false}, Variant{3, false, false}, Variant{1, true, false},
                          Variant{3, true, true}}) {
    SCOPED_TRACE("stage " + std::to_string(v.stage) + (v.offload_optimizer ? " offload" : "") +
                 (v.offload_params ? " params" : ""));
    EngineOptions o = options(DType::kBF16, v.stage, 42);
    o.bucket_elements = 7001;
    o.offload_optimizer = v.offload_optimizer;
    o.offload_params = v.offload_params;
    Engine b(config_, o, comm_);
    ASSERT_NE(b.layout().buckets.size(), a.layout().buckets.size());
    load_checkpoint(b, comm_, dir("c"));
    EXPECT_EQ(b.gather_master_values(), master);
    EXPECT_EQ(train(b, 2), next);
  }
  // And back: an offloaded stage-3 save loads into a plain stage-2 engine.
  EngineOptions o = options(DType::kBF16, 3, 42);
  o.offload_optimizer = o.offload_params = true;
  Engine b(config_, o, comm_);
  load_checkpoint(b, comm_, dir("c"));
  save_checkpoint(b, comm_, dir("offloaded"), {});
  Engine d(config_, options(DType::kBF16, 2, 43), comm_);
  load_checkpoint(d, comm_, dir("offloaded"));
  EXPECT_EQ(d.gather_master_values(), master);
  EXPECT_EQ(train(d, 2), next);
}

TEST_F(Checkpoint, LayoutOnDisk) {
  Engine a(config_, options(DType::kF32, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  EXPECT_TRUE(is_complete_checkpoint(dir("c")));
  EXPECT_TRUE(fs::is_regular_file(fs::path(dir("c")) / "rank-00000.h5"));
  EXPECT_EQ(sorted_names(root_), std::vector<std::string>{"c"});  // no temporary folder left
  EXPECT_EQ(sorted_names(dir("c")), (std::vector<std::string>{"manifest.toml", "rank-00000.h5"}));
}

TEST_F(Checkpoint, CorruptRankFileIsRefusedNamingIt) {
  Engine a(config_, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  const fs::path file = fs::path(dir("c")) / "rank-00000.h5";
  flip_middle_byte(file);
  Engine b(config_, options(DType::kBF16, 1), comm_);
  const std::string what = user_error_of([&] { load_checkpoint(b, comm_, dir("c")); });
  EXPECT_NE(what.find(file.string()), std::string::npos) << what;
  EXPECT_NE(what.find("corrupt"), std::string::npos) << what;
}

TEST_F(Checkpoint, MissingFilesAreRefused) {
  Engine a(config_, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  fs::remove(fs::path(dir("c")) / "rank-00000.h5");
  std::string what = user_error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("rank-00000.h5"), std::string::npos) << what;
  EXPECT_NE(what.find("missing"), std::string::npos) << what;
  fs::remove(fs::path(dir("c")) / "manifest.toml");
  what = user_error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("manifest.toml"), std::string::npos) << what;
  what = user_error_of([&] { load_checkpoint(a, comm_, dir("nothing")); });
  EXPECT_NE(what.find("does not exist"), std::string::npos) << what;
}

TEST_F(Checkpoint, OtherModelShapeOrDtypeIsRefused) {
  Engine a(config_, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  const std::string manifest = (fs::path(dir("c")) / "manifest.toml").string();
  model::GptjConfig other = config_;
  other.d_ff = 256;
  Engine b(other, options(DType::kBF16, 1), comm_);
  std::string what = user_error_of([&] { load_checkpoint(b, comm_, dir("c")); });
  EXPECT_NE(what.find(manifest), std::string::npos) << what;
  EXPECT_NE(what.find("d_ff 512 (this run: 256)"), std::string::npos) << what;
  Engine c(config_, options(DType::kF16, 1), comm_);
  what = user_error_of([&] { load_checkpoint(c, comm_, dir("c")); });
  EXPECT_NE(what.find("param_dtype bf16"), std::string::npos) << what;
  // An edited manifest that no longer matches the files' layout is refused too.
  std::ifstream in(manifest);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t at = text.find("d_model = 128");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 13, "d_model = 256");
  std::ofstream(manifest, std::ios::trunc) << text;
  what = user_error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("d_model 256 (this run: 128)"), std::string::npos) << what;
}

// A save that dies (before the manifest, or with the manifest written but before the folder is
// renamed into place) leaves the earlier complete checkpoint loadable and untouched, also when
// it was overwriting that very checkpoint. A complete checkpoint is not overwritten unasked.
TEST_F(Checkpoint, FailedSaveLeavesTheEarlierCheckpointIntact) {
  Engine a(config_, options(DType::kBF16, 2), comm_);
  train(a, 2);
  CheckpointMeta meta;
  meta.step = 2;
  save_checkpoint(a, comm_, dir("c"), meta);
  const std::vector<float> at2 = a.gather_master_values();
  train(a, 2);
  meta.step = 4;
  for (const char* point : {"rank_file", "manifest", "publish"}) {
    SaveOptions o;
    o.fault_hook = [&](std::string_view p) {
      if (p == point) throw std::runtime_error("simulated crash");
    };
    EXPECT_THROW(save_checkpoint(a, comm_, dir("d"), meta, o), std::runtime_error) << point;
    EXPECT_FALSE(fs::exists(dir("d"))) << point;
    o.overwrite = true;
    EXPECT_THROW(save_checkpoint(a, comm_, dir("c"), meta, o), std::runtime_error) << point;
  }
  Engine b(config_, options(DType::kBF16, 2, 7), comm_);
  EXPECT_EQ(load_checkpoint(b, comm_, dir("c")).step, 2);
  EXPECT_EQ(b.gather_master_values(), at2);

  const std::string what = user_error_of([&] { save_checkpoint(a, comm_, dir("c"), meta); });
  EXPECT_NE(what.find("refusing to overwrite"), std::string::npos) << what;
  SaveOptions overwrite;
  overwrite.overwrite = true;
  save_checkpoint(a, comm_, dir("c"), meta, overwrite);  // also clears the stale temporary folder
  EXPECT_EQ(load_checkpoint(b, comm_, dir("c")).step, 4);
  EXPECT_EQ(b.gather_master_values(), a.gather_master_values());
  EXPECT_FALSE(fs::exists(dir("c") + ".tmp-4"));
  EXPECT_FALSE(fs::exists(dir("c") + ".old-4"));
}

}  // namespace
}  // namespace zt::zero
