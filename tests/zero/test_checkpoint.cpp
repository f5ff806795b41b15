// Engine checkpoints on one rank (SelfComm): exact resume for every stage and dtype, reloading
// into another layout, the meta round trip, refused corrupt or mismatched checkpoints, and saves
// that die midway leaving the previous checkpoint intact.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "runtime/error.h"
#include "runtime/self_comm.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;

EngineOptions options(DType dtype, int stage, uint64_t seed = 5) {
  EngineOptions o;
  o.param_dtype = dtype;
  o.stage = stage;
  o.bucket_elements = 20000;  // several buckets per layer in gptj-tiny
  o.total_steps = 10;
  o.seed = seed;
  o.optimizer.warmup_steps = 2;  // the LR schedule reads steps_taken: a wrong restore shows
  o.optimizer.lr = 1e-2;
  o.optimizer.grad_clip = 1.0;
  o.optimizer.weight_decay = 0.1;
  // fp16: a scaler whose state changes within a few steps (growth every 2 clean steps), so the
  // resumed run needs the restored scale and counters to match.
  o.loss_scaler.initial_scale = 1024.0;
  o.loss_scaler.growth_interval = 2;
  o.loss_scaler.hysteresis = 2;
  return o;
}

// A fixed batch and the CPU model; step() trains one optimizer step and returns the loss.
struct Fixture {
  model::GptjConfig config;
  std::vector<int32_t> in, tg;
  std::unique_ptr<model::GptjModel> model;
  Fixture() : in(64), tg(64) {
    for (int i = 0; i < 64; ++i) in[size_t(i)] = (i * 7) % 50, tg[size_t(i)] = (i * 5 + 3) % 50;
    model = model::make_cpu_gptj(config, {});
  }
  std::vector<double> train(Engine& e, int steps) {
    const model::Batch batch{in.data(), tg.data(), 1, 32};  // one sequence: keeps the tests fast
    std::vector<double> losses;
    for (int s = 0; s < steps; ++s) {
      e.zero_grads();
      e.set_last_micro_step(true);
      losses.push_back(model->forward_backward(batch, e, e.micro_grad_scale(1)).mean());
      e.step();
    }
    return losses;
  }
};

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(::testing::TempDir()) / (std::string("zt_ckpt_") + info->name() + "_" +
                                              std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string dir(const std::string& name) const { return (root_ / name).string(); }

  fs::path root_;
  SelfComm comm_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a UserError: ") + e.what();
  }
  return "no error";
}

// k steps, save, k more, against a fresh engine (another init seed) that loads and trains k:
// every loss and the final master bit for bit, and the counters.
TEST_F(Checkpoint, ResumeIsBitExactForEveryStageAndDtype) {
  Fixture fx;
  constexpr int k = 2;
  for (DType dt : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (int stage = 0; stage <= 3; ++stage) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      const std::string path = dir(std::string("resume-") + std::string(dtype_name(dt)) + std::to_string(stage));
      Engine a(fx.config, options(dt, stage), comm_);
      fx.train(a, k);
      CheckpointMeta meta;
      meta.step = k;
      meta.extra["sampler"] = "epoch=1 pos=\"17\"\\";
      save_checkpoint(a, comm_, path, meta);
      const EngineCounters saved = a.counters();
      const std::vector<double> expected = fx.train(a, k);
      const std::vector<float> expected_master = a.gather_master_values();

      Engine b(fx.config, options(dt, stage, /*seed=*/99), comm_);
      const CheckpointMeta got = load_checkpoint(b, comm_, path);
      EXPECT_EQ(got.step, k);
      EXPECT_EQ(got.extra, meta.extra);
      const EngineCounters c = b.counters();
      EXPECT_EQ(c.steps_taken, saved.steps_taken);
      EXPECT_EQ(c.skipped_steps, saved.skipped_steps);
      EXPECT_EQ(c.loss_scale, saved.loss_scale);
      EXPECT_EQ(c.scaler_clean_steps, saved.scaler_clean_steps);
      EXPECT_EQ(c.scaler_hysteresis_left, saved.scaler_hysteresis_left);
      EXPECT_EQ(fx.train(b, k), expected);
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
  Fixture fx;
  Engine a(fx.config, options(DType::kBF16, 2), comm_);
  fx.train(a, 2);
  save_checkpoint(a, comm_, dir("c"), {});
  const std::vector<float> master = a.gather_master_values();
  const std::vector<double> next = fx.train(a, 2);
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
    Engine b(fx.config, o, comm_);
    ASSERT_NE(b.layout().buckets.size(), a.layout().buckets.size());
    load_checkpoint(b, comm_, dir("c"));
    EXPECT_EQ(b.gather_master_values(), master);
    EXPECT_EQ(fx.train(b, 2), next);
  }
  // And back: an offloaded stage-3 save loads into a plain stage-2 engine.
  EngineOptions o = options(DType::kBF16, 3, 42);
  o.offload_optimizer = o.offload_params = true;
  Engine b(fx.config, o, comm_);
  load_checkpoint(b, comm_, dir("c"));
  save_checkpoint(b, comm_, dir("offloaded"), {});
  Engine d(fx.config, options(DType::kBF16, 2, 43), comm_);
  load_checkpoint(d, comm_, dir("offloaded"));
  EXPECT_EQ(d.gather_master_values(), master);
  EXPECT_EQ(fx.train(d, 2), next);
}

TEST_F(Checkpoint, LayoutOnDisk) {
  Fixture fx;
  Engine a(fx.config, options(DType::kF32, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  EXPECT_TRUE(is_complete_checkpoint(dir("c")));
  EXPECT_TRUE(fs::is_regular_file(fs::path(dir("c")) / "rank-00000.h5"));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root_)) names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"c"});  // no temporary folder left
  std::vector<std::string> inside;
  for (const auto& entry : fs::directory_iterator(dir("c"))) inside.push_back(entry.path().filename().string());
  std::sort(inside.begin(), inside.end());
  EXPECT_EQ(inside, (std::vector<std::string>{"manifest.toml", "rank-00000.h5"}));
}

TEST_F(Checkpoint, CorruptRankFileIsRefusedNamingIt) {
  Fixture fx;
  Engine a(fx.config, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  const fs::path file = fs::path(dir("c")) / "rank-00000.h5";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(fs::file_size(file) / 2));
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(std::streamoff(fs::file_size(file) / 2));
    byte = char(byte ^ 0x10);
    f.write(&byte, 1);
  }
  Engine b(fx.config, options(DType::kBF16, 1), comm_);
  const std::string what = error_of([&] { load_checkpoint(b, comm_, dir("c")); });
  EXPECT_NE(what.find(file.string()), std::string::npos) << what;
  EXPECT_NE(what.find("corrupt"), std::string::npos) << what;
}

TEST_F(Checkpoint, MissingFilesAreRefused) {
  Fixture fx;
  Engine a(fx.config, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  fs::remove(fs::path(dir("c")) / "rank-00000.h5");
  std::string what = error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("rank-00000.h5"), std::string::npos) << what;
  EXPECT_NE(what.find("missing"), std::string::npos) << what;
  fs::remove(fs::path(dir("c")) / "manifest.toml");
  what = error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("manifest.toml"), std::string::npos) << what;
  what = error_of([&] { load_checkpoint(a, comm_, dir("nothing")); });
  EXPECT_NE(what.find("does not exist"), std::string::npos) << what;
}

TEST_F(Checkpoint, OtherModelShapeOrDtypeIsRefused) {
  Fixture fx;
  Engine a(fx.config, options(DType::kBF16, 1), comm_);
  save_checkpoint(a, comm_, dir("c"), {});
  const std::string manifest = (fs::path(dir("c")) / "manifest.toml").string();
  model::GptjConfig other = fx.config;
  other.d_ff = 256;
  Engine b(other, options(DType::kBF16, 1), comm_);
  std::string what = error_of([&] { load_checkpoint(b, comm_, dir("c")); });
  EXPECT_NE(what.find(manifest), std::string::npos) << what;
  EXPECT_NE(what.find("d_ff 512 (this run: 256)"), std::string::npos) << what;
  Engine c(fx.config, options(DType::kF16, 1), comm_);
  what = error_of([&] { load_checkpoint(c, comm_, dir("c")); });
  EXPECT_NE(what.find("param_dtype bf16"), std::string::npos) << what;
  // An edited manifest that no longer matches the files' layout is refused too.
  std::ifstream in(manifest);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t at = text.find("d_model = 128");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 13, "d_model = 256");
  std::ofstream(manifest, std::ios::trunc) << text;
  what = error_of([&] { load_checkpoint(a, comm_, dir("c")); });
  EXPECT_NE(what.find("d_model 256 (this run: 128)"), std::string::npos) << what;
}

// A save that dies (before the manifest, or with the manifest written but before the folder is
// renamed into place) leaves the earlier complete checkpoint loadable and untouched, also when
// it was overwriting that very checkpoint. A complete checkpoint is not overwritten unasked.
TEST_F(Checkpoint, FailedSaveLeavesTheEarlierCheckpointIntact) {
  Fixture fx;
  Engine a(fx.config, options(DType::kBF16, 2), comm_);
  fx.train(a, 2);
  CheckpointMeta meta;
  meta.step = 2;
  save_checkpoint(a, comm_, dir("c"), meta);
  const std::vector<float> at2 = a.gather_master_values();
  fx.train(a, 2);
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
  Engine b(fx.config, options(DType::kBF16, 2, 7), comm_);
  EXPECT_EQ(load_checkpoint(b, comm_, dir("c")).step, 2);
  EXPECT_EQ(b.gather_master_values(), at2);

  const std::string what = error_of([&] { save_checkpoint(a, comm_, dir("c"), meta); });
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
