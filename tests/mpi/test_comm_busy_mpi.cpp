// Comm::take_busy_seconds (the step's communication time, issue 9) on MpiComm at every world size
// CTest runs: positive after collectives, never more than the wall time they spanned (overlapping
// requests count once), zero right after a take, and StepStats::comm_s of a training run.
//
// Every rank runs every collective in the same order; checks come after the collectives.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "launch/config.h"
#include "launch/trainer.h"
#include "runtime/log.h"
#include "runtime/mpi_comm.h"
#include "runtime/self_comm.h"
#include "tests/support/run_config.h"

namespace zt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TEST(CommBusyTime, AllReduceIsCountedWithinItsWallTimeAndTakeResets) {
  MpiComm comm(MPI_COMM_WORLD);
  EXPECT_EQ(comm.take_busy_seconds(), 0.0);  // nothing issued yet
  std::vector<float> data(size_t(1) << 22, 1.0f);  // 16 MiB
  MPI_Barrier(MPI_COMM_WORLD);                     // not through comm: not counted
  const Clock::time_point start = Clock::now();
  comm.all_reduce(data.data(), data.size(), DType::kF32, ReduceOp::kSum)->wait();
  const double wall = seconds_since(start);
  const double busy = comm.take_busy_seconds();
  EXPECT_GT(busy, 0.0);
  EXPECT_LE(busy, wall);
  EXPECT_EQ(comm.take_busy_seconds(), 0.0);
  EXPECT_EQ(data[0], float(comm.size()));
}

TEST(CommBusyTime, OverlappingRequestsCountOnce) {
  MpiComm comm(MPI_COMM_WORLD);
  std::vector<double> a(1024, 1.0), b(1024, 2.0);
  MPI_Barrier(MPI_COMM_WORLD);
  const Clock::time_point start = Clock::now();
  CommHandle ha = comm.all_reduce(a.data(), a.size(), DType::kF64, ReduceOp::kSum);
  CommHandle hb = comm.all_reduce(b.data(), b.size(), DType::kF64, ReduceOp::kSum);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ha->wait();
  hb->wait();
  const double wall = seconds_since(start);
  const double busy = comm.take_busy_seconds();
  // Both requests were in flight for at least the 50 ms; a sum would give about twice the wall.
  EXPECT_GE(busy, 0.05);
  EXPECT_LE(busy, wall);
  EXPECT_EQ(a[0], 1.0 * comm.size());
  EXPECT_EQ(b[0], 2.0 * comm.size());
}

TEST(CommBusyTime, CollectiveInFlightIsSplitAtTheTake) {
  MpiComm comm(MPI_COMM_WORLD);
  std::vector<float> data(4096, 1.0f);
  MPI_Barrier(MPI_COMM_WORLD);
  const Clock::time_point start = Clock::now();
  CommHandle h = comm.all_reduce(data.data(), data.size(), DType::kF32, ReduceOp::kSum);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const double first = comm.take_busy_seconds();  // the request is still unwaited: counted so far
  h->wait();
  const double second = comm.take_busy_seconds();
  const double wall = seconds_since(start);
  EXPECT_GE(first, 0.03);
  EXPECT_GE(second, 0.0);
  EXPECT_LE(first + second, wall);
  EXPECT_EQ(comm.take_busy_seconds(), 0.0);
}

TEST(CommBusyTime, BarrierAndTestCount) {
  MpiComm comm(MPI_COMM_WORLD);
  comm.barrier();
  EXPECT_GT(comm.take_busy_seconds(), 0.0);
  std::vector<float> data(256, 1.0f);
  CommHandle h = comm.all_reduce(data.data(), data.size(), DType::kF32, ReduceOp::kSum);
  while (!h->test()) std::this_thread::yield();
  const double busy = comm.take_busy_seconds();
  EXPECT_GT(busy, 0.0);
  h.reset();  // complete: the destructor does not wait or count again
  EXPECT_EQ(comm.take_busy_seconds(), 0.0);
}

TEST(CommBusyTime, SelfCommMeasuresNothing) {
  SelfComm self;
  std::vector<float> data(64, 1.0f);
  self.all_reduce(data.data(), data.size(), DType::kF32, ReduceOp::kSum)->wait();
  self.barrier();
  EXPECT_EQ(self.take_busy_seconds(), 0.0);
}

// The trainer's steps carry the engine's communication time: positive with more than one rank
// (gradient reduce-scatters and parameter gathers), 0 with SelfComm.
TEST(CommBusyTime, TrainingStepsReportCommTime) {
  log_configure(LogOptions{LogLevel::kWarn}, false);
  launch::RunConfig c = testing::tiny_run_config("", 3);  // writes nothing (write_outputs)
  c.zero.stage = 2;
  c.zero.bucket_elements = 20000;
  launch::TrainOptions options;
  options.write_outputs = false;
  MpiComm world(MPI_COMM_WORLD);
  const launch::TrainSummary s = launch::train(c, world, options);
  ASSERT_EQ(s.steps.size(), 3u);
  for (const launch::StepMetrics& m : s.steps) {
    EXPECT_TRUE(std::isfinite(m.comm_s)) << "step " << m.step;
    EXPECT_GE(m.comm_s, 0.0) << "step " << m.step;
    if (world.size() > 1) {
      EXPECT_GT(m.comm_s, 0.0) << "step " << m.step;
    }
  }
  SelfComm self;
  const launch::TrainSummary one = launch::train(c, self, options);
  for (const launch::StepMetrics& m : one.steps) EXPECT_EQ(m.comm_s, 0.0) << "step " << m.step;
}

}  // namespace
}  // namespace zt
