// Model weights on N ranks (run under mpirun with N = 1..4): a stage-2 checkpoint read as weights
// (CheckpointWeights) loads into stage-0, 1 and 3 engines with the same master and zero moments;
// a weights-only checkpoint written by rank 0 loads into a stage-3 engine; a source that fails on
// one rank makes load_weights throw on every rank instead of hanging.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/gptj.h"
#include "runtime/agreed.h"
#include "tests/support/checkpoint_fixture.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"
#include "zero/weights.h"

namespace zt::zero {
namespace {

using testing::all_zero;

EngineOptions options(int stage, uint64_t seed) {
  return testing::checkpoint_engine_options(DType::kBF16, stage, seed);
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

class WeightsMpi : public testing::MpiCheckpointTest {};

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
