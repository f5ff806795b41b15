// ZeRO stages 0-3 on N ranks (run under mpirun with N = 1..4) against the 1-rank stage-0 run of
// the same global batch: losses, final parameters, mixed precision, model-state bytes per rank,
// and agreed skipping of non-finite steps.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/trainer.h"
#include "model/gptj.h"
#include "runtime/device.h"
#include "runtime/log.h"
#include "runtime/memory.h"
#include "runtime/mpi_comm.h"
#include "runtime/self_comm.h"
#include "zero/engine.h"
#include "zero/memory_estimate.h"

namespace zt {
namespace {

using launch::RunConfig;
using launch::TrainOptions;
using launch::TrainSummary;

// gptj-tiny, 2 sequences of 32 tokens per rank per micro-batch, small buckets (several per layer,
// and with N = 3 every bucket is cut into uneven-looking 48-aligned pieces).
RunConfig base_config(int64_t steps) {
  RunConfig c = launch::parse_config("", "test", {});
  c.train.steps = steps;
  c.train.micro_batch_size = 2;
  c.train.seq_len = 32;
  c.train.log_every = 1000;
  c.train.seed = 77;
  c.train.device = "cpu";  // these tests hold the CPU engine to its 1-rank run (auto would pick GPUs)
  c.optimizer.warmup_steps = 5;
  c.zero.bucket_elements = 20000;
  return c;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<float> params;
  std::vector<bool> skipped;
};

RunResult run(const RunConfig& c, Comm& comm, TrainOptions options = {}) {
  options.write_outputs = false;
  options.collect_final_params = true;
  const TrainSummary s = launch::train(c, comm, options);
  RunResult r;
  for (const auto& m : s.steps) {
    r.losses.push_back(m.loss);
    r.skipped.push_back(m.skipped);
  }
  r.params = s.final_params;
  return r;
}

// The 1-rank stage-0 run that processes the same global batch as `c` on `world` ranks.
RunResult reference(RunConfig c, int world) {
  c.zero.stage = 0;
  c.train.micro_batch_size *= world;
  SelfComm self;
  return run(c, self);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

class ZeroStages : public ::testing::Test {
 protected:
  void SetUp() override { log_configure(LogOptions{LogLevel::kWarn}, false); }
  MpiComm world_{MPI_COMM_WORLD};
};

// fp32: the runs differ only in summation order (how samples split over ranks and micro-batches,
// and the order of cross-rank sums), ~1e-7 relative per gradient. Adam normalises updates, so
// parameters move ~lr = 3e-3 per step and a 1e-7 relative gradient difference moves them by
// ~1e-7 of that; over 20 steps the loss differences stay near 1e-6 relative. The bounds (2e-5
// relative on the loss, 2e-5 absolute on parameters of size ~0.02-1) leave an order of magnitude
// of margin while a real bug (a missing rank's gradients, a wrong shard) is off by 1e-2 or more.
TEST_F(ZeroStages, EveryStageMatchesOneRankStageZeroInFp32) {
  const RunConfig c = base_config(20);
  const RunResult ref = reference(c, world_.size());
  for (int stage = 0; stage <= 3; ++stage) {
    RunConfig cs = c;
    cs.zero.stage = stage;
    const RunResult r = run(cs, world_);
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) + " ranks");
    ASSERT_EQ(r.losses.size(), ref.losses.size());
    for (size_t i = 0; i < r.losses.size(); ++i)
      EXPECT_NEAR(r.losses[i], ref.losses[i], 2e-5 * ref.losses[i]) << "step " << i + 1;
    EXPECT_LT(max_abs_diff(r.params, ref.params), 2e-5);
  }
  EXPECT_LT(ref.losses.back(), ref.losses.front() - 1.0);  // and it is learning
}

// ZeRO-Offload through the trainer on N ranks: the CPU AdamW on the host shard is the same
// arithmetic as the engine's AdamW, so with and without offload every loss and parameter is
// identical, bf16 with accumulation (the gradient copies follow the last micro-step only). Stage
// 3 also with the parameter shard on the host (zero.offload_params): each layer's piece is
// uploaded and all-gathered from there, so the model reads the same bits.
TEST_F(ZeroStages, OffloadedOptimizerMatchesTheSameStageExactly) {
  RunConfig c = base_config(6);
  c.train.precision = DType::kBF16;
  c.train.micro_batch_size = 1;
  c.train.grad_accum_steps = 2;
  for (int stage = 1; stage <= 3; ++stage) {
    c.zero.stage = stage;
    c.zero.offload_optimizer = "none";
    c.zero.offload_params = "none";
    const RunResult plain = run(c, world_);
    c.zero.offload_optimizer = "cpu";
    const RunResult offloaded = run(c, world_);
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) + " ranks");
    EXPECT_EQ(offloaded.losses, plain.losses);
    EXPECT_EQ(offloaded.params, plain.params);
    if (stage == 3) {
      c.zero.offload_params = "cpu";
      TrainOptions options;
      bool engaged = true;
      options.before_optimizer_step = [&](int64_t, zero::Engine& e) {
        engaged = engaged && e.params_offloaded() && e.model_state_bytes().params == 0;
      };
      const RunResult params_offloaded = run(c, world_, options);
      EXPECT_TRUE(engaged) << "the trainer did not pass zero.offload_params to the engine";
      EXPECT_EQ(params_offloaded.losses, plain.losses) << "with zero.offload_params";
      EXPECT_EQ(params_offloaded.params, plain.params) << "with zero.offload_params";
    }
  }
}

// Same global batch through gradient accumulation: 1 sequence x 2 micro-batches per rank.
TEST_F(ZeroStages, AccumulationMatchesTheLargerBatchOnEveryStage) {
  RunConfig c = base_config(8);
  const RunResult ref = reference(c, world_.size());
  c.train.micro_batch_size = 1;
  c.train.grad_accum_steps = 2;
  for (int stage = 0; stage <= 3; ++stage) {
    c.zero.stage = stage;
    const RunResult r = run(c, world_);
    SCOPED_TRACE("stage " + std::to_string(stage));
    for (size_t i = 0; i < r.losses.size(); ++i)
      EXPECT_NEAR(r.losses[i], ref.losses[i], 2e-5 * ref.losses[i]) << "step " << i + 1;
    EXPECT_LT(max_abs_diff(r.params, ref.params), 2e-5);
  }
}

// The initial parameters of a run, in forward order (the same init every engine uses).
std::vector<float> initial_params(const RunConfig& c) {
  std::vector<float> out;
  for (const model::ParamSpec& s : model::gptj_param_specs(c.model.shape)) {
    std::vector<float> v(size_t(s.numel()));
    model::init_param_values(s, c.model.shape, uint64_t(c.train.seed), 0, s.numel(), v.data());
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// |a - b| / |b - init|: how far two runs' parameters are apart relative to how far training
// moved them.
double relative_update_difference(const std::vector<float>& a, const std::vector<float>& b,
                                  const std::vector<float>& init) {
  double diff = 0, moved = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += std::pow(double(a[i]) - b[i], 2);
    moved += std::pow(double(b[i]) - init[i], 2);
  }
  return std::sqrt(diff / moved);
}

// bf16 and fp16 keep 16-bit parameters and gradients (unit roundoff u = 2^-9 and 2^-12). On N
// ranks each rank's gradient is rounded to 16 bits before the cross-rank sum, where the 1-rank
// run rounds the whole-batch sum once, so gradients differ by ~u relative.
// - Losses are means over 64 N tokens computed in fp32 from parameters that differ by a small
//   fraction of their updates: they agree to well within u relative (measured <= 0.02 u).
// - Parameters: Adam divides each gradient by its own running magnitude, so for elements whose
//   gradient nearly cancels across tokens a ~u difference can flip an update's sign; the
//   difference therefore shows in the norm of all updates, not element by element. Bound: 8 u
//   of bf16 (1.6%) of the update norm, for both dtypes (measured 0.7-0.9% for bf16; fp16,
//   whose small loss-scaled gradients are subnormal and so coarser than u, 0.35%).
TEST_F(ZeroStages, Bf16AndFp16StagesAgreeAndLearn) {
  for (DType dt : {DType::kBF16, DType::kF16}) {
    RunConfig c = base_config(10);
    c.train.precision = dt;
    const RunResult ref = reference(c, world_.size());
    const std::vector<float> init = initial_params(c);
    const double u = dt == DType::kBF16 ? 0x1p-9 : 0x1p-12;
    for (int stage = 0; stage <= 3; ++stage) {
      c.zero.stage = stage;
      const RunResult r = run(c, world_);
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      for (size_t i = 0; i < r.losses.size(); ++i) {
        EXPECT_FALSE(r.skipped[i]) << "step " << i + 1;
        EXPECT_NEAR(r.losses[i], ref.losses[i], u * ref.losses[i]) << "step " << i + 1;
      }
      EXPECT_LT(relative_update_difference(r.params, ref.params, init), 8 * 0x1p-9);
      EXPECT_LT(r.losses.back(), r.losses.front() - 0.3);
    }
  }
}

// The CUDA backend on N ranks over comm.backend = "mpi", so that the ranks may share this
// machine's GPUs (NCCL needs one GPU per rank), against the 1-rank stage-0 GPU run (NCCL) of the
// same global batch: 20 bf16 steps at stages 0-3, and offloaded at stages 2 and 3 (with the
// parameters at 3). It runs the GPU engine's multi-rank paths (shards, bucketed reduce-scatters,
// stage-3 gathers into device buffers) on a 1-GPU machine. The bounds are the test's above, for
// the same reasons: the GPU kernels also accumulate in fp32, and on N ranks each rank's gradient
// is rounded to bf16 before the cross-rank sum.
TEST_F(ZeroStages, CudaStagesOverMpiMatchOneRankStageZeroInBf16) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "needs a GPU";
  RunConfig c = base_config(20);
  c.train.precision = DType::kBF16;
  c.train.device = "cuda";
  const RunResult ref = reference(c, world_.size());
  const std::vector<float> init = initial_params(c);
  const double u = 0x1p-9;
  c.comm.backend = "mpi";
  TrainOptions options;  // one node: rank r on GPU r % GPUs
  options.local_rank = world_.rank();
  options.local_size = world_.size();
  for (int run_index = 0; run_index <= 5; ++run_index) {
    c.zero.stage = run_index <= 3 ? run_index : run_index - 2;
    c.zero.offload_optimizer = run_index > 3 ? "cpu" : "none";
    c.zero.offload_params = run_index == 5 ? "cpu" : "none";
    const RunResult r = run(c, world_, options);
    SCOPED_TRACE("stage " + std::to_string(c.zero.stage) + (run_index > 3 ? " offloaded" : "") +
                 " on " + std::to_string(world_.size()) + " ranks");
    ASSERT_EQ(r.losses.size(), ref.losses.size());
    for (size_t i = 0; i < r.losses.size(); ++i) {
      EXPECT_FALSE(r.skipped[i]) << "step " << i + 1;
      EXPECT_NEAR(r.losses[i], ref.losses[i], u * ref.losses[i]) << "step " << i + 1;
    }
    EXPECT_LT(relative_update_difference(r.params, ref.params, init), 8 * u);
    EXPECT_LT(r.losses.back(), r.losses.front() - 0.3);
  }
}

// Per-rank bytes of parameters, gradients and optimizer state are the DESIGN.md table's
// (2 + 2 + 12 bytes per parameter in bf16: 4 + 4 + 8 in fp32), partitioned as the stage says,
// computed over the padded layout; the padding itself is under 1% here.
TEST_F(ZeroStages, ModelStateBytesFollowTheTable) {
  model::GptjConfig shape;
  const int n = world_.size();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int stage = 0; stage <= 3; ++stage) {
      zero::EngineOptions o;
      o.param_dtype = dt;
      o.stage = stage;
      o.bucket_elements = 20000;
      zero::Engine e(shape, o, world_);
      const zero::FlatLayout& l = e.layout();
      const double psi = double(e.num_params());
      const int64_t full = l.total, shard = l.shard_size;
      if (stage > 0) {
        EXPECT_EQ(shard * n, full);
      }
      const int64_t w = int64_t(dtype_size(dt)), k = dt == DType::kF32 ? 8 : 12;
      const zero::ModelStateBytes b = e.model_state_bytes();
      SCOPED_TRACE(std::string(dtype_name(dt)) + " stage " + std::to_string(stage));
      EXPECT_EQ(b.params, w * (stage >= 3 ? shard : full));
      EXPECT_EQ(b.grads, w * (stage >= 2 ? shard : full));
      EXPECT_EQ(b.optimizer, k * (stage >= 1 ? shard : full));
      // The table in psi (unpadded): stage 0 2psi + 2psi + K psi, ... stage 3 (2 + 2 + K) psi / N.
      const double parts = stage >= 1 ? n : 1;
      const double table = w * psi / (stage >= 3 ? n : 1) + w * psi / (stage >= 2 ? n : 1) + k * psi / parts;
      EXPECT_NEAR(double(b.total()), table, 0.01 * table);
      // `zerotrain estimate` says the same, byte for byte.
      zero::EstimateInput in;
      in.model = shape;
      in.gpus = n;
      in.precision = dt;
      in.bucket_elements = 20000;
      in.seq_len = 64;
      const zero::StageEstimate row = zero::estimate_memory(in, false)[size_t(stage)];
      EXPECT_EQ(row.params, b.params);
      EXPECT_EQ(row.grads, b.grads);
      EXPECT_EQ(row.optimizer, b.optimizer);
    }
  }
  // Stage 3 with the optimizer and the parameters offloaded: the device keeps the gradient shard;
  // the host the shard's 12 + 2 + 2 bytes per parameter (optimizer, gradient copy, parameters).
  zero::EngineOptions o;
  o.param_dtype = DType::kBF16;
  o.stage = 3;
  o.bucket_elements = 20000;
  o.offload_optimizer = true;
  o.offload_params = true;
  zero::Engine e(shape, o, world_);
  const zero::ModelStateBytes b = e.model_state_bytes();
  const int64_t shard = e.layout().shard_size;
  EXPECT_EQ(b.total(), 2 * shard);
  EXPECT_EQ(b.host_optimizer + b.host_buffers + b.host_params, 16 * shard);
  zero::EstimateInput in;
  in.model = shape;
  in.gpus = n;
  in.gpus_per_node = n;
  in.bucket_elements = 20000;
  in.seq_len = 64;
  const zero::StageEstimate row = zero::estimate_memory(in, true).back();
  ASSERT_TRUE(row.stage == 3 && row.offload_params);
  EXPECT_EQ(row.params + row.grads + row.optimizer, b.total());
  EXPECT_EQ(row.cpu_per_node, n * (b.host_optimizer + b.host_buffers + b.host_params));
}

// The transient buffers of stages 1-3 at N ranks (1-4 in CTest) are what `zerotrain estimate`
// says, byte for byte, over one training step on the CPU, whose engine allocates exactly as on a
// GPU: stage 1's reduced gradient shard; at stages 2-3, 3 full layers being reduced, their 3
// staging shards and (stage 3) 2 gathered layers, each sized by the largest layer (a block here:
// 4 blocks of gptj-tiny, fp32 so that the CPU model keeps no conversion scratch in the
// category). Buckets are padded to a multiple of N, so a layer's staging shard is exactly its
// size / N.
TEST_F(ZeroStages, TransientBuffersFollowTheEstimate) {
  model::GptjConfig shape;
  shape.n_layer = 4;
  const int n = world_.size();
  zero::EstimateInput in;
  in.model = shape;
  in.gpus = n;
  in.precision = DType::kF32;
  in.bucket_elements = 20000;
  in.seq_len = 32;
  in.micro_batch = 2;
  const auto rows = zero::estimate_memory(in, false);
  std::vector<int32_t> ids(64), targets(64);
  for (int i = 0; i < 64; ++i) ids[size_t(i)] = (i * 5 + world_.rank()) % 50, targets[size_t(i)] = (i * 3) % 50;
  const model::Batch batch{ids.data(), targets.data(), 2, 32};
  auto m = model::make_cpu_gptj(shape, {});
  MemoryTracker& tracker = MemoryTracker::of(Device::cpu());
  const int buffers = int(MemCategory::kBuffers);
  for (int stage : {1, 2, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage));
    zero::EngineOptions o;
    o.param_dtype = DType::kF32;
    o.stage = stage;
    o.bucket_elements = in.bucket_elements;
    zero::Engine e(shape, o, world_);
    const int64_t before = tracker.stats().current[buffers];
    tracker.reset_peak();
    e.zero_grads();
    e.set_last_micro_step(true);
    m->forward_backward(batch, e, e.micro_grad_scale(1));
    e.step();
    EXPECT_EQ(tracker.stats().peak[buffers] - before, rows[size_t(stage)].buffers);
  }
}

// A non-finite gradient on one rank (the last) at steps 2 and 3 of an fp16 run: every rank skips
// both steps; with hysteresis 2 the first overflow keeps the scale and the second halves it; the
// skipped steps leave parameters and Adam moments bit-identical.
TEST_F(ZeroStages, NonFiniteGradientOnOneRankSkipsEveryRank) {
  for (int stage = 0; stage <= 3; ++stage) {
    RunConfig c = base_config(4);
    c.train.precision = DType::kF16;
    c.zero.stage = stage;
    std::vector<double> scales;
    std::vector<std::vector<float>> params, moments;
    TrainOptions options;
    const int victim = world_.size() - 1;
    options.before_optimizer_step = [&](int64_t step, zero::Engine& e) {
      scales.push_back(e.loss_scale());
      params.push_back(e.gather_master_values());
      const Tensor m = e.adam_m(), v = e.adam_v();
      std::vector<float> mv(m.as<float>(), m.as<float>() + m.numel());
      mv.insert(mv.end(), v.as<float>(), v.as<float>() + v.numel());
      moments.push_back(std::move(mv));
      if ((step == 2 || step == 3) && world_.rank() == victim) {
        // An element of a parameter this rank owns (padding is not part of the norm).
        const int partition = e.stage() == 0 ? 0 : world_.rank();
        const zero::OwnedPiece piece = e.layout().owned_pieces(partition).front();
        const int64_t at = e.stage() == 0 ? piece.flat_begin : piece.local_begin;
        static_cast<f16*>(e.step_grads().data)[at] = float_to_f16(INFINITY);
      }
    };
    const RunResult r = run(c, world_, options);
    SCOPED_TRACE("stage " + std::to_string(stage));
    EXPECT_EQ(r.skipped, (std::vector<bool>{false, true, true, false}));
    ASSERT_EQ(scales.size(), 4u);
    EXPECT_EQ(scales[1], scales[0]);      // step 1 was clean
    EXPECT_EQ(scales[2], scales[1]);      // first overflow: hysteresis, scale kept
    EXPECT_EQ(scales[3], scales[2] / 2);  // second overflow: halved
    EXPECT_EQ(params[2], params[1]);      // state before step 3 == before step 2
    EXPECT_EQ(params[3], params[1]);
    EXPECT_EQ(moments[2], moments[1]);
    EXPECT_EQ(moments[3], moments[1]);
    EXPECT_NE(params[1], params[0]);      // while clean steps do change them
  }
}

}  // namespace
}  // namespace zt
