// The trainer on a prepared HDF5 dataset (CPU, gptj-tiny): it trains, evaluates the validation
// split, rejects bad data before writing anything; and the [data] config keys and the prepare
// command line.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "datasets/prepare.h"
#include "launch/config.h"
#include "launch/prepare_cmd.h"
#include "launch/trainer.h"
#include "runtime/error.h"
#include "runtime/self_comm.h"
#include "tests/support/byte_tokenizer.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_dataset.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;
using testing::byte_tokenizer;
using testing::fresh_dir;
using testing::read_file;
using testing::write_file;

std::string make_dataset(const std::string& dir) { return testing::make_tiny_dataset(dir, 80, 6); }

RunConfig hdf5_config(const std::string& dataset, const std::string& out_dir, int64_t steps) {
  RunConfig c = parse_config("", "test", {"data.source=hdf5", "data.path=" + dataset});
  c.train.steps = steps;
  c.train.out_dir = out_dir;
  c.train.log_every = 1000;
  c.train.micro_batch_size = 4;
  c.train.seq_len = 32;
  c.optimizer.warmup_steps = 2;
  c.train.device = "cpu";
  return c;
}

TEST(TrainerHdf5, TrainsAndLogsValidationLoss) {
  const std::string dir = fresh_dir("train");
  const std::string ds = make_dataset(dir);
  RunConfig c = hdf5_config(ds, (fs::path(dir) / "run").string(), 12);
  c.train.eval_every = 5;
  c.train.eval_batches = 2;
  c.train.grad_accum_steps = 2;
  SelfComm comm;
  const TrainSummary s = train(c, comm);
  ASSERT_EQ(s.steps.size(), 12u);
  EXPECT_NEAR(s.steps.front().loss, std::log(512.0), 0.1);  // untrained: uniform over the model's vocab
  EXPECT_LT(s.steps.back().loss, s.steps.front().loss - 1.0);
  for (const StepMetrics& m : s.steps) {
    const bool evaluated = m.step == 5 || m.step == 10 || m.step == 12;  // and after the last step
    EXPECT_EQ(std::isfinite(m.val_loss), evaluated) << "step " << m.step;
    if (evaluated) {
      EXPECT_NEAR(m.val_ppl, std::exp(m.val_loss), 1e-9 * m.val_ppl);
    }
  }
  EXPECT_LT(s.steps[11].val_loss, s.steps[4].val_loss);
  // 12 steps of 8 samples: the sampler state continues from there.
  EXPECT_EQ(s.data_state.position, 12 * 8);
  EXPECT_EQ(s.data_state.seed, uint64_t(c.train.seed));
  const std::string metrics = read_file(fs::path(c.train.out_dir) / "metrics.jsonl");
  EXPECT_NE(metrics.find("\"step\": 5, "), std::string::npos);
  size_t count = 0;
  for (size_t at = metrics.find("\"val_loss\""); at != std::string::npos; at = metrics.find("\"val_loss\"", at + 1)) ++count;
  EXPECT_EQ(count, 3u);
  EXPECT_NE(metrics.find("\"val_ppl\""), std::string::npos);
}

TEST(TrainerHdf5, SameRunForAnyAccumulationSplit) {
  // Two micro-batches of 2 sequences read the same samples as one of 4: same losses up to the
  // fp32 summation order (1e-4 relative, as in the synthetic accumulation test).
  const std::string dir = fresh_dir("accum");
  const std::string ds = make_dataset(dir);
  RunConfig one = hdf5_config(ds, (fs::path(dir) / "a").string(), 4);
  RunConfig two = hdf5_config(ds, (fs::path(dir) / "b").string(), 4);
  two.train.micro_batch_size = 2;
  two.train.grad_accum_steps = 2;
  SelfComm comm;
  const TrainSummary a = train(one, comm), b = train(two, comm);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(a.steps[i].loss, b.steps[i].loss, 1e-4 * a.steps[i].loss) << i;
}

TEST(TrainerHdf5, BadDataStopsTheRunBeforeAnythingIsWritten) {
  const std::string dir = fresh_dir("bad");
  const std::string ds = make_dataset(dir);
  SelfComm comm;
  auto message = [&](const RunConfig& c) {
    try {
      train(c, comm);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  RunConfig small_vocab = hdf5_config(ds, (fs::path(dir) / "run1").string(), 2);
  small_vocab.model.shape.vocab_size = 200;
  const std::string m1 = message(small_vocab);
  EXPECT_NE(m1.find(ds + "/manifest.toml"), std::string::npos) << m1;
  EXPECT_NE(m1.find("model.vocab_size"), std::string::npos) << m1;
  EXPECT_FALSE(fs::exists(small_vocab.train.out_dir));

  RunConfig missing = hdf5_config(ds, (fs::path(dir) / "run2").string(), 2);
  fs::remove(fs::path(ds) / "val-00000.h5");
  const std::string m2 = message(missing);
  EXPECT_NE(m2.find("val-00000.h5"), std::string::npos) << m2;
  EXPECT_FALSE(fs::exists(missing.train.out_dir));

  RunConfig tokenizer = hdf5_config(ds, (fs::path(dir) / "run3").string(), 2);
  tokenizer.data.tokenizer = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/gpt2-bpe";
  const std::string m3 = message(tokenizer);
  EXPECT_NE(m3.find("bytes:test"), std::string::npos) << m3;
  EXPECT_NE(m3.find("gpt2-bpe:"), std::string::npos) << m3;
}

TEST(TrainerHdf5, ATrainSplitSmallerThanOneStepIsWarnedAbout) {
  const std::string dir = fresh_dir("small");
  const std::string ds = testing::make_tiny_dataset(dir, 10, 1);  // about 6 samples of 33 tokens
  RunConfig c = hdf5_config(ds, (fs::path(dir) / "run").string(), 1);
  c.train.micro_batch_size = 8;
  SelfComm comm;
  ::testing::internal::CaptureStderr();
  train(c, comm);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("fewer than one step's 8: every step repeats some of them"), std::string::npos)
      << err;
}

TEST(TrainerHdf5, EvaluationLeavesTheSyntheticRunUnchanged) {
  // Held-out synthetic samples give a val loss without changing a training step.
  const std::string dir = fresh_dir("synthetic");
  RunConfig plain = parse_config("", "test", {});
  plain.train.steps = 4;
  plain.train.log_every = 1000;
  plain.train.device = "cpu";
  plain.train.out_dir = (fs::path(dir) / "a").string();
  RunConfig eval = plain;
  eval.train.out_dir = (fs::path(dir) / "b").string();
  eval.train.eval_every = 2;
  eval.train.eval_batches = 1;
  SelfComm comm;
  const TrainSummary a = train(plain, comm), b = train(eval, comm);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << i;
    EXPECT_FALSE(std::isfinite(a.steps[i].val_loss));
  }
  EXPECT_TRUE(std::isfinite(b.steps[1].val_loss));
  EXPECT_TRUE(std::isfinite(b.steps[3].val_loss));
}

TEST(DataConfig, KeysAndTheirRules) {
  const RunConfig c = parse_config("[data]\nsource = \"hdf5\"\npath = \"data/x\"\nverify = false\n"
                                   "[train]\neval_every = 50\neval_batches = 4\n",
                                   "run.toml", {});
  EXPECT_EQ(c.data.source, "hdf5");
  EXPECT_EQ(c.data.path, "data/x");
  EXPECT_FALSE(c.data.verify);
  EXPECT_EQ(c.train.eval_every, 50);
  EXPECT_EQ(c.train.eval_batches, 4);
  EXPECT_EQ(config_to_toml(parse_config(config_to_toml(c), "resolved", {})), config_to_toml(c));
  auto message = [](const std::string& toml) {
    try {
      parse_config(toml, "run.toml", {});
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message("[data]\nsource = \"hdf5\"\n").find("needs data.path"), std::string::npos);
  EXPECT_NE(message("[data]\npath = \"x\"\n").find("data.source = \"hdf5\""), std::string::npos);
  EXPECT_NE(message("[data]\ntokenizer = \"x\"\n").find("only read with data.source"), std::string::npos);
  EXPECT_NE(message("[data]\nsource = \"files\"\n").find("\"hdf5\""), std::string::npos);
  EXPECT_NE(message("[train]\neval_every = -1\n").find("must be >= 0"), std::string::npos);
}

TEST(PrepareCli, ParsesFlags) {
  const PrepareArgs a = parse_prepare_args({"--tokenizer", "tok", "--out=ds", "--format", "jsonl", "--jsonl-key",
                                            "content", "--val-fraction", "0.05", "--shard-tokens", "10M",
                                            "--threads", "3", "--compress", "4", "--overwrite", "--quiet", "a.jsonl",
                                            "b.jsonl"});
  EXPECT_EQ(a.tokenizer_dir, "tok");
  EXPECT_EQ(a.options.out_dir, "ds");
  EXPECT_EQ(a.options.format, datasets::InputFormat::kJsonl);
  EXPECT_EQ(a.options.jsonl_key, "content");
  EXPECT_EQ(a.options.val_fraction, 0.05);
  EXPECT_EQ(a.options.shard_tokens, 10'000'000);
  EXPECT_EQ(a.options.threads, 3);
  EXPECT_EQ(a.options.compression, 4);
  EXPECT_TRUE(a.options.overwrite);
  EXPECT_FALSE(a.options.progress);
  EXPECT_EQ(a.options.inputs, (std::vector<std::string>{"a.jsonl", "b.jsonl"}));
  EXPECT_TRUE(parse_prepare_args({"--help"}).help);
  auto message = [](const std::vector<std::string>& args) {
    try {
      parse_prepare_args(args);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message({"--out", "ds", "a.txt"}).find("--tokenizer"), std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "a.txt"}).find("--out"), std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds"}).find("FILES"), std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--val-fraction", "1.5", "a"}).find("[0, 1)"), std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--format", "csv", "a"}).find("text or jsonl"), std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--bogus", "1", "a"}).find("--bogus"), std::string::npos);
  // Past int64 once scaled (it wrapped to 384 before), or before.
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--shard-tokens", "18446744073709552k", "a"})
                .find("--shard-tokens 18446744073709552k: too large"),
            std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--shard-tokens", "9300000000000000k", "a"})
                .find("too large"),
            std::string::npos);
  // Values that wrapped when narrowed to int (4294967300 became gzip level 4, 4294967297 one thread).
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--compress", "4294967300", "a"})
                .find("--compress 4294967300: must be <= 2147483647"),
            std::string::npos);
  EXPECT_NE(message({"--tokenizer", "t", "--out", "ds", "--threads", "4294967297", "a"})
                .find("--threads 4294967297: must be <= 4096"),
            std::string::npos);
}

// The command end to end with the real GPT-2 tokenizer.
TEST(PrepareCli, WritesADatasetWithTheGpt2Tokenizer) {
  const std::string dir = fresh_dir("cli");
  const std::string in = write_file(dir, "a.txt", "Hello world. This is a document.");
  const std::string out = (fs::path(dir) / "ds").string();
  const std::string report = run_prepare(parse_prepare_args(
      {"--tokenizer", std::string(ZT_SOURCE_DIR) + "/tests/fixtures/gpt2-bpe", "--out", out, "--quiet", in}));
  EXPECT_NE(report.find("1 documents"), std::string::npos) << report;
  EXPECT_NE(report.find("data.path=" + out), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(fs::path(out) / "manifest.toml"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "train-00000.h5"));
}

}  // namespace
}  // namespace zt::launch
