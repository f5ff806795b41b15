// Fixtures of the checkpoint and weights tests: the engine options they start from, gptj-tiny on
// the CPU trained on one fixed sequence, a scratch folder per test, on one rank
// (tests/zero/test_checkpoint.cpp, test_weights.cpp) or shared by the ranks of MPI_COMM_WORLD
// (tests/mpi/test_checkpoint_mpi.cpp, test_weights_mpi.cpp), and what they look at on disk.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "model/gptj.h"
#include "runtime/log.h"
#include "runtime/mpi_comm.h"
#include "tests/support/mpi_shared_dir.h"
#include "tests/support/temp_dir.h"
#include "runtime/self_comm.h"
#include "runtime/tensor.h"
#include "zero/engine.h"

namespace zt::testing {

// What every checkpoint test's engine has; each file adds what it exercises (LR warmup, clipping,
// the fp16 loss scaler).
inline zero::EngineOptions checkpoint_engine_options(DType dtype, int stage, uint64_t seed) {
  zero::EngineOptions o;
  o.param_dtype = dtype;
  o.stage = stage;
  // Several buckets per layer of gptj-tiny: parameters split into pieces (with N = 3 ranks,
  // uneven-looking ones).
  o.bucket_elements = 20000;
  o.total_steps = 10;
  o.seed = seed;
  o.optimizer.lr = 1e-2;
  return o;
}

// Whether every element of an fp32 tensor is 0 (Adam moments after loading weights).
inline bool all_zero(const Tensor& t) {
  const float* p = t.as<float>();
  return std::all_of(p, p + t.numel(), [](float x) { return x == 0.0f; });
}

// The names of what `dir` holds, sorted.
inline std::vector<std::string> sorted_names(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// gptj-tiny's CPU model and one fixed sequence of 32 tokens (one sequence keeps the tests fast),
// another per rank as data parallelism sees it; train() runs whole optimizer steps on it.
class TinyTraining {
 public:
  explicit TinyTraining(const model::GptjConfig& config, int rank = 0)
      : in_(kTokens), tg_(kTokens), model_(model::make_cpu_gptj(config, {})) {
    for (int i = 0; i < kTokens; ++i) {
      in_[size_t(i)] = (i * 7 + 11 * rank) % 50;
      tg_[size_t(i)] = (i * 5 + 3 + 13 * rank) % 50;
    }
  }

  // `steps` optimizer steps of one micro-batch each; the mean loss of each.
  std::vector<double> train(zero::Engine& e, int steps) {
    const model::Batch batch{in_.data(), tg_.data(), 1, kTokens};
    std::vector<double> losses;
    for (int s = 0; s < steps; ++s) {
      e.zero_grads();
      e.set_last_micro_step(true);
      losses.push_back(model_->forward_backward(batch, e, e.micro_grad_scale(1)).mean());
      e.step();
    }
    return losses;
  }

 private:
  static constexpr int kTokens = 32;
  std::vector<int32_t> in_, tg_;
  std::unique_ptr<model::GptjModel> model_;
};

// One rank (SelfComm) and the test's own folder, <gtest temp dir>/zt_<suite>_<test>_<pid>: empty
// at the start, removed at the end.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = std::filesystem::path(::testing::TempDir()) /
            ("zt_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string dir(const std::string& name) const { return (root_ / name).string(); }
  std::vector<double> train(zero::Engine& e, int steps) { return training_.train(e, steps); }

  std::filesystem::path root_;
  SelfComm comm_;
  model::GptjConfig config_;  // gptj-tiny
  TinyTraining training_{config_};
};

// Every rank of MPI_COMM_WORLD, each training on its own sequence, and one folder for all of them
// (the checkpoint is a shared folder): <gtest temp dir>/zt_<suite>_<pid of rank 0>, made empty by
// rank 0 before each test and removed after it. Logging is set to warnings only.
class MpiCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_configure(LogOptions{LogLevel::kWarn}, false);
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = make_shared_dir(world_, "zt_" + std::string(info->test_suite_name()));
  }
  void TearDown() override { remove_shared_dir(world_, root_); }
  std::vector<double> train(zero::Engine& e, int steps) { return training_.train(e, steps); }

  MpiComm world_{MPI_COMM_WORLD};
  model::GptjConfig config_;  // gptj-tiny
  std::filesystem::path root_;
  TinyTraining training_{config_, world_.rank()};
};

}  // namespace zt::testing
