// `zerotrain estimate`: flag parsing, sizes, agreement with a real engine, and docs/zero.md.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "launch/bench.h"
#include "launch/estimate.h"
#include "runtime/error.h"
#include "runtime/self_comm.h"
#include "zero/engine.h"

namespace zt::launch {
namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_estimate_args(args);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Estimate, ParsesSizes) {
  EXPECT_EQ(parse_byte_size("--gpu-mem", "80GiB"), int64_t(80) << 30);
  EXPECT_EQ(parse_byte_size("--gpu-mem", "80 GB"), int64_t(80'000'000'000));
  EXPECT_EQ(parse_byte_size("--cpu-mem", "1.5TiB"), int64_t(3) << 39);
  EXPECT_EQ(parse_byte_size("--cpu-mem", "4096"), 4096);
  EXPECT_THROW(parse_byte_size("--gpu-mem", "80GiBs"), UserError);
  EXPECT_THROW(parse_byte_size("--gpu-mem", "-1GB"), UserError);
  EXPECT_THROW(parse_byte_size("--gpu-mem", "lots"), UserError);
  // Rounding to nothing, or past what int64 bytes hold (llround overflowed to a negative size).
  EXPECT_THROW(parse_byte_size("--gpu-mem", "0.1B"), UserError);
  EXPECT_THROW(parse_byte_size("--gpu-mem", "1e30GiB"), UserError);
}

TEST(Estimate, ParsesFlagsAndRejectsBadOnes) {
  const EstimateArgs a = parse_estimate_args({"--model", "gptj-6b", "--gpus", "8", "--gpu-mem", "40GiB",
                                              "--micro-batch", "2", "--seq-len", "1024", "--offload",
                                              "--activation-checkpointing", "off", "--precision", "fp16"});
  EXPECT_EQ(a.input.gpus, 8);
  EXPECT_EQ(a.input.gpu_bytes, int64_t(40) << 30);
  EXPECT_EQ(a.input.micro_batch, 2);
  EXPECT_EQ(a.input.seq_len, 1024);
  EXPECT_TRUE(a.offload);
  EXPECT_FALSE(a.input.activation_checkpointing);
  EXPECT_EQ(a.input.precision, DType::kF16);
  EXPECT_NE(error_of({"--gpus", "0"}).find("--gpus 0: must be >= 1"), std::string::npos);
  EXPECT_NE(error_of({"--gpus"}).find("--gpus needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--gpus=2"}).find("--gpus=2: give the value after a space, as in --gpus 2"),
            std::string::npos);
  EXPECT_NE(error_of({"--gpu", "8"}).find("unknown option \"--gpu\""), std::string::npos);
  EXPECT_NE(error_of({"--model", "gpt2"}).find("unknown model preset \"gpt2\""), std::string::npos);
  EXPECT_NE(error_of({"--seq-len", "4096"}).find("exceeds the model's n_positions 2048"), std::string::npos);
  EXPECT_NE(error_of({"--precision", "fp32"}).find("bf16 or fp16"), std::string::npos);
  // Counts that wrapped in int, and sizes whose products would overflow.
  EXPECT_NE(error_of({"--gpus", "4294967297"}).find("--gpus 4294967297: must be <= 1048576"), std::string::npos);
  EXPECT_NE(error_of({"--gpus", "99999999999999999999"}).find("must be <="), std::string::npos);
  EXPECT_NE(error_of({"--micro-batch", "100000000000"}).find("would pass 2^48 elements"), std::string::npos);
}

// bench reads its integer flags with the same parser (launch/flags.h): bounded before they are
// narrowed (--iters 4294967297 ran 1 iteration), a positive count for the sizes.
TEST(BenchCli, IntegerFlagsAreBoundedBeforeNarrowing) {
  auto bench_error = [](const std::vector<std::string>& args) {
    try {
      parse_bench_args(args);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(parse_bench_args({"--iters", "7"}).iters, 7);
  EXPECT_EQ(bench_error({"--iters", "4294967297"}), "--iters 4294967297: must be <= 2147483647");
  EXPECT_EQ(bench_error({"--micro-batch", "0"}), "--micro-batch 0: must be >= 1");
  EXPECT_EQ(bench_error({"--seq-len", "x"}), "--seq-len x: expected an integer");
}

// Each kept block (--keep-activations) adds its saved tensors except the input, which
// checkpointing keeps anyway: q, k, v, attention output (4 x [N, D] in bf16), the fc_in output
// ([N, F]), fp32 LayerNorm mean and rstd and the per-head log-sum-exp (ln_1's and gelu's outputs
// are recomputed). Keeping every block is checkpointing off.
TEST(Estimate, KeptBlocksCostTheirActivationsAndKeepingAllIsCheckpointingOff) {
  zero::EstimateInput in;  // 1 x 2048 tokens, bf16
  in.model = model::gptj_preset("gptj-6b");
  const int64_t n = in.micro_batch * in.seq_len, d = in.model.d_model, f = in.model.d_ff;
  const int64_t per_block = n * (4 * d + f) * 2 + n * (8 + 4 * in.model.n_head);
  const int64_t none = zero::activation_bytes(in);
  for (int64_t keep : {1, 5, 27}) {
    in.keep_activations = keep;
    EXPECT_EQ(zero::activation_bytes(in), none + keep * per_block) << keep;
  }
  // The shared recompute area (one block but its input) goes once no block needs it.
  in.keep_activations = in.model.n_layer;
  const int64_t all = zero::activation_bytes(in);
  EXPECT_EQ(all, none + (in.model.n_layer - 1) * per_block);
  zero::EstimateInput off = in;
  off.keep_activations = 0;
  off.activation_checkpointing = false;
  EXPECT_EQ(all, zero::activation_bytes(off));
  // Without checkpointing the count is ignored: every block keeps its activations already.
  off.keep_activations = 3;
  EXPECT_EQ(zero::activation_bytes(off), all);
}

// max keep: the row fits with that many kept blocks and not with one more.
TEST(Estimate, MaxKeepIsTheMostKeptBlocksThatStillFit) {
  EstimateArgs a = parse_estimate_args({"--gpus", "2", "--gpu-mem", "80GiB", "--micro-batch", "4"});
  const auto rows = zero::estimate_memory(a.input, false);
  EXPECT_EQ(rows[0].max_keep_activations, -1);  // stage 0 does not fit 80 GiB at all
  const zero::StageEstimate& s1 = rows[1];  // ZeRO-1: 66 GiB with every block recomputed
  ASSERT_TRUE(s1.fits_gpu);
  ASSERT_GT(s1.max_keep_activations, 0);
  ASSERT_LT(s1.max_keep_activations, a.input.model.n_layer);
  a.input.keep_activations = s1.max_keep_activations;
  EXPECT_TRUE(zero::estimate_memory(a.input, false)[1].fits_gpu);
  a.input.keep_activations = s1.max_keep_activations + 1;
  EXPECT_FALSE(zero::estimate_memory(a.input, false)[1].fits_gpu);
  // The figure does not depend on the keep the estimate was asked for.
  EXPECT_EQ(zero::estimate_memory(a.input, false)[1].max_keep_activations, s1.max_keep_activations);
  // With room for everything, every block is kept.
  const EstimateArgs big = parse_estimate_args({"--gpus", "8", "--gpu-mem", "141GiB"});
  EXPECT_EQ(zero::estimate_memory(big.input, false)[3].max_keep_activations, 28);
  EXPECT_NE(run_estimate(a).find("max keep"), std::string::npos);
  // The footnote gives the price of a kept block (GPT-J-6B at 4 x 2048 tokens).
  EXPECT_NE(run_estimate(a).find("at 0.50 GiB per block per GPU"), std::string::npos);
}

// --set changes the config before the estimate reads it, wherever it stands.
TEST(Estimate, SetOverridesTheConfig) {
  const std::string config = std::string(ZT_SOURCE_DIR) + "/examples/gptj-6b-2gpu.toml";
  const EstimateArgs a = parse_estimate_args(
      {"--set", "model.keep_activations=28", "--config", config, "--set", "train.micro_batch_size=2"});
  EXPECT_EQ(a.input.keep_activations, 28);
  EXPECT_EQ(a.input.micro_batch, 2);
  EXPECT_TRUE(a.input.activation_checkpointing);
  EXPECT_EQ(parse_estimate_args({"--config", config}).input.keep_activations, 0);
  EXPECT_EQ(error_of({"--config", config, "--set", "model.keep_activation=3"}),
            "--set model.keep_activation=3: unknown config key \"model.keep_activation\" (did you "
            "mean \"model.keep_activations\"?)");
  EXPECT_NE(error_of({"--set", "model.keep_activations=3"}).find("give it with --config RUN.toml"),
            std::string::npos);
  EXPECT_NE(error_of({"--config", config, "--set"}).find("--set needs a value"), std::string::npos);
}

// The trainer's hint after its first step (launch/trainer.cpp): from a measured peak, how many
// blocks could keep their activations under 95% of the GPU.
TEST(Estimate, MaxKeepFromAMeasuredPeak) {
  // GPT-J-6B at 4 x 2048 tokens: 0.50 GiB per kept block, the estimator's step per kept block.
  zero::EstimateInput in;
  in.model = model::gptj_preset("gptj-6b");
  in.micro_batch = 4;
  const int64_t block = zero::kept_block_bytes(in);
  const int64_t none = zero::activation_bytes(in);
  in.keep_activations = 1;
  EXPECT_EQ(zero::activation_bytes(in) - none, block);
  const int64_t gib = int64_t(1) << 30;
  auto gibs = [&](double x) { return int64_t(x * double(gib)); };
  // Stage 0 on an H200 (139.8 GiB): 94.26 GiB with every block recomputed leaves room for all.
  EXPECT_EQ(zero::max_keep_from_peak(gibs(94.26), gibs(139.8), block, 0, 28), 28);
  // 2 x 80 GB, ZeRO-1: 66.1 GiB leaves 9.9 GiB, 19 blocks (the estimate's max keep too).
  EXPECT_EQ(zero::max_keep_from_peak(gibs(66.1), 80 * gib, block, 0, 28), 19);
  // Already keeping 10 (95% of 80 GiB usable): the room is on top of them, and 27 of 28
  // becomes 28.
  const int64_t usable = 76 * gib;
  EXPECT_EQ(zero::max_keep_from_peak(usable - 18 * block - block / 2, 80 * gib, block, 10, 28), 28);
  EXPECT_EQ(zero::max_keep_from_peak(usable - 17 * block - block / 2, 80 * gib, block, 10, 28), 28);
  EXPECT_EQ(zero::max_keep_from_peak(usable - 16 * block - block / 2, 80 * gib, block, 10, 28), 26);
  // No room for one more block, or over the usable share already: unchanged.
  EXPECT_EQ(zero::max_keep_from_peak(76 * gib - block / 2, 80 * gib, block, 3, 28), 3);
  EXPECT_EQ(zero::max_keep_from_peak(79 * gib, 80 * gib, block, 0, 28), 0);
  EXPECT_THROW(zero::max_keep_from_peak(gib, 80 * gib, 0, 0, 28), Error);
}

TEST(Estimate, KeepActivationsFlag) {
  const EstimateArgs a = parse_estimate_args({"--keep-activations", "4"});
  EXPECT_EQ(a.input.keep_activations, 4);
  EXPECT_NE(run_estimate(a).find("activation checkpointing on, the last 4 blocks kept"),
            std::string::npos);
  EXPECT_NE(error_of({"--keep-activations", "29"}).find("--keep-activations 29 exceeds the model's 28 blocks"),
            std::string::npos);
  EXPECT_NE(error_of({"--keep-activations", "-1"}).find("--keep-activations -1: must be >= 0"),
            std::string::npos);
  EXPECT_NE(error_of({"--keep-activations", "2", "--activation-checkpointing", "off"})
                .find("needs activation checkpointing on"),
            std::string::npos);
}

// The estimate a GPU run logs at its start: the row of its stage and offload, its max keep for
// model.keep_activations = "auto", and the peak with the kept blocks (GPT-J-6B, 4 x 2048 tokens).
TEST(Estimate, RunMemoryAndAutoKeepAreThoseOfTheRunsRow) {
  RunConfig c;
  c.model.shape = model::gptj_preset("gptj-6b");
  c.model.activation_checkpointing = true;
  c.model.keep_activations = kKeepActivationsAuto;
  c.train.micro_batch_size = 4;
  c.train.seq_len = 2048;
  c.train.precision = DType::kBF16;
  const int64_t gib = int64_t(1) << 30, h200 = int64_t(139.8 * double(gib));
  // One H200 at stage 0: every block fits (107.76 GiB measured and estimated, docs/performance.md).
  RunMemory k = estimate_run_memory(c, 1, h200);
  EXPECT_EQ(k.keep, 28);
  EXPECT_TRUE(k.fits);
  EXPECT_NEAR(double(k.gpu_total) / double(gib), 107.76, 0.01);
  // Two 80 GB GPUs: ZeRO-1 keeps the estimate's max keep (some, not all); the total is that
  // row's with those blocks kept, under 95% of the GPU.
  c.zero.stage = 1;
  k = estimate_run_memory(c, 2, 80 * gib);
  zero::EstimateInput in;
  apply_run_config(c, in);
  in.gpus = 2;
  in.gpu_bytes = 80 * gib;
  const int64_t max_keep = zero::estimate_memory(in, false)[1].max_keep_activations;
  EXPECT_GT(max_keep, 0);
  EXPECT_LT(max_keep, 28);
  EXPECT_EQ(k.keep, max_keep);
  in.keep_activations = max_keep;
  EXPECT_EQ(k.gpu_total, zero::estimate_memory(in, false)[1].gpu_total());
  EXPECT_LE(double(k.gpu_total), 0.95 * double(80 * gib));
  EXPECT_TRUE(k.fits);
  // Offload rows: stage 3 with both offloads on one 24 GB GPU.
  c.zero.stage = 3;
  c.zero.offload_optimizer = "cpu";
  c.zero.offload_params = "cpu";
  k = estimate_run_memory(c, 1, 24 * gib);
  in = zero::EstimateInput{};
  apply_run_config(c, in);
  in.gpu_bytes = 24 * gib;
  EXPECT_EQ(k.keep, zero::estimate_memory(in, true).back().max_keep_activations);
  EXPECT_TRUE(k.fits);
  // Stage 0 on one 80 GB GPU does not fit even with every block recomputed: 0, and says so.
  c.zero = ZeroSection{};
  k = estimate_run_memory(c, 1, 80 * gib);
  EXPECT_EQ(k.keep, 0);
  EXPECT_FALSE(k.fits);
  EXPECT_GT(k.gpu_total, 80 * gib);
  // A count in the config is taken as it is, fitting or not: 20 kept blocks at stage 0 on one
  // H200 cost 20 x 512.56 MiB over every block recomputed (94.25 GiB).
  c.model.keep_activations = 20;
  k = estimate_run_memory(c, 1, h200);
  EXPECT_EQ(k.keep, 20);
  EXPECT_TRUE(k.fits);
  EXPECT_NEAR(double(k.gpu_total) / double(gib), 94.25 + 20 * 512.56 / 1024, 0.01);
  EXPECT_FALSE(estimate_run_memory(c, 1, 80 * gib).fits);
  // Without checkpointing there is nothing to choose: every block keeps its activations.
  c.model.activation_checkpointing = false;
  c.model.keep_activations = 0;
  k = estimate_run_memory(c, 1, h200);
  EXPECT_EQ(k.keep, 0);
  EXPECT_NEAR(double(k.gpu_total) / double(gib), 107.76, 0.01);
}

TEST(Estimate, KeepActivationsAutoFromTheConfigOrTheFlag) {
  const std::string config = std::string(ZT_SOURCE_DIR) + "/examples/gptj-6b-2gpu.toml";
  const EstimateArgs a =
      parse_estimate_args({"--config", config, "--set", "model.keep_activations=auto"});
  EXPECT_TRUE(a.keep_auto);
  EXPECT_EQ(a.input.keep_activations, 0);
  EXPECT_NE(run_estimate(a).find("model.keep_activations = \"auto\": each row keeps its max keep "
                                 "blocks"),
            std::string::npos);
  // Each row is the estimate at its own max keep: on two 80 GiB GPUs ZeRO-1 keeps 19 blocks and
  // ZeRO-2 all 28; stage 0 does not fit at all and stays at 0.
  EstimateArgs on2 = parse_estimate_args({"--config", config, "--set", "model.keep_activations=auto",
                                          "--gpus", "2", "--gpu-mem", "80GiB"});
  const std::string table = run_estimate(on2);
  const auto plain = zero::estimate_memory(on2.input, false);
  ASSERT_EQ(plain[1].max_keep_activations, 19);
  ASSERT_EQ(plain[2].max_keep_activations, 28);
  for (int stage : {1, 2}) {
    zero::EstimateInput kept = on2.input;
    kept.keep_activations = plain[size_t(stage)].max_keep_activations;
    const zero::StageEstimate row = zero::estimate_memory(kept, false)[size_t(stage)];
    char total[32];
    std::snprintf(total, sizeof(total), "%.2f GiB", double(row.gpu_total()) / double(int64_t(1) << 30));
    EXPECT_GT(row.gpu_total(), plain[size_t(stage)].gpu_total());
    EXPECT_NE(table.find(total), std::string::npos) << "stage " << stage << " " << total << ":\n" << table;
  }
  EXPECT_FALSE(parse_estimate_args({"--config", config}).keep_auto);
  // The flag after the config wins, either way.
  EXPECT_FALSE(parse_estimate_args({"--config", config, "--set", "model.keep_activations=auto",
                                    "--keep-activations", "3"})
                   .keep_auto);
  EXPECT_TRUE(parse_estimate_args({"--keep-activations", "auto"}).keep_auto);
  EXPECT_EQ(run_estimate(parse_estimate_args({})).find("\"auto\""), std::string::npos);
  EXPECT_NE(error_of({"--keep-activations", "auto", "--activation-checkpointing", "off"})
                .find("--keep-activations auto needs activation checkpointing on"),
            std::string::npos);
  EXPECT_NE(error_of({"--keep-activations", "most"}).find("--keep-activations most: expected an integer or auto"),
            std::string::npos);
}

// The estimator's model state is the engine's, byte for byte (one rank here; tests/mpi checks N).
// zero.delayed_update_from_step keeps a second host gradient shard: the offload rows without
// offload_params gain its bytes per rank on the host (bf16: 2 per parameter of the shard), what
// a real engine allocates (tests/zero/test_engine.cpp checks the engine's count).
TEST(Estimate, DelayedUpdateAddsAHostGradientShard) {
  const std::string config = std::string(ZT_SOURCE_DIR) + "/examples/gptj-6b-1gpu-offload.toml";
  const EstimateArgs plain = parse_estimate_args({"--config", config, "--offload", "--gpus", "2",
                                                  "--gpus-per-node", "2"});
  const EstimateArgs delayed = parse_estimate_args({"--config", config, "--set",
                                                    "zero.delayed_update_from_step=40", "--offload",
                                                    "--gpus", "2", "--gpus-per-node", "2"});
  EXPECT_FALSE(plain.input.delayed_update);
  EXPECT_TRUE(delayed.input.delayed_update);
  EXPECT_EQ(run_estimate(plain).find("second host copy"), std::string::npos);
  EXPECT_NE(run_estimate(delayed).find("includes a second host copy of\neach rank's gradient shard"),
            std::string::npos);
  const auto a = zero::estimate_memory(plain.input, true);
  const auto b = zero::estimate_memory(delayed.input, true);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("stage " + std::to_string(a[i].stage) + (a[i].offload ? " offload" : "") +
                 (a[i].offload_params ? "+params" : ""));
    EXPECT_EQ(b[i].gpu_total(), a[i].gpu_total());
    // An offload row's host memory is 12 bytes (fp32 master, m, v) + 2 (the bf16 gradient copy)
    // per shard element and rank; the second gradient copy adds 2 more, 1/7 of that.
    int64_t extra = 0;
    if (a[i].offload && !a[i].offload_params) {
      EXPECT_GT(a[i].cpu_per_node, 0);
      EXPECT_EQ(a[i].cpu_per_node % 7, 0);
      extra = a[i].cpu_per_node / 7;
    }
    EXPECT_EQ(b[i].cpu_per_node - a[i].cpu_per_node, extra);
  }
}

TEST(Estimate, ModelStateEqualsARealEngineOnOneRank) {
  zero::EstimateInput in;
  in.model = model::gptj_preset("gptj-tiny");
  in.gpus = 1;
  in.bucket_elements = 20000;
  in.seq_len = 64;
  const auto rows = zero::estimate_memory(in, false);
  ASSERT_EQ(rows.size(), 4u);
  SelfComm comm;
  for (const zero::StageEstimate& row : rows) {
    zero::EngineOptions o;
    o.param_dtype = DType::kBF16;
    o.stage = row.stage;
    o.bucket_elements = 20000;
    zero::Engine e(in.model, o, comm);
    const zero::ModelStateBytes b = e.model_state_bytes();
    EXPECT_EQ(row.params, b.params) << "stage " << row.stage;
    EXPECT_EQ(row.grads, b.grads) << "stage " << row.stage;
    EXPECT_EQ(row.optimizer, b.optimizer) << "stage " << row.stage;
  }
}

TEST(Estimate, SixBillionOnEightGpusFitsFromStageOne) {
  const EstimateArgs a = parse_estimate_args({"--gpus", "8", "--gpu-mem", "80GiB", "--offload"});
  const auto rows = zero::estimate_memory(a.input, true);
  ASSERT_EQ(rows.size(), 8u);  // stages 0-3, 1-3 with the optimizer offloaded, 3 with the params too
  EXPECT_FALSE(rows[0].fits_gpu);  // stage 0: 16 bytes x 6.05e9 = 90 GiB of model state
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_TRUE(rows[i].fits_gpu && rows[i].fits_cpu) << i;
  // Stage 3 holds 16 psi / 8 bytes of model state, plus activations and buffers.
  EXPECT_NEAR(double(rows[3].params + rows[3].grads + rows[3].optimizer), 16.0 * 6050882784.0 / 8,
              1e-3 * 16.0 * 6050882784.0 / 8);
  // Offloading stage 3's parameters moves their 2 psi / 8 per GPU to the host (8 GPUs a node),
  // at the cost of one uploaded layer piece in the buffers.
  const zero::StageEstimate& s3 = rows[6];
  const zero::StageEstimate& s3p = rows[7];
  ASSERT_TRUE(s3.stage == 3 && s3.offload && !s3.offload_params);
  ASSERT_TRUE(s3p.stage == 3 && s3p.offload && s3p.offload_params);
  EXPECT_EQ(s3p.params, 0);
  EXPECT_EQ(s3p.grads, s3.grads);
  EXPECT_EQ(s3p.cpu_per_node, s3.cpu_per_node + 8 * s3.params);
  EXPECT_GT(s3p.buffers, s3.buffers);
  EXPECT_LT(s3p.gpu_total(), s3.gpu_total());
  EXPECT_NE(run_estimate(a).find("cpu+params"), std::string::npos);
  EXPECT_NE(run_estimate(a).find("yes"), std::string::npos);
}

// docs/zero.md holds the estimator's tables for gptj-6b at 1, 2, 8 and 64 GPUs between markers.
// ZT_UPDATE_DOCS=1 rewrites them.
TEST(EstimateDocs, ZeroMdTablesAreInSync) {
  const std::string path = std::string(ZT_SOURCE_DIR) + "/docs/zero.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string doc = ss.str();
  const std::string original = doc;
  for (int gpus : {1, 2, 8, 64}) {
    EstimateArgs a = parse_estimate_args({"--gpus", std::to_string(gpus), "--offload"});
    const std::string table = zero::format_estimate_markdown(a.input, zero::estimate_memory(a.input, true));
    const std::string begin = "<!-- BEGIN estimate gpus=" + std::to_string(gpus) + " -->\n";
    const std::string end = "<!-- END estimate gpus=" + std::to_string(gpus) + " -->";
    const size_t b = doc.find(begin), e = doc.find(end);
    ASSERT_TRUE(b != std::string::npos && e != std::string::npos && b < e) << "markers for " << gpus;
    doc.replace(b + begin.size(), e - b - begin.size(), table);
  }
  if (doc == original) return;
  const char* update = std::getenv("ZT_UPDATE_DOCS");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(path, std::ios::trunc) << doc;
    return;
  }
  FAIL() << "docs/zero.md is out of date with the estimator; regenerate it with "
            "ZT_UPDATE_DOCS=1 build/tests/zt_tests_launch --gtest_filter=EstimateDocs.*";
}

}  // namespace
}  // namespace zt::launch
