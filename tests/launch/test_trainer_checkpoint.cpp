// Trainer checkpoints on one rank (CPU, gptj-tiny): an interrupted HDF5 run resumed with
// train.resume = "auto" continues exactly (losses, parameters, sampler state); keep_last and
// `latest`; the resume errors; a resumed run's metrics.jsonl and train.eval_at_start's step 0.
// Multi-rank resume: tests/mpi/test_resume_mpi.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>
#include <string>
#include <vector>

#include "datasets/prepare.h"
#include "launch/config.h"
#include "launch/run_outputs.h"
#include "launch/trainer.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/self_comm.h"
#include "tests/support/byte_tokenizer.h"
#include "tests/support/run_config.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_dataset.h"
#include "tests/support/user_error.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;
using testing::byte_tokenizer;
using testing::fresh_dir;
using testing::Interrupted;
using testing::read_file;
using testing::user_error_of;
using testing::write_file;

// Few enough samples that 20 steps run through more than one epoch, so the epoch and the
// permutation of the sampler state are exercised too.
std::string make_dataset(const std::string& dir) { return testing::make_tiny_dataset(dir, 40, 1); }

TrainSummary run(const RunConfig& c, int64_t interrupt_at = 0, bool collect = true) {
  TrainOptions o;
  o.write_outputs = false;
  o.collect_final_params = collect;
  testing::interrupt_at(o, interrupt_at);
  SelfComm comm;
  return train(c, comm, o);
}

std::string latest_of(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / "latest");
  std::string name;
  std::getline(in, name);
  return name;
}

std::vector<std::string> step_dirs(const std::string& checkpoint_dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(checkpoint_dir))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class TrainerCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override { log_configure(LogOptions{LogLevel::kWarn}, false); }
};

TEST_F(TrainerCheckpoint, Hdf5ResumeContinuesExactly) {
  const std::string dir = fresh_dir("hdf5");
  RunConfig c = parse_config("", "test", {"data.source=hdf5", "data.path=" + make_dataset(dir)});
  c.train.steps = 20;
  c.train.log_every = 1000;
  c.train.micro_batch_size = 2;
  c.train.grad_accum_steps = 2;
  c.train.seq_len = 16;
  c.train.device = "cpu";
  c.optimizer.warmup_steps = 3;
  c.zero.stage = 1;
  const TrainSummary full = run(c);
  ASSERT_EQ(full.steps.size(), 20u);
  ASSERT_GT(full.data_state.epoch, 0) << "the test should cross an epoch boundary";

  RunConfig ck = c;
  ck.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  ck.train.save_every = 5;
  ck.train.resume = "auto";  // nothing there yet: starts fresh
  EXPECT_THROW(run(ck, 13), Interrupted);
  EXPECT_EQ(latest_of(ck.train.checkpoint_dir), "step-00000010");
  const TrainSummary resumed = run(ck);
  EXPECT_EQ(resumed.first_step, 11);
  ASSERT_EQ(resumed.steps.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(resumed.steps[i].step, int64_t(i) + 11);
    EXPECT_EQ(resumed.steps[i].loss, full.steps[i + 10].loss) << "step " << i + 11;
    EXPECT_EQ(resumed.steps[i].lr, full.steps[i + 10].lr) << "step " << i + 11;
  }
  EXPECT_EQ(resumed.final_params, full.final_params);
  EXPECT_EQ(resumed.data_state, full.data_state);
  EXPECT_EQ(latest_of(ck.train.checkpoint_dir), "step-00000020");
}

TEST_F(TrainerCheckpoint, KeepLastKeepsTheNewestAndLatest) {
  const std::string dir = fresh_dir("keep");
  RunConfig c = testing::tiny_run_config(dir, 7);
  c.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  c.train.save_every = 2;
  c.train.keep_last = 2;
  run(c, 0, false);
  // Saved at 2, 4, 6 and after the last step (7).
  EXPECT_EQ(step_dirs(c.train.checkpoint_dir), (std::vector<std::string>{"step-00000006", "step-00000007"}));
  EXPECT_EQ(latest_of(c.train.checkpoint_dir), "step-00000007");
  EXPECT_FALSE(fs::exists(fs::path(c.train.checkpoint_dir) / "latest.tmp"));

  // save_every = 0: only after the last step; keep_last = 1 keeps just that one.
  RunConfig once = testing::tiny_run_config(dir, 3);
  once.train.checkpoint_dir = (fs::path(dir) / "once").string();
  once.train.keep_last = 1;
  run(once, 0, false);
  EXPECT_EQ(step_dirs(once.train.checkpoint_dir), (std::vector<std::string>{"step-00000003"}));

  // A step folder without a manifest is no checkpoint of the run's: pruning neither counts nor
  // deletes it (it pushed a real checkpoint out, and went itself, before).
  RunConfig junk = testing::tiny_run_config(dir, 7);
  junk.train.out_dir = (fs::path(dir) / "junk-run").string();
  junk.train.checkpoint_dir = (fs::path(dir) / "junk").string();
  junk.train.save_every = 2;
  junk.train.keep_last = 2;
  fs::create_directories(fs::path(junk.train.checkpoint_dir) / "step-00000005");
  write_file(fs::path(junk.train.checkpoint_dir) / "step-00000005", "notes.txt", "mine");
  run(junk, 0, false);
  EXPECT_EQ(step_dirs(junk.train.checkpoint_dir),
            (std::vector<std::string>{"step-00000005", "step-00000006", "step-00000007"}));
  EXPECT_TRUE(fs::exists(fs::path(junk.train.checkpoint_dir) / "step-00000005" / "notes.txt"));

  // A fresh run into a folder that holds checkpoints is refused unless train.overwrite is set.
  EXPECT_NE(user_error_of([&] { run(once, 0, false); }).find("already holds checkpoints"), std::string::npos);
  once.train.overwrite = true;
  run(once, 0, false);
  EXPECT_EQ(latest_of(once.train.checkpoint_dir), "step-00000003");
}

TEST_F(TrainerCheckpoint, ResumeErrorsNameTheProblem) {
  const std::string dir = fresh_dir("errors");
  RunConfig c = testing::tiny_run_config(dir, 2);
  c.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  run(c, 0, false);
  const std::string saved = (fs::path(c.train.checkpoint_dir) / "step-00000002").string();

  RunConfig r = c;
  r.train.steps = 4;
  r.train.resume = "auto";
  r.train.checkpoint_dir = "";
  EXPECT_NE(user_error_of([&] { run(r, 0, false); }).find("train.resume = \"auto\" needs train.checkpoint_dir"),
            std::string::npos);

  r.train.resume = (fs::path(dir) / "nowhere").string();
  std::string e = user_error_of([&] { run(r, 0, false); });
  EXPECT_NE(e.find("nowhere"), std::string::npos) << e;
  EXPECT_NE(e.find("no such checkpoint folder"), std::string::npos) << e;

  fs::create_directories(fs::path(dir) / "incomplete");
  r.train.resume = (fs::path(dir) / "incomplete").string();
  e = user_error_of([&] { run(r, 0, false); });
  EXPECT_NE(e.find("incomplete\" is not a complete checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find("manifest.toml"), std::string::npos) << e;

  r.train.resume = saved;
  r.train.seq_len = 8;
  e = user_error_of([&] { run(r, 0, false); });
  EXPECT_NE(e.find("train.seq_len = \"16\", but this run has \"8\""), std::string::npos) << e;

  r.train.seq_len = 16;
  r.train.micro_batch_size = 1;
  e = user_error_of([&] { run(r, 0, false); });
  EXPECT_NE(e.find("the global batch"), std::string::npos) << e;

  r.train.micro_batch_size = 2;
  r.train.steps = 2;
  e = user_error_of([&] { run(r, 0, false); });
  EXPECT_NE(e.find("is at step 2 but train.steps = 2"), std::string::npos) << e;

  // `latest` naming a folder that a save replacing it (without an atomic exchange) left aside:
  // the error names the complete copies beside it.
  RunConfig torn = r;
  torn.train.resume = "auto";
  torn.train.checkpoint_dir = (fs::path(dir) / "torn").string();
  fs::create_directories(fs::path(torn.train.checkpoint_dir) / "step-00000002.old-2");
  write_file(fs::path(torn.train.checkpoint_dir) / "step-00000002.old-2", "manifest.toml", "");
  write_file(torn.train.checkpoint_dir, "latest", "step-00000002\n");
  e = user_error_of([&] { run(torn, 0, false); });
  EXPECT_NE(e.find("step-00000002 does not exist; a save replacing it was interrupted"), std::string::npos) << e;
  EXPECT_NE(e.find("step-00000002.old-2 (rename the one to keep to "), std::string::npos) << e;

  // A checkpoint_dir under a file could take no save: refused before step 1, nothing written.
  RunConfig bad = testing::tiny_run_config(dir, 2);
  bad.train.out_dir = (fs::path(dir) / "bad-run").string();
  bad.train.checkpoint_dir = write_file(dir, "afile", "x") + "/ckpt";
  SelfComm comm;
  e = user_error_of([&] { train(bad, comm); });
  EXPECT_NE(e.find(dir + "/afile is not a folder, so no checkpoint could be saved there"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(bad.train.out_dir));

  // The explicit path works, and nothing was written by the refused attempts.
  r.train.steps = 3;
  const TrainSummary s = run(r, 0, false);
  EXPECT_EQ(s.first_step, 3);
  EXPECT_EQ(s.steps.size(), 1u);
}

// The losses of a metrics file, in line order, with their steps.
std::vector<std::pair<int64_t, std::string>> losses_of(const std::string& metrics) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    long long step = 0;
    char loss[64] = {};
    if (std::sscanf(line.c_str(), "{\"step\": %lld, \"loss\": %63[^,]", &step, loss) == 2)
      out.emplace_back(step, loss);
  }
  return out;
}

// A resume refused after the run's own checks passed (a precision the checkpoint was not saved
// in, a corrupt rank file found while loading) leaves out_dir as it was: metrics.jsonl keeps the
// steps after the checkpoint and config.toml its content. A checkpoint from outside a
// checkpoint_dir that holds another run's is refused before it could replace and prune them.
// A changed optimizer setting is allowed, with a warning.
TEST_F(TrainerCheckpoint, RefusedResumesLeaveTheRunsFilesAsTheyWere) {
  const std::string dir = fresh_dir("refused");
  RunConfig c = testing::tiny_run_config(dir, 4);
  c.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  c.train.save_every = 2;
  SelfComm comm;
  train(c, comm);
  const fs::path metrics = fs::path(c.train.out_dir) / "metrics.jsonl";
  const fs::path config = fs::path(c.train.out_dir) / "config.toml";
  const std::string metrics_before = read_file(metrics), config_before = read_file(config);
  ASSERT_EQ(losses_of(metrics_before).size(), 4u);

  RunConfig r = c;
  r.train.steps = 6;
  r.train.resume = (fs::path(c.train.checkpoint_dir) / "step-00000002").string();
  r.train.precision = DType::kBF16;
  std::string e = user_error_of([&] { train(r, comm); });
  EXPECT_NE(e.find("param_dtype fp32, this run uses bf16"), std::string::npos) << e;
  EXPECT_EQ(read_file(metrics), metrics_before);
  EXPECT_EQ(read_file(config), config_before);

  r.train.precision = c.train.precision;
  // One bit of the rank file flipped: found by the checksum, while loading.
  testing::flip_middle_byte(fs::path(r.train.resume) / "rank-00000.h5");
  e = user_error_of([&] { train(r, comm); });
  EXPECT_NE(e.find("checksum"), std::string::npos) << e;
  EXPECT_EQ(read_file(metrics), metrics_before);
  EXPECT_EQ(read_file(config), config_before);

  // Another run's checkpoint into this checkpoint_dir: refused, the folder untouched.
  RunConfig other = testing::tiny_run_config(dir, 2);
  other.train.out_dir = (fs::path(dir) / "other-run").string();
  other.train.checkpoint_dir = (fs::path(dir) / "other-ckpt").string();
  train(other, comm);
  RunConfig foreign = c;
  foreign.train.out_dir = (fs::path(dir) / "foreign-run").string();
  foreign.train.resume = (fs::path(other.train.checkpoint_dir) / "step-00000002").string();
  e = user_error_of([&] { train(foreign, comm); });
  EXPECT_NE(e.find("is not in train.checkpoint_dir"), std::string::npos) << e;
  EXPECT_NE(e.find("train.overwrite = true"), std::string::npos) << e;
  EXPECT_EQ(step_dirs(c.train.checkpoint_dir),
            (std::vector<std::string>{"step-00000002", "step-00000004"}));
  EXPECT_EQ(latest_of(c.train.checkpoint_dir), "step-00000004");
  EXPECT_FALSE(fs::exists(foreign.train.out_dir));

  // A new learning rate: the run continues, and says what changed.
  RunConfig lr = c;
  lr.train.steps = 5;
  lr.train.resume = "auto";
  lr.optimizer.lr = 0.5 * c.optimizer.lr;
  ::testing::internal::CaptureStderr();
  train(lr, comm);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("resume: optimizer.lr was "), std::string::npos) << err;
  EXPECT_EQ(losses_of(read_file(metrics)).size(), 5u);
}

// Relaunching an interrupted run with the same command and train.resume = "auto" continues its
// out_dir: metrics.jsonl keeps the steps up to the checkpoint, loses those after it (and a line
// cut short) and ends up as the uninterrupted run's, step for step and loss for loss. Without a
// checkpoint yet it starts over.
TEST_F(TrainerCheckpoint, ResumedRunContinuesItsOwnOutDir) {
  const std::string dir = fresh_dir("continue");
  RunConfig c = testing::tiny_run_config(dir, 6);
  c.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  c.train.save_every = 3;
  c.train.resume = "auto";  // the requeue-safe command: a fresh start while there is no checkpoint
  TrainOptions o;
  o.collect_final_params = true;
  SelfComm comm;
  RunConfig whole = c;
  whole.train.out_dir = (fs::path(dir) / "whole").string();
  whole.train.checkpoint_dir = (fs::path(dir) / "whole-ckpt").string();
  const TrainSummary expect = train(whole, comm, o);
  const std::string expect_metrics = read_file(fs::path(whole.train.out_dir) / "metrics.jsonl");

  testing::interrupt_at(o, 5);  // steps 1-4 logged, the checkpoint of step 3 saved
  EXPECT_THROW(train(c, comm, o), testing::Interrupted);
  const fs::path metrics = fs::path(c.train.out_dir) / "metrics.jsonl";
  EXPECT_EQ(losses_of(read_file(metrics)).size(), 4u);
  { std::ofstream(metrics, std::ios::app) << "{\"step\": 5, \"lo"; }  // a write cut short

  o.before_optimizer_step = nullptr;
  const TrainSummary resumed = train(c, comm, o);
  EXPECT_EQ(resumed.first_step, 4);  // resumed after step 3
  EXPECT_EQ(resumed.final_params, expect.final_params);
  const auto got = losses_of(read_file(metrics));
  EXPECT_EQ(got, losses_of(expect_metrics));
  ASSERT_EQ(got.size(), 6u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].first, int64_t(i) + 1);
  EXPECT_EQ(read_file(metrics).back(), '\n');

  // Another checkpoint_dir is another run: its out_dir is refused, and left as it was.
  const std::string before = read_file(metrics);
  RunConfig other = c;
  other.train.checkpoint_dir = (fs::path(dir) / "other-ckpt").string();
  std::string e = user_error_of([&] { train(other, comm, o); });
  EXPECT_NE(e.find("already holds a run"), std::string::npos) << e;
  EXPECT_NE(e.find("train.resume = \"auto\""), std::string::npos) << e;
  EXPECT_EQ(read_file(metrics), before);
  // A job stopped before its first checkpoint and relaunched: train.resume = "auto" finds none,
  // and the run starts over in its out_dir.
  fs::remove_all(c.train.checkpoint_dir);
  c.train.steps = 2;
  c.train.save_every = 0;
  const TrainSummary again = train(c, comm, o);
  EXPECT_EQ(again.first_step, 1);
  const auto restarted = losses_of(read_file(metrics));
  ASSERT_EQ(restarted.size(), 2u);
  EXPECT_EQ(restarted[1].first, 2);
  // A config.toml that does not read back does not prove the same run: refused, nothing touched.
  testing::write_file(c.train.out_dir, "config.toml", "[train\nnot toml");
  const std::string kept = read_file(metrics);
  c.train.steps = 4;  // past the checkpoint of step 2
  e = user_error_of([&] { train(c, comm, o); });
  EXPECT_NE(e.find("already holds a run"), std::string::npos) << e;
  EXPECT_EQ(read_file(metrics), kept);
}

// train.eval_at_start evaluates the starting weights once, as step 0 of metrics.jsonl: a random
// init predicts about uniformly (val loss near ln(vocab)), above what training reaches; it changes
// no training step or later evaluation; and a resumed run does not evaluate again, so its
// metrics.jsonl ends up as the uninterrupted run's.
TEST_F(TrainerCheckpoint, EvalAtStartIsStepZeroOfAFreshRunOnly) {
  const std::string dir = fresh_dir("eval_at_start");
  RunConfig plain = testing::tiny_run_config(dir, 12);
  plain.optimizer.warmup_steps = 0;
  plain.train.eval_every = 6;
  plain.train.eval_batches = 2;
  RunConfig c = plain;
  c.train.eval_at_start = true;
  c.train.checkpoint_dir = (fs::path(dir) / "ckpt").string();
  c.train.save_every = 6;
  c.train.resume = "auto";
  plain.train.out_dir = (fs::path(dir) / "plain").string();
  RunConfig whole = c;
  whole.train.out_dir = (fs::path(dir) / "whole").string();
  whole.train.checkpoint_dir = (fs::path(dir) / "whole-ckpt").string();
  SelfComm comm;
  TrainOptions o;
  const TrainSummary a = train(plain, comm, o), b = train(whole, comm, o);
  EXPECT_FALSE(std::isfinite(a.start_val_loss));
  ASSERT_TRUE(std::isfinite(b.start_val_loss));
  // gptj-tiny's init (std 0.02) gives logits of a few hundredths: within 0.05 of uniform.
  EXPECT_NEAR(b.start_val_loss, std::log(double(plain.model.shape.vocab_size)), 0.05);
  ASSERT_EQ(a.steps.size(), 12u);
  ASSERT_EQ(b.steps.size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << i;
    if (std::isfinite(a.steps[i].val_loss) || std::isfinite(b.steps[i].val_loss)) {
      EXPECT_EQ(a.steps[i].val_loss, b.steps[i].val_loss) << i;
    }
  }
  // 12 steps at lr 3e-3 learn something (6.25 -> 5.98 here): the start is not the end weights.
  EXPECT_LT(b.steps[11].val_loss, b.start_val_loss - 0.1);
  const std::string expect = read_file(fs::path(whole.train.out_dir) / "metrics.jsonl");
  char first[96];
  std::snprintf(first, sizeof(first), "{\"step\": 0, \"val_loss\": %.9g, ", b.start_val_loss);
  EXPECT_EQ(expect.rfind(first, 0), 0u) << expect.substr(0, 120);
  EXPECT_NE(read_file(fs::path(plain.train.out_dir) / "metrics.jsonl").rfind("{\"step\": 1, ", 0),
            std::string::npos);

  testing::interrupt_at(o, 9);  // the checkpoint of step 6 saved
  EXPECT_THROW(train(c, comm, o), testing::Interrupted);
  o.before_optimizer_step = nullptr;
  const TrainSummary resumed = train(c, comm, o);
  EXPECT_EQ(resumed.first_step, 7);
  EXPECT_FALSE(std::isfinite(resumed.start_val_loss));
  // One step-0 line, as the uninterrupted run's, and the same steps and losses (the timings
  // differ from run to run).
  const std::string got = read_file(fs::path(c.train.out_dir) / "metrics.jsonl");
  EXPECT_EQ(got.substr(0, got.find('\n')), expect.substr(0, expect.find('\n')));
  EXPECT_EQ(got.find("{\"step\": 0,", 1), std::string::npos) << got;
  EXPECT_EQ(losses_of(got), losses_of(expect));
  EXPECT_EQ(losses_of(got).size(), 12u);
}

// Only the lines of later steps go, and a last line without its newline; lines without a step
// stay.
TEST_F(TrainerCheckpoint, DropMetricsAfterKeepsWhatItCannotRead) {
  const std::string path = write_file(fresh_dir("drop"), "metrics.jsonl", "{\"step\": 1, \"loss\": 2}\nnote\n{\"step\": 2, \"loss\": 1}\n{\"step\": 3");
  EXPECT_EQ(drop_metrics_after(path, 1), 2);
  EXPECT_EQ(read_file(path), "{\"step\": 1, \"loss\": 2}\nnote\n");
  EXPECT_EQ(drop_metrics_after(path, 1), 0);
  EXPECT_EQ(read_file(path), "{\"step\": 1, \"loss\": 2}\nnote\n");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

}  // namespace
}  // namespace zt::launch
