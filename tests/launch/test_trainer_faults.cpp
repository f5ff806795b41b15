// Faults in the training loop on one rank (CPU, gptj-tiny; issue 8): a stop request (SIGTERM)
// saves a checkpoint that resumes bit for bit, a second signal ends the process, a failed save
// stops or continues as train.on_checkpoint_error says and leaves `latest` on the previous
// checkpoint, and non-finite losses or gradients skip steps until train.max_skipped_steps in a
// row stop the run naming the layer. Across ranks: tests/mpi/test_faults_mpi.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "runtime/self_comm.h"
#include "tests/support/grad_faults.h"
#include "tests/support/run_config.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::poison_layer_grad;
using testing::read_file;
using testing::user_error_of;

TrainSummary run(const RunConfig& c, TrainOptions o = {}, bool write_outputs = false) {
  o.write_outputs = write_outputs;
  o.collect_final_params = true;
  SelfComm comm;
  return train(c, comm, o);
}

class TrainerFaults : public ::testing::Test {
 protected:
  void SetUp() override { log_configure(LogOptions{LogLevel::kWarn}, false); }
  void TearDown() override { restore_default_stop_handlers(); }
};

// SIGTERM during step 4 of 10: the step completes, a checkpoint of it goes to
// <out_dir>/checkpoints (train.checkpoint_dir is empty), the run returns, and rank 0 says how to
// resume; resuming from there continues out_dir and gives the uninterrupted run's losses and
// parameters exactly.
TEST_F(TrainerFaults, SigtermSavesACheckpointThatResumesExactly) {
  const std::string dir = fresh_dir("sigterm");
  RunConfig c = testing::tiny_run_config(dir, 10);
  const TrainSummary full = run(c);
  ASSERT_EQ(full.steps.size(), 10u);
  EXPECT_FALSE(full.interrupted());

  install_stop_handlers(false);
  TrainOptions o;
  o.before_optimizer_step = [](int64_t step, zero::Engine&) {
    if (step == 4) std::raise(SIGTERM);
  };
  log_configure(LogOptions{LogLevel::kInfo}, false);
  ::testing::internal::CaptureStdout();
  const TrainSummary stopped = run(c, o, /*write_outputs=*/true);
  const std::string out = ::testing::internal::GetCapturedStdout();
  log_configure(LogOptions{LogLevel::kWarn}, false);
  const std::string root = (fs::path(c.train.out_dir) / "checkpoints").string();
  EXPECT_EQ(stopped.stopped_at_step, 4);
  EXPECT_TRUE(stopped.interrupted());
  EXPECT_EQ(stopped.steps.size(), 4u);
  EXPECT_EQ(stopped.stop_checkpoint, root + "/step-00000004");
  EXPECT_EQ(read_file(fs::path(root) / "latest"), "step-00000004\n");
  EXPECT_THAT(out, ::testing::HasSubstr(
                       "[zerotrain] interrupted by SIGTERM at step 4 of 10: checkpoint saved to " + root +
                       "/step-00000004 (train.checkpoint_dir is empty, so it went to "
                       "<train.out_dir>/checkpoints); resume with --set train.checkpoint_dir=" + root +
                       " --set train.resume=auto (it continues " + c.train.out_dir + ")\n"));
  EXPECT_THAT(out, ::testing::HasSubstr("[zerotrain] stopped: 4 steps in "));

  clear_stop_request();
  RunConfig resume = c;
  resume.train.checkpoint_dir = root;
  resume.train.resume = "auto";
  const TrainSummary resumed = run(resume, {}, /*write_outputs=*/true);
  EXPECT_EQ(resumed.first_step, 5);
  // It continued out_dir, whose run saved to <out_dir>/checkpoints: steps 1-10, once each.
  const std::string metrics = read_file(fs::path(c.train.out_dir) / "metrics.jsonl");
  std::string steps;
  for (size_t at = metrics.find("{\"step\": "); at != std::string::npos; at = metrics.find("{\"step\": ", at + 1))
    steps += metrics.substr(at + 9, metrics.find(',', at) - at - 9) + " ";
  EXPECT_EQ(steps, "1 2 3 4 5 6 7 8 9 10 ");
  EXPECT_FALSE(resumed.interrupted());
  ASSERT_EQ(resumed.steps.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(resumed.steps[i].loss, full.steps[i + 4].loss) << "step " << i + 5;
  EXPECT_EQ(resumed.final_params, full.final_params);
}

// A stop request at a step that saves anyway saves once (to train.checkpoint_dir), and one at the
// last step is a run that completed.
TEST_F(TrainerFaults, StopAtASaveStepSavesOnceAndAtTheLastStepCompletes) {
  const std::string dir = fresh_dir("stop_at_save");
  RunConfig c = testing::tiny_run_config(dir, 6);
  c.train.checkpoint_dir = (fs::path(dir) / "ck").string();
  c.train.save_every = 3;
  TrainOptions o;
  o.before_optimizer_step = [](int64_t step, zero::Engine&) {
    if (step == 3) request_stop(SIGINT);
  };
  const TrainSummary stopped = run(c, o);
  EXPECT_EQ(stopped.stopped_at_step, 3);
  EXPECT_EQ(stopped.stop_checkpoint, c.train.checkpoint_dir + "/step-00000003");
  EXPECT_EQ(read_file(fs::path(c.train.checkpoint_dir) / "latest"), "step-00000003\n");
  clear_stop_request();

  RunConfig last = testing::tiny_run_config(fresh_dir("stop_at_last"), 3);
  o.before_optimizer_step = [](int64_t step, zero::Engine&) {
    if (step == 3) request_stop(SIGTERM);
  };
  const TrainSummary completed = run(last, o);
  EXPECT_FALSE(completed.interrupted());
  EXPECT_EQ(completed.steps.size(), 3u);
}

// The first signal only sets the flag; the second ends the process with the signal's default
// action (in a child process, which the second SIGTERM kills).
TEST_F(TrainerFaults, SecondSignalExitsAtOnce) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    install_stop_handlers(false);
    std::raise(SIGTERM);
    if (stop_signal() != SIGTERM) ::_exit(3);
    std::raise(SIGTERM);
    ::_exit(4);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

// Saves every 2 of 6 steps; the save of step 4 fails midway (as a full disk would).
RunConfig failing_save_config(const std::string& dir) {
  RunConfig c = testing::tiny_run_config(dir, 6);
  c.train.checkpoint_dir = (fs::path(dir) / "ck").string();
  c.train.save_every = 2;
  return c;
}
TrainOptions fail_save_at(int64_t fail_step) {
  TrainOptions o;
  o.checkpoint_fault_hook = [fail_step](int64_t step, std::string_view point) {
    if (step == fail_step && point == "rank_file") throw std::runtime_error("No space left on device (injected)");
  };
  return o;
}

// on_checkpoint_error = "stop": the run ends with an error saying which save failed, why, and
// that `latest` still names step 2, which loads and continues the run exactly.
TEST_F(TrainerFaults, FailedSaveStopsTheRunAndKeepsThePreviousCheckpoint) {
  const std::string dir = fresh_dir("save_stop");
  const RunConfig c = failing_save_config(dir);
  const std::string ck = c.train.checkpoint_dir;
  EXPECT_EQ(user_error_of([&] { run(c, fail_save_at(4)); }),
            "checkpoint: saving step 4 to " + ck + "/step-00000004 failed: No space left on device "
            "(injected); " + ck + "/latest still names step-00000002, the last checkpoint saved. The "
            "run stops (train.on_checkpoint_error = \"stop\"): free disk space or fix the folder's "
            "permissions, then resume with train.resume = \"auto\"; or set "
            "train.on_checkpoint_error = \"continue\" to train on when a save fails");
  EXPECT_EQ(read_file(fs::path(ck) / "latest"), "step-00000002\n");
  EXPECT_FALSE(fs::exists(fs::path(ck) / "step-00000004"));
  EXPECT_TRUE(zero::is_complete_checkpoint(ck + "/step-00000002"));

  const TrainSummary full = run(testing::tiny_run_config(fresh_dir("save_stop_full"), 6));
  RunConfig resume = c;
  resume.train.resume = "auto";
  const TrainSummary resumed = run(resume);
  EXPECT_EQ(resumed.first_step, 3);
  ASSERT_EQ(resumed.steps.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(resumed.steps[i].loss, full.steps[i + 2].loss) << "step " << i + 3;
  EXPECT_EQ(resumed.final_params, full.final_params);
}

// on_checkpoint_error = "continue": a warning, and training goes on to save step 6.
TEST_F(TrainerFaults, FailedSaveWithContinueWarnsAndTrainsOn) {
  const std::string dir = fresh_dir("save_continue");
  RunConfig c = failing_save_config(dir);
  c.train.on_checkpoint_error = "continue";
  const std::string ck = c.train.checkpoint_dir;
  ::testing::internal::CaptureStderr();
  const TrainSummary r = run(c, fail_save_at(4));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.steps.size(), 6u);
  EXPECT_THAT(err, ::testing::HasSubstr(
                       "[zerotrain warn] checkpoint: saving step 4 to " + ck + "/step-00000004 failed: "
                       "No space left on device (injected); " + ck + "/latest still names "
                       "step-00000002, the last checkpoint saved. Training goes on "
                       "(train.on_checkpoint_error = \"continue\"); free disk space or fix the "
                       "folder's permissions before the next save\n"));
  EXPECT_EQ(read_file(fs::path(ck) / "latest"), "step-00000006\n");
  EXPECT_FALSE(fs::exists(fs::path(ck) / "step-00000004"));
}

// A failed first save says there is no `latest` yet.
TEST_F(TrainerFaults, FailedFirstSaveSaysThereIsNoLatest) {
  const std::string dir = fresh_dir("save_first");
  const RunConfig c = failing_save_config(dir);
  const std::string ck = c.train.checkpoint_dir;
  EXPECT_THAT(user_error_of([&] { run(c, fail_save_at(2)); }),
              ::testing::HasSubstr("failed: No space left on device (injected); there is no " + ck +
                                   "/latest yet: no checkpoint of this run was saved. The run stops"));
}

// A NaN in the gradients at step 4: that step is skipped (parameters and moments unchanged),
// the next steps train on.
TEST_F(TrainerFaults, NanGradientSkipsTheStepAndTrainingRecovers) {
  RunConfig c = testing::tiny_run_config(fresh_dir("nan_once"), 8);
  const TrainSummary clean = run(c);
  std::vector<std::vector<float>> params;
  TrainOptions o;
  o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
    params.push_back(e.gather_master_values());
    if (step == 4) {
      ASSERT_TRUE(poison_layer_grad(e, 2, NAN));
    }
  };
  const TrainSummary r = run(c, o);
  ASSERT_EQ(r.steps.size(), 8u);
  for (const StepMetrics& m : r.steps) {
    EXPECT_EQ(m.skipped, m.step == 4) << "step " << m.step;
    EXPECT_TRUE(std::isfinite(m.loss)) << "step " << m.step;
    // Up to the skipped step the run is the clean one; step 5 starts from step 3's parameters.
    if (m.step <= 4) {
      EXPECT_EQ(m.loss, clean.steps[size_t(m.step - 1)].loss) << "step " << m.step;
    }
  }
  ASSERT_EQ(params.size(), 8u);
  EXPECT_EQ(params[4], params[3]);  // step 4 changed nothing
  EXPECT_NE(params[5], params[4]);  // step 5 did
  EXPECT_NE(params[7], params[6]);
}

// NaN gradients in transformer.h.1 (layer 2) and the head from step 4 on: steps 4, 5, 6 are
// skipped and the third ends the run, naming the lower layer.
TEST_F(TrainerFaults, ConsecutiveSkipsEndTheRunNamingTheLayer) {
  RunConfig c = testing::tiny_run_config(fresh_dir("nan_always"), 10);
  c.train.max_skipped_steps = 3;
  TrainOptions o;
  int64_t last_step = 0;
  o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
    last_step = step;
    if (step >= 4) {
      ASSERT_TRUE(poison_layer_grad(e, 3, INFINITY));  // the head of n_layer = 2
      ASSERT_TRUE(poison_layer_grad(e, 2, NAN));
    }
  };
  EXPECT_EQ(user_error_of([&] { run(c, o); }),
            "step 6: 3 steps in a row skipped for non-finite values (train.max_skipped_steps = 3), "
            "so the run stops: the first layer with a non-finite gradient is layer 2 "
            "(transformer.h.1). Try a lower optimizer.lr (now 0.003), gradient clipping "
            "(optimizer.grad_clip, now 1), and check the data for bad samples; then resume from "
            "the last good checkpoint with train.resume = \"auto\" (train.max_skipped_steps = 0 "
            "never stops)");
  EXPECT_EQ(last_step, 6);

  // 0: never stops.
  c.train.max_skipped_steps = 0;
  const TrainSummary r = run(c, o);
  EXPECT_EQ(r.steps.size(), 10u);
  EXPECT_TRUE(r.steps.back().skipped);
}

// fp16: loss-scaler skips count too (the scale halves at each), and the message says what to
// change in the scaler.
TEST_F(TrainerFaults, Fp16OverflowsCountTowardTheLimit) {
  RunConfig c = testing::tiny_run_config(fresh_dir("fp16"), 10);
  c.train.precision = DType::kF16;
  c.train.micro_batch_size = 1;
  c.train.seq_len = 8;
  c.train.max_skipped_steps = 2;
  TrainOptions o;
  o.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
    if (step >= 3) {
      ASSERT_TRUE(poison_layer_grad(e, 0, INFINITY));
    }
  };
  const std::string message = user_error_of([&] { run(c, o); });
  EXPECT_THAT(message, ::testing::StartsWith(
                           "step 4: 2 steps in a row skipped for non-finite values "
                           "(train.max_skipped_steps = 2), so the run stops: the first layer with a "
                           "non-finite gradient is layer 0 (transformer.wte); the fp16 loss scale is now 32768. "));
  EXPECT_THAT(message, ::testing::HasSubstr(
                           ", other fp16 loss-scaling settings (fp16.initial_scale, fp16.min_scale, "
                           "fp16.hysteresis) or train.precision = \"bf16\", and check the data"));
}

// A non-finite loss skips the step even when the gradients are finite: nothing changes, and the
// skip is counted.
TEST_F(TrainerFaults, NonFiniteLossSkipsTheEngineStep) {
  const model::GptjConfig shape = testing::tiny_run_config(fresh_dir("loss"), 1).model.shape;
  SelfComm comm;
  zero::EngineOptions options;
  zero::Engine engine(shape, options, comm);  // stage 0: the zeroed gradients are final
  const std::vector<float> before = engine.gather_master_values();
  engine.zero_grads();
  const zero::StepStats stats = engine.step(false);
  EXPECT_TRUE(stats.skipped);
  EXPECT_TRUE(stats.loss_nonfinite);
  EXPECT_EQ(stats.nonfinite_layer, -1);
  EXPECT_EQ(stats.lr, 0.0);
  EXPECT_EQ(engine.steps_taken(), 0);
  EXPECT_EQ(engine.skipped_steps(), 1);
  EXPECT_EQ(engine.gather_master_values(), before);
}

}  // namespace
}  // namespace zt::launch
