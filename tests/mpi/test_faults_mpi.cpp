// Faults in the training loop across ranks (CPU, gptj-tiny; issue 8): SIGTERM on one rank stops
// every rank after the same step with a checkpoint that resumes bit for bit; a save that fails on
// one rank fails on all, keeps `latest` and stops or continues; a NaN gradient on one rank skips
// the step everywhere, and skips in a row stop every rank naming the lowest non-finite layer of
// any rank. One-rank details (messages, second signal): tests/launch/test_trainer_faults.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/signals.h"
#include "launch/trainer.h"
#include "runtime/log.h"
#include "runtime/mpi_comm.h"
#include "tests/support/grad_faults.h"
#include "tests/support/mpi_shared_dir.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"
#include "zero/engine.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using launch::RunConfig;
using launch::TrainOptions;
using launch::TrainSummary;
using testing::poison_layer_grad;
using testing::read_file;
using testing::user_error_of;

class FaultsMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    log_configure(LogOptions{LogLevel::kError}, false);
    root_ = testing::make_shared_dir(world_, "zt_faults_mpi");
  }
  void TearDown() override {
    launch::restore_default_stop_handlers();
    testing::remove_shared_dir(world_, root_);
  }

  RunConfig config(int stage, int64_t steps) const {
    RunConfig c = launch::parse_config("", "test", {});
    c.train.steps = steps;
    c.train.micro_batch_size = 1;
    c.train.seq_len = 16;
    c.train.log_every = 1000;
    c.train.seed = 7;
    c.train.device = "cpu";
    c.train.out_dir = (root_ / "run").string();
    c.optimizer.warmup_steps = 3;
    c.zero.stage = stage;
    c.zero.bucket_elements = 20000;
    return c;
  }

  TrainSummary run(const RunConfig& c, TrainOptions o = {}) {
    o.write_outputs = false;
    o.collect_final_params = true;
    return launch::train(c, world_, o);
  }

  bool victim() const { return world_.rank() == world_.size() - 1; }

  MpiComm world_{MPI_COMM_WORLD};
  fs::path root_;
};

// SIGTERM raised on the last rank only, during step 5 of 12: every rank stops after step 5 (they
// agree on the flag), the checkpoint is `latest`, and resuming gives the uninterrupted run's
// losses for steps 6-12 and its final parameters exactly.
TEST_F(FaultsMpi, SigtermOnOneRankStopsEveryRankAndResumesExactly) {
  for (const int stage : {1, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) + " ranks");
    RunConfig c = config(stage, 12);
    const TrainSummary full = run(c);
    ASSERT_EQ(full.steps.size(), 12u);

    launch::install_stop_handlers(false);
    c.train.checkpoint_dir = (root_ / ("sigterm-stage" + std::to_string(stage))).string();
    TrainOptions o;
    o.before_optimizer_step = [&](int64_t step, zero::Engine&) {
      if (step == 5 && victim()) std::raise(SIGTERM);
    };
    const TrainSummary stopped = run(c, o);
    EXPECT_EQ(launch::stop_signal(), victim() ? SIGTERM : 0);
    EXPECT_EQ(stopped.stopped_at_step, 5);
    EXPECT_EQ(stopped.steps.size(), 5u);
    EXPECT_EQ(stopped.stop_checkpoint, c.train.checkpoint_dir + "/step-00000005");
    EXPECT_EQ(read_file(fs::path(c.train.checkpoint_dir) / "latest"), "step-00000005\n");
    launch::restore_default_stop_handlers();

    c.train.resume = "auto";
    const TrainSummary resumed = run(c);
    EXPECT_EQ(resumed.first_step, 6);
    EXPECT_FALSE(resumed.interrupted());
    ASSERT_EQ(resumed.steps.size(), 7u);
    for (size_t i = 0; i < 7; ++i)
      EXPECT_EQ(resumed.steps[i].loss, full.steps[i + 5].loss) << "step " << i + 6;
    EXPECT_EQ(resumed.final_params, full.final_params);
  }
}

// The save of step 4 dies on the last rank: every rank reports it with `latest` still on step 2;
// "stop" ends the run on every rank, "continue" trains on and saves step 6.
TEST_F(FaultsMpi, SaveFailingOnOneRankStopsOrContinuesOnEveryRank) {
  RunConfig c = config(2, 6);
  c.train.checkpoint_dir = (root_ / "ck").string();
  c.train.save_every = 2;
  const std::string ck = c.train.checkpoint_dir;
  TrainOptions o;
  o.checkpoint_fault_hook = [&](int64_t step, std::string_view point) {
    if (step == 4 && point == "rank_file" && victim())
      throw std::runtime_error("No space left on device (injected)");
  };
  const std::string message = user_error_of([&] { run(c, o); });
  const std::string head = "checkpoint: saving step 4 to " + ck + "/step-00000004 failed: ";
  const std::string tail = "; " + ck + "/latest still names step-00000002, the last checkpoint "
                           "saved. The run stops (train.on_checkpoint_error = \"stop\")";
  if (victim()) {
    EXPECT_THAT(message, ::testing::StartsWith(head + "No space left on device (injected)" + tail));
  }
  EXPECT_THAT(message, ::testing::StartsWith(head));
  EXPECT_THAT(message, ::testing::HasSubstr(tail));
  world_.barrier();
  EXPECT_EQ(read_file(fs::path(ck) / "latest"), "step-00000002\n");
  EXPECT_FALSE(fs::exists(fs::path(ck) / "step-00000004"));
  world_.barrier();

  c.train.on_checkpoint_error = "continue";
  c.train.resume = "auto";  // from step 2, which must still load
  const TrainSummary r = run(c, o);
  EXPECT_EQ(r.first_step, 3);
  EXPECT_EQ(r.steps.size(), 4u);
  EXPECT_EQ(read_file(fs::path(ck) / "latest"), "step-00000006\n");
  EXPECT_FALSE(fs::exists(fs::path(ck) / "step-00000004"));
}

// A NaN in the last rank's gradients at step 3: every rank skips step 3 (parameters unchanged)
// and trains on.
TEST_F(FaultsMpi, NanGradientOnOneRankSkipsTheStepOnEveryRank) {
  for (const int stage : {0, 1, 2, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) + " ranks");
    std::vector<std::vector<float>> params;
    TrainOptions o;
    o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
      params.push_back(e.gather_master_values());
      if (step == 3 && victim()) {
        ASSERT_TRUE(poison_layer_grad(e, 1, NAN));
      }
    };
    const TrainSummary r = run(config(stage, 5), o);
    ASSERT_EQ(r.steps.size(), 5u);
    for (const launch::StepMetrics& m : r.steps) {
      EXPECT_EQ(m.skipped, m.step == 3) << "step " << m.step;
      EXPECT_TRUE(std::isfinite(m.loss)) << "step " << m.step;
    }
    ASSERT_EQ(params.size(), 5u);
    EXPECT_EQ(params[3], params[2]);
    EXPECT_NE(params[4], params[3]);
  }
}

// From step 2 on, rank 0 poisons the head (layer 3) and the last rank transformer.h.1 (layer 2):
// with train.max_skipped_steps = 3 every rank stops at step 4 naming layer 2.
TEST_F(FaultsMpi, ConsecutiveSkipsStopEveryRankNamingTheLowestLayer) {
  for (const int stage : {0, 1, 2, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) + " ranks");
    RunConfig c = config(stage, 8);
    c.train.max_skipped_steps = 3;
    TrainOptions o;
    o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
      if (step < 2) return;
      if (world_.rank() == 0) {
        ASSERT_TRUE(poison_layer_grad(e, 3, INFINITY));
      }
      if (victim()) {
        ASSERT_TRUE(poison_layer_grad(e, 2, NAN));
      }
    };
    EXPECT_THAT(user_error_of([&] { run(c, o); }),
                ::testing::StartsWith(
                    "step 4: 3 steps in a row skipped for non-finite values (train.max_skipped_steps "
                    "= 3), so the run stops: the first layer with a non-finite gradient is layer 2 "
                    "(transformer.h.1). Try a lower optimizer.lr"));
  }
}

}  // namespace
}  // namespace zt
