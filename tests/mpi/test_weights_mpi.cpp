// Model weights on N ranks (run under mpirun with N = 1..4): a stage-2 checkpoint read as weights
// (CheckpointWeights) loads into stage-0, 1 and 3 engines with the same master and zero moments;
// a weights-only checkpoint written by rank 0 loads into a stage-3 engine; a source that fails on
// one rank makes load_weights throw on every rank instead of hanging.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "runtime/agreed.h"
#include "runtime/log.h"
#include "runtime/mpi_comm.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"
#include "zero/weights.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;

EngineOptions options(int stage, uint64_t seed) {
  EngineOptions o;
  o.param_dtype = DType::kBF16;
  o.stage = stage;
  o.bucket_elements = 20000;  // several buckets per layer; with N = 3 uneven-looking pieces
  o.total_steps = 10;
  o.seed = seed;
  o.optimizer.lr = 1e-2;
  return o;
}

bool all_zero(const Tensor& t) {
  const float* p = t.as<float>();
  return std::all_of(p, p + t.numel(), [](float x) { return x == 0.0f; });
}

// Reads through another source, failing on one rank.
class FailingOnRank final : public model::WeightSource {
 public:
  FailingOnRank(model::WeightSource& inner, bool fail) : inner_(inner), fail_(fail) {}
  const model::GptjConfig& config() const override { return inner_.config(); }
  void read(int spec, int64_t begin, int64_t end, float* out) override {
    if (fail_) throw_user_error("test: simulated read failure");
    inner_.read(spec, begin, end, out);
  }
  std::string describe() const override { return "failing test weights"; }

 private:
  model::WeightSource& inner_;
  bool fail_;
};

class WeightsMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    log_configure(LogOptions{LogLevel::kWarn}, false);
    // One folder for all ranks: named after rank 0's process id.
    int pid = int(::getpid());
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    root_ = fs::path(::testing::TempDir()) / ("zt_weights_mpi_" + std::to_string(pid));
    if (world_.rank() == 0) {
      fs::remove_all(root_);
      fs::create_directories(root_);
    }
    world_.barrier();
    // A different sequence per rank, as data parallelism sees it.
    in_.resize(32);
    tg_.resize(32);
    for (int i = 0; i < 32; ++i) {
      in_[size_t(i)] = (i * 7 + 11 * world_.rank()) % 50;
      tg_[size_t(i)] = (i * 5 + 3 + 13 * world_.rank()) % 50;
    }
    model_ = model::make_cpu_gptj(config_, {});
  }
  void TearDown() override {
    world_.barrier();
    if (world_.rank() == 0) fs::remove_all(root_);
  }

  void train(Engine& e, int steps) {
    const model::Batch batch{in_.data(), tg_.data(), 1, 32};
    for (int s = 0; s < steps; ++s) {
      e.zero_grads();
      e.set_last_micro_step(true);
      model_->forward_backward(batch, e, e.micro_grad_scale(1));
      e.step();
    }
  }

  MpiComm world_{MPI_COMM_WORLD};
  model::GptjConfig config_;
  fs::path root_;
  std::vector<int32_t> in_, tg_;
  std::unique_ptr<model::GptjModel> model_;
};

TEST_F(WeightsMpi, Stage2CheckpointLoadsAsWeightsIntoStages013) {
  const std::string dir = (root_ / "c").string();
  Engine a(config_, options(2, 5), world_);
  train(a, 2);
  save_checkpoint(a, world_, dir, {});
  const std::vector<float> master = a.gather_master_values();

  CheckpointWeights w(dir);  // every rank opens it (a shared folder)
  for (int stage : {0, 1, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage));
    Engine b(config_, options(stage, 99), world_);
    train(b, 1);  // moments and counters that load_weights must zero / keep
    ASSERT_NE(b.gather_master_values(), master);
    load_weights(b, world_, w, /*chunk_elements=*/3001);
    EXPECT_EQ(b.gather_master_values(), master);
    EXPECT_TRUE(all_zero(b.adam_m()));
    EXPECT_TRUE(all_zero(b.adam_v()));
    EXPECT_EQ(b.steps_taken(), 1);
  }
}

TEST_F(WeightsMpi, WeightsOnlyCheckpointLoadsIntoStage3) {
  const std::string dir = (root_ / "c").string();
  const std::string weights_dir = (root_ / "w").string();
  Engine a(config_, options(1, 5), world_);
  train(a, 1);
  save_checkpoint(a, world_, dir, {});
  const std::vector<float> master = a.gather_master_values();
  // Single process: rank 0 converts, the others wait for its outcome.
  run_agreed(world_, "writing the weights-only checkpoint", [&] {
    if (world_.rank() != 0) return;
    CheckpointWeights src(dir);
    save_weights_checkpoint(weights_dir, src, DType::kBF16, false);
  });
  CheckpointWeights w(weights_dir);
  EXPECT_FALSE(w.has_optimizer_state());
  Engine b(config_, options(3, 99), world_);
  load_weights(b, world_, w);
  EXPECT_EQ(b.gather_master_values(), master);
  EXPECT_TRUE(all_zero(b.adam_m()));
  // The resume path refuses it on every rank.
  EXPECT_THROW(load_checkpoint(b, world_, weights_dir), UserError);
}

TEST_F(WeightsMpi, FailureOnOneRankIsAgreed) {
  const std::string dir = (root_ / "c").string();
  Engine a(config_, options(2, 5), world_);
  save_checkpoint(a, world_, dir, {});
  CheckpointWeights w(dir);
  FailingOnRank src(w, world_.rank() == world_.size() - 1);
  Engine b(config_, options(3, 99), world_);
  EXPECT_THROW(load_weights(b, world_, src), UserError);
  // The engines are still in step: a collective afterwards pairs up.
  load_weights(b, world_, w);
  EXPECT_EQ(b.gather_master_values(), a.gather_master_values());
}

}  // namespace
}  // namespace zt::zero
