// Trainer checkpoints across ranks (CPU, gptj-tiny): a run interrupted after step 10 and resumed
// with train.resume = "auto" gives the uninterrupted run's losses for steps 11-20 and its final
// parameters exactly, for ZeRO stages 1 and 3, and on GPUs (when there is one per rank) for
// stages 2 and 3 in bf16 (launch/trainer.h, note "trainer checkpoints").
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/trainer.h"
#include "runtime/device.h"
#include "runtime/log.h"
#include "runtime/mpi_comm.h"
#include "tests/support/mpi_shared_dir.h"
#include "tests/support/run_config.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using launch::RunConfig;
using launch::TrainOptions;
using launch::TrainSummary;

using testing::Interrupted;

class ResumeMpi : public ::testing::Test {
 protected:
  void SetUp() override {
    log_configure(LogOptions{LogLevel::kWarn}, false);
    root_ = testing::make_shared_dir(world_, "zt_resume_mpi");  // one folder for all ranks
  }
  void TearDown() override { testing::remove_shared_dir(world_, root_); }

  TrainSummary run(const RunConfig& c, int64_t interrupt_at = 0) {
    TrainOptions o;
    o.write_outputs = false;
    o.local_rank = world_.rank();  // one node: rank r uses GPU r (r % GPUs with comm.backend = "mpi")
    o.local_size = world_.size();
    o.collect_final_params = true;
    testing::interrupt_at(o, interrupt_at);  // on every rank
    return launch::train(c, world_, o);
  }

  // 20 steps uninterrupted against 12 (saved at 5 and 10, stopped in step 12) + a resume.
  void check_resume(int stage, const std::string& device, DType precision,
                    const std::string& backend = "auto", int64_t delayed_update_from = 0) {
    SCOPED_TRACE("stage " + std::to_string(stage) + " on " + std::to_string(world_.size()) +
                 " ranks, " + device + ", comm.backend " + backend +
                 (delayed_update_from > 0 ? ", delayed update" : ""));
    RunConfig c = launch::parse_config("", "test", {});
    c.train.steps = 20;
    c.train.micro_batch_size = 1;
    c.train.seq_len = 16;
    c.train.log_every = 1000;
    c.train.seed = 5;
    c.train.device = device;
    c.train.precision = precision;
    c.comm.backend = backend;
    c.optimizer.warmup_steps = 4;
    c.zero.stage = stage;
    c.zero.bucket_elements = 20000;
    if (delayed_update_from > 0) {
      c.zero.offload_optimizer = "cpu";
      c.zero.delayed_update_from_step = delayed_update_from;
    }
    RunConfig ck = c;
    ck.train.checkpoint_dir = (root_ / (device + "-" + backend + "-stage" + std::to_string(stage) +
                                        "-delay" + std::to_string(delayed_update_from))).string();
    ck.train.save_every = 5;
    ck.train.resume = "auto";
    // A save finishes a delayed update, so with one the uninterrupted run saves on the same steps
    // (into its own folder) to compute the same training.
    RunConfig uninterrupted = c;
    if (delayed_update_from > 0) {
      uninterrupted = ck;
      uninterrupted.train.checkpoint_dir += "-uninterrupted";
    }
    const TrainSummary full = run(uninterrupted);
    ASSERT_EQ(full.steps.size(), 20u);
    EXPECT_THROW(run(ck, 12), Interrupted);  // saved at 5 and 10, stopped during step 12
    world_.barrier();
    const TrainSummary resumed = run(ck);
    EXPECT_EQ(resumed.first_step, 11);
    ASSERT_EQ(resumed.steps.size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(resumed.steps[i].step, int64_t(i) + 11);
      EXPECT_EQ(resumed.steps[i].loss, full.steps[i + 10].loss) << "step " << i + 11;
    }
    EXPECT_EQ(resumed.final_params, full.final_params);
  }

  MpiComm world_{MPI_COMM_WORLD};
  fs::path root_;
};

TEST_F(ResumeMpi, InterruptedAndResumedRunMatchesTheUninterruptedOne) {
  for (const int stage : {1, 3}) check_resume(stage, "cpu", DType::kF32);
}

// With ZeRO-Offload's delayed update (from step 3): the update of step 5 is still running when
// its checkpoint is saved, so the save finishes it first and the step after a save reads
// up-to-date parameters, in the resumed run as in the uninterrupted one (which saves on the same
// steps). The two must match bit for bit.
TEST_F(ResumeMpi, DelayedUpdateRunResumesBitForBit) {
  check_resume(2, "cpu", DType::kF32, "auto", 3);
}

// The same on GPUs (bf16): the CUDA kernels are deterministic (no atomics), so a resumed run is
// bit-exact there too. NCCL with one GPU per rank; stage 3, and stage 2 with the delayed offload
// update, also over comm.backend = "mpi", whose ranks may share GPUs (so those parts run on a
// 1-GPU machine as well).
TEST_F(ResumeMpi, InterruptedAndResumedGpuRunMatchesTheUninterruptedOne) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "needs a GPU";
  if (cuda_device_count() >= world_.size())
    for (const int stage : {2, 3}) check_resume(stage, "cuda", DType::kBF16);
  check_resume(3, "cuda", DType::kBF16, "mpi");
  // The delayed update on GPUs, whose parameters arrive layer by layer during the next forward.
  check_resume(2, "cuda", DType::kBF16, "mpi", 3);
}

}  // namespace
}  // namespace zt
