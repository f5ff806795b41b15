// Engine checkpoints on N ranks (run under mpirun with N = 1..4): a stage-2 save reloads into
// stage-3 and stage-0 engines on the same N and into a 1-rank engine with the same master values,
// and training on after a reload at the same N and stage gives the uninterrupted run's losses.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/self_comm.h"
#include "tests/support/checkpoint_fixture.h"
#include "zero/checkpoint.h"
#include "zero/engine.h"

namespace zt::zero {
namespace {

namespace fs = std::filesystem;

EngineOptions options(int stage, uint64_t seed) {
  EngineOptions o = testing::checkpoint_engine_options(DType::kBF16, stage, seed);
  o.optimizer.warmup_steps = 2;
  o.optimizer.grad_clip = 1.0;
  return o;
}

class CheckpointMpi : public testing::MpiCheckpointTest {};

TEST_F(CheckpointMpi, Stage2ReloadsIntoStage3Stage0AndOneRank) {
  const std::string dir = (root_ / "c").string();
  Engine a(config_, options(2, 5), world_);
  train(a, 2);
  CheckpointMeta meta;
  meta.step = 2;
  meta.extra.emplace("sampler", "position=7");
  save_checkpoint(a, world_, dir, meta);
  const std::vector<float> master = a.gather_master_values();
  const std::vector<double> next = train(a, 2);

  for (int stage : {3, 0}) {
    Engine b(config_, options(stage, 99), world_);
    ASSERT_NE(b.gather_master_values(), master);
    const CheckpointMeta got = load_checkpoint(b, world_, dir);
    EXPECT_EQ(got.step, 2);
    EXPECT_EQ(got.extra, meta.extra);
    EXPECT_EQ(b.gather_master_values(), master) << "stage " << stage;
    EXPECT_EQ(b.steps_taken(), 2);
  }
  // The same N and stage: training continues exactly as the uninterrupted run did.
  Engine c(config_, options(2, 99), world_);
  load_checkpoint(c, world_, dir);
  EXPECT_EQ(train(c, 2), next);
  EXPECT_EQ(c.gather_master_values(), a.gather_master_values());

  // N ranks -> one rank at stage 0 (every saved file read by one engine).
  if (world_.rank() == 0) {
    SelfComm self;
    Engine d(config_, options(0, 99), self);
    load_checkpoint(d, self, dir);
    EXPECT_EQ(d.gather_master_values(), master);
  }
}

// Stage 0 saves once (rank 0's file holds everything, the others are empty) and reloads into a
// sharded stage 1; stage 1 reloads into stage 0.
TEST_F(CheckpointMpi, Stage0AndStage1ReloadIntoEachOther) {
  Engine a(config_, options(0, 5), world_);
  train(a, 1);
  save_checkpoint(a, world_, (root_ / "s0").string(), {});
  const std::vector<float> master = a.gather_master_values();
  Engine b(config_, options(1, 99), world_);
  load_checkpoint(b, world_, (root_ / "s0").string());
  EXPECT_EQ(b.gather_master_values(), master);
  save_checkpoint(b, world_, (root_ / "s1").string(), {});
  Engine c(config_, options(0, 98), world_);
  load_checkpoint(c, world_, (root_ / "s1").string());
  EXPECT_EQ(c.gather_master_values(), master);
}

// A corrupt file is found by the rank that verifies it; every rank refuses the load, none hangs.
TEST_F(CheckpointMpi, CorruptFileIsRefusedOnEveryRank) {
  const std::string dir = (root_ / "c").string();
  Engine a(config_, options(1, 5), world_);
  save_checkpoint(a, world_, dir, {});
  const int victim = world_.size() - 1;
  if (world_.rank() == 0) {
    char name[32];
    std::snprintf(name, sizeof(name), "rank-%05d.h5", victim);
    const fs::path file = fs::path(dir) / name;
    fs::resize_file(file, fs::file_size(file) - 1);
  }
  world_.barrier();
  Engine b(config_, options(3, 5), world_);
  EXPECT_THROW(load_checkpoint(b, world_, dir), UserError);
}

}  // namespace
}  // namespace zt::zero
