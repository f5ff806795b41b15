// The training loop end to end on the CPU, the outputs it writes, and the command line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "launch/cli.h"
#include "launch/config.h"
#include "launch/metrics.h"
#include "launch/trainer.h"
#include "runtime/error.h"
#include "runtime/device.h"
#include "runtime/self_comm.h"

namespace zt::launch {
namespace {

namespace fs = std::filesystem;

// Runs on a world of one rank (the MPI runs are in tests/mpi).
TrainSummary train(const RunConfig& c) {
  SelfComm comm;
  return launch::train(c, comm);
}

std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("zt_trainer_" + name);
  fs::remove_all(p);
  return p.string();
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunConfig quick_config(const std::string& out_dir, int64_t steps) {
  RunConfig c = parse_config("", "test", {});
  c.train.steps = steps;
  c.train.out_dir = out_dir;
  c.train.log_every = 1000;
  c.optimizer.warmup_steps = 5;
  c.train.device = "cpu";  // the CPU trainer, also on machines with GPUs
  return c;
}

// Every example config loads and passes the config's checks (the commands in their headers are
// what README.md tells users to run).
TEST(Examples, EveryExampleConfigIsValid) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(ZT_SOURCE_DIR) / "examples")) {
    if (entry.path().extension() != ".toml") continue;
    ++seen;
    SCOPED_TRACE(entry.path().string());
    const RunConfig c = load_config(entry.path().string(), {});
    EXPECT_GT(c.train.steps, 0);
  }
  EXPECT_GE(seen, 4);  // tiny-cpu, gptj-6b-2gpu, gptj-6b-1gpu-offload, gptj-6b-finetune
}

TEST(Trainer, ADeviceErrorWritesNothing) {
  // fp32 on the CUDA backend is refused (with CUDA and a GPU), and without either "cuda" cannot
  // be had: both are config errors, found before the out_dir is created.
  RunConfig c = quick_config(fresh_dir("device_error") + "/run", 2);
  c.train.device = "cuda";
  c.train.precision = DType::kF32;
  EXPECT_THROW(train(c), UserError);
  EXPECT_FALSE(fs::exists(c.train.out_dir)) << c.train.out_dir << " was created by a failed start";
}

TEST(Trainer, TinyModelLossFallsOnTheSyntheticCorpus) {
  RunConfig c = quick_config(fresh_dir("falls"), 60);
  const TrainSummary s = train(c);
  ASSERT_EQ(s.steps.size(), 60u);
  const double first = s.steps.front().loss;
  double last = 0;  // mean of the last 5 steps: one step's batch is noisy
  for (size_t i = 55; i < 60; ++i) last += s.steps[i].loss / 5;
  // Untrained: log(512) = 6.24 nats. Within 60 steps the model learns the chain's unigram and
  // much of its bigram structure; the floor is ~1.06 nats.
  EXPECT_NEAR(first, std::log(512.0), 0.05);
  EXPECT_LT(last, first - 1.5) << "first " << first << " last " << last;
  EXPECT_GT(last, s.loss_floor - 0.1);
  for (const StepMetrics& m : s.steps) {
    EXPECT_TRUE(std::isfinite(m.loss));
    EXPECT_GT(m.tokens_per_s, 0);
    EXPECT_GT(m.peak_mem_bytes, 0);
  }
}

TEST(Trainer, WritesResolvedConfigAndMetricsAndRefusesToOverwrite) {
  const std::string dir = fresh_dir("outputs");
  RunConfig c = quick_config(dir, 3);
  c.optimizer.lr = 1e-3;
  train(c);
  // The saved config reads back to the run's config.
  const std::string saved = read_file(fs::path(dir) / "config.toml");
  EXPECT_EQ(config_to_toml(parse_config(saved, "config.toml", {})), config_to_toml(c));
  const std::string metrics = read_file(fs::path(dir) / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 3);
  for (const char* field : {"\"step\": 3", "\"loss\"", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\"",
                            "\"peak_mem_bytes\"", "\"elapsed_s\""})
    EXPECT_NE(metrics.find(field), std::string::npos) << field;
  // A second run into the same directory is refused and leaves the first run's files alone.
  try {
    train(c);
    FAIL() << "expected a refusal";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("train.overwrite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(fs::path(dir) / "metrics.jsonl"), metrics);
  c.train.overwrite = true;
  c.train.steps = 2;
  train(c);
  const std::string replaced = read_file(fs::path(dir) / "metrics.jsonl");
  EXPECT_EQ(std::count(replaced.begin(), replaced.end(), '\n'), 2);
}

// The same global batch split into micro-batches gives the same run: the gradient is the mean
// over all micro-batches. fp32 sums in a different order differ by ~1e-7 relative per step and
// the difference grows slowly through Adam; 1e-4 over 5 steps is a wide fp32 margin.
TEST(Trainer, GradientAccumulationMatchesTheLargerBatch) {
  RunConfig one = quick_config(fresh_dir("accum1"), 5);
  one.train.micro_batch_size = 8;
  RunConfig two = quick_config(fresh_dir("accum2"), 5);
  two.train.micro_batch_size = 4;
  two.train.grad_accum_steps = 2;
  const TrainSummary a = train(one), b = train(two);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(a.steps[i].loss, b.steps[i].loss, 1e-4 * a.steps[i].loss) << "step " << i + 1;
    EXPECT_NEAR(a.steps[i].grad_norm, b.steps[i].grad_norm, 1e-3 * a.steps[i].grad_norm);
  }
}

TEST(Trainer, ActivationCheckpointingGivesTheSameRun) {
  RunConfig plain = quick_config(fresh_dir("ckpt0"), 4);
  RunConfig ckpt = quick_config(fresh_dir("ckpt1"), 4);
  ckpt.model.activation_checkpointing = true;
  RunConfig kept = quick_config(fresh_dir("ckpt2"), 4);
  kept.model.activation_checkpointing = true;
  kept.model.keep_activations = 1;  // of gptj-tiny's 2 blocks: one recomputed, one kept
  // "auto" on the CPU backend recomputes every block (a -1 reaching the model would throw).
  RunConfig automatic = quick_config(fresh_dir("ckpt3"), 4);
  automatic.model.activation_checkpointing = true;
  automatic.model.keep_activations = kKeepActivationsAuto;
  const TrainSummary a = train(plain), b = train(ckpt), k = train(kept), x = train(automatic);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i + 1;
    EXPECT_EQ(a.steps[i].loss, k.steps[i].loss) << "step " << i + 1;
    EXPECT_EQ(a.steps[i].loss, x.steps[i].loss) << "step " << i + 1;
  }
}

// The line a checkpointed GPU run logs after its first step (GPT-J-6B, 4 x 2048 tokens: 513 MiB
// per kept block).
TEST(Trainer, KeptBlocksHintSaysHowManyMoreFit) {
  RunConfig c;
  c.model.shape = model::gptj_preset("gptj-6b");
  c.train.micro_batch_size = 4;
  c.train.seq_len = 2048;
  c.model.activation_checkpointing = true;
  const int64_t gib = int64_t(1) << 30;
  // ZeRO-1 on two 80 GB GPUs: 66.1 GiB of 79.2 GiB.
  const int64_t peak = int64_t(66.1 * double(gib)), h100 = int64_t(79.2 * double(gib));
  EXPECT_EQ(kept_blocks_hint(c, peak, h100),
            "memory: the peak of 66.10 GiB per GPU (of 79.20 GiB) leaves room for "
            "model.keep_activations = 18 (now 0): each kept block skips its recompute for 512.56 MiB "
            "more (`zerotrain estimate --config RUN.toml --set model.keep_activations=18`)");
  // Room for every block: the same as checkpointing off, which the line says.
  EXPECT_EQ(kept_blocks_hint(c, int64_t(94.25 * double(gib)), int64_t(139.8 * double(gib))),
            "memory: the peak of 94.25 GiB per GPU (of 139.80 GiB) leaves room for "
            "model.keep_activations = 28 (now 0), every block, as model.activation_checkpointing = "
            "false: each kept block skips its recompute for 512.56 MiB more (`zerotrain estimate "
            "--config RUN.toml --set model.keep_activations=28`)");
  // Nothing to say: no room, an unknown device size, every block kept, or checkpointing off.
  EXPECT_EQ(kept_blocks_hint(c, 75 * gib, h100), "");
  EXPECT_EQ(kept_blocks_hint(c, peak, 0), "");
  c.model.keep_activations = 28;
  EXPECT_EQ(kept_blocks_hint(c, peak, h100), "");
  c.model.keep_activations = 0;
  c.model.activation_checkpointing = false;
  EXPECT_EQ(kept_blocks_hint(c, peak, h100), "");
}

// train.global_batch_size = 16 with micro-batches of 8 on one rank is grad_accum_steps = 2: the
// same run. out_dir's config.toml keeps the config as given, so it runs on any rank count.
TEST(Trainer, GlobalBatchSizeIsTheDerivedAccumulation) {
  RunConfig explicit_accum = quick_config(fresh_dir("gbs0"), 3);
  explicit_accum.train.grad_accum_steps = 2;
  RunConfig global = quick_config(fresh_dir("gbs1"), 3);
  global.train.global_batch_size = 2 * global.train.micro_batch_size;
  const TrainSummary a = train(explicit_accum), b = train(global);
  ASSERT_EQ(b.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i + 1;
  const RunConfig written = load_config((fs::path(global.train.out_dir) / "config.toml").string(), {});
  EXPECT_EQ(written.train.global_batch_size, 16);
  EXPECT_EQ(written.train.grad_accum_steps, 1);
  // A rank count the global batch does not split into is refused before anything is written.
  RunConfig odd = quick_config(fresh_dir("gbs2"), 3);
  odd.train.global_batch_size = 24;
  odd.train.grad_accum_steps = 2;
  EXPECT_THROW(train(odd), UserError);
  EXPECT_FALSE(fs::exists(fs::path(odd.train.out_dir) / "config.toml"));
}

// The line after the last step: the throughput of the steps after the first two (warm-up), as
// tokens over time (the harmonic mean of the per-step rates), with MFU and peak memory.
TEST(Trainer, ThroughputLineIsTheSteadyStateOfTheLaunch) {
  const int64_t gib = int64_t(1) << 30;
  auto step = [&](int64_t k, double rate, double mfu, int64_t peak) {
    StepMetrics m;
    m.step = k;
    m.tokens_per_s = rate;
    m.mfu = mfu;
    m.peak_mem_bytes = peak * gib;
    return m;
  };
  // A resumed launch (steps 11-15) on 2 GPUs: steps 13-15 count. Each step has the same tokens,
  // so 4000, 2000 and 4000 tokens/s make 3 / (1/4000 + 1/2000 + 1/4000) = 3000, not the mean 3333.
  const std::vector<StepMetrics> gpu = {step(11, 100, 0.01, 90), step(12, 3000, 0.3, 100),
                                        step(13, 4000, 0.4, 110), step(14, 2000, 0.2, 110),
                                        step(15, 4000, 0.4, 110)};
  EXPECT_EQ(format_throughput_line(gpu, 2, 2),
            "throughput, steps 13-15: 3000 tokens/s, 1500 per GPU, MFU 30.0%, peak mem 110.00 GiB "
            "per GPU");
  // 4 ranks sharing those 2 GPUs (comm.backend = "mpi"): the rate is still per GPU, the peak a
  // rank's.
  EXPECT_EQ(format_throughput_line(gpu, 4, 2),
            "throughput, steps 13-15: 3000 tokens/s, 1500 per GPU, MFU 30.0%, peak mem 110.00 GiB "
            "per rank");
  // Two steps: the second; one step: nothing to say.
  EXPECT_EQ(format_throughput_line({gpu[0], gpu[1]}, 1, 1),
            "throughput, steps 12-12: 3000 tokens/s, 3000 per GPU, MFU 30.0%, peak mem 100.00 GiB "
            "per GPU");
  EXPECT_EQ(format_throughput_line({gpu[0]}, 1, 1), "");
  EXPECT_EQ(format_throughput_line({}, 1, 1), "");
  // The CPU backend has no MFU, and its ranks are not GPUs.
  const std::vector<StepMetrics> cpu = {step(1, 10, 0, 1), step(2, 20, 0, 1), step(3, 30, 0, 1)};
  EXPECT_EQ(format_throughput_line(cpu, 3, 0),
            "throughput, steps 3-3: 30 tokens/s, 10 per rank, peak mem 1.00 GiB per rank");
}

TEST(Trainer, Bf16ParametersTrainToo) {
  RunConfig c = quick_config(fresh_dir("bf16"), 30);
  c.train.precision = DType::kBF16;
  const TrainSummary s = train(c);
  EXPECT_LT(s.steps.back().loss, s.steps.front().loss - 0.5);
}

TEST(Cli, ParsesTrainArguments) {
  CliCommand c = parse_cli({"train", "cfg.toml", "--set", "train.steps=5", "--set=optimizer.lr=1e-3"});
  EXPECT_EQ(c.kind, CliCommand::Kind::kTrain);
  EXPECT_EQ(c.config_path, "cfg.toml");
  EXPECT_EQ(c.overrides, (std::vector<std::string>{"train.steps=5", "optimizer.lr=1e-3"}));
  EXPECT_EQ(parse_cli({"train"}).config_path, "");
  EXPECT_EQ(parse_cli({"train", "--help"}).kind, CliCommand::Kind::kTrainHelp);
  EXPECT_EQ(parse_cli({}).kind, CliCommand::Kind::kHelp);
  EXPECT_EQ(parse_cli({"--version"}).kind, CliCommand::Kind::kVersion);
}

TEST(Cli, RejectsBadArgumentsWithTheFix) {
  auto message = [](const std::vector<std::string>& args) {
    try {
      parse_cli(args);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message({"trian"}).find("unknown command \"trian\""), std::string::npos);
  EXPECT_NE(message({"train", "--sett", "x=1"}).find("unknown option \"--sett\""), std::string::npos);
  EXPECT_NE(message({"train", "--set"}).find("--set needs a value"), std::string::npos);
  EXPECT_NE(message({"train", "a.toml", "b.toml"}).find("two config files"), std::string::npos);
}

TEST(Cli, BadConfigExitsWithCode2AndAMessage) {
  ::testing::internal::CaptureStderr();
  const int code = run_cli({"train", "/nonexistent/zt.toml"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 2);
  EXPECT_NE(err.find("zerotrain: error:"), std::string::npos) << err;
  EXPECT_NE(err.find("/nonexistent/zt.toml"), std::string::npos) << err;
}

TEST(Cli, TrainHelpListsEveryKey) {
  const std::string help = train_usage_text();
  for (const char* key : {"model.preset", "model.activation_checkpointing", "train.micro_batch_size",
                          "train.grad_accum_steps", "train.seq_len", "train.precision",
                          "optimizer.lr", "optimizer.grad_clip", "data.source"})
    EXPECT_NE(help.find(key), std::string::npos) << key;
}

}  // namespace
}  // namespace zt::launch

namespace zt::launch {
namespace {

TEST(Device, AutoPicksTheCpuForFp32OrWithoutAGpu) {
  TrainSection t;
  EXPECT_TRUE(resolve_device(t, CommSection{}, 0, 1).is_cpu());  // fp32 default
  t.precision = DType::kBF16;
  if (cuda_device_count() == 0) EXPECT_TRUE(resolve_device(t, CommSection{}, 0, 1).is_cpu());
  else {  // the last rank of a node with one rank per GPU gets the last GPU
    const int gpus = cuda_device_count();
    EXPECT_EQ(resolve_device(t, CommSection{}, gpus - 1, gpus), Device::cuda(gpus - 1));
  }
}

TEST(Device, CudaThatCannotBeHadIsAClearError) {
  TrainSection t;
  t.device = "cuda";
  t.precision = DType::kBF16;
  std::string message;
  try {
    resolve_device(t, CommSection{}, 0, 64);  // more ranks on a node than any machine here has GPUs
  } catch (const UserError& e) {
    message = e.what();
  }
  EXPECT_TRUE(message.find("built without CUDA") != std::string::npos ||
              message.find("no GPU is visible") != std::string::npos ||
              message.find("NCCL needs one GPU per rank") != std::string::npos)
      << message;
  if (cuda_device_count() > 0) {
    t.precision = DType::kF32;
    EXPECT_THROW(resolve_device(t, CommSection{}, 0, 1), UserError);  // the CUDA backend computes in 16 bits
  }
}

// comm.backend = "nccl" when train.device = "auto" lands on the CPU (fp32 here, or no GPU): the
// user asked for NCCL, so the run says why it cannot have it instead of quietly using MPI.
TEST(Device, NcclOnTheCpuIsAClearError) {
  TrainSection t;  // device auto, precision fp32: the CPU backend
  CommSection c;
  c.backend = "nccl";
  std::string message;
  try {
    resolve_device(t, c, 0, 1);
  } catch (const UserError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("comm.backend = \"nccl\" needs GPUs, but train.device = \"auto\" chose the CPU"),
            std::string::npos) << message;
  c.backend = "mpi";
  EXPECT_TRUE(resolve_device(t, c, 0, 1).is_cpu());
}

// With comm.backend = "mpi" more ranks than GPUs is allowed: rank r takes GPU r % gpus, and the
// ranks sharing a GPU split its memory.
TEST(Device, RanksShareGpusRoundRobin) {
  EXPECT_EQ(ranks_on_gpu(0, 1, 1), 1);
  EXPECT_EQ(ranks_on_gpu(1, 2, 2), 1);  // one rank per GPU
  EXPECT_EQ(ranks_on_gpu(0, 4, 1), 4);
  // 5 ranks on 2 GPUs: GPU 0 runs ranks 0, 2, 4; GPU 1 runs ranks 1, 3.
  for (int r : {0, 2, 4}) EXPECT_EQ(ranks_on_gpu(r, 5, 2), 3) << r;
  for (int r : {1, 3}) EXPECT_EQ(ranks_on_gpu(r, 5, 2), 2) << r;
  const int gpus = cuda_device_count();
  if (gpus > 0) {
    TrainSection t;
    t.device = "cuda";
    t.precision = DType::kBF16;
    CommSection c;
    c.backend = "mpi";
    EXPECT_EQ(resolve_device(t, c, gpus, 2 * gpus), Device::cuda(0));
    EXPECT_EQ(resolve_device(t, c, 2 * gpus - 1, 2 * gpus), Device::cuda(gpus - 1));
    std::string message;
    try {
      resolve_device(t, CommSection{}, 0, 2 * gpus);
    } catch (const UserError& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("or set comm.backend = \"mpi\" to let ranks share GPUs"), std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace zt::launch
