// NcclComm::take_busy_seconds (issue 9) on one GPU with a 1-rank communicator: a large all-reduce
// shows up as busy time within the wall time it took, take resets the count, a collective that
// has not finished is kept for a later take instead of being waited for, and many small
// collectives (timing events recycled from the pool) add up.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "runtime/comm.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/nccl_comm.h"
#include "runtime/device.h"
#include "runtime/self_comm.h"

namespace zt {
namespace {

using Clock = std::chrono::steady_clock;

// Blocks a stream, on CUDA's callback thread, until the flag behind `released` is set.
void CUDART_CB wait_for_release(void* released) {
  while (!static_cast<const std::atomic<bool>*>(released)->load()) std::this_thread::yield();
}

class NcclBusyTimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    ZT_CUDA_CHECK(cudaSetDevice(0));
    ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ZT_CUDA_CHECK(cudaMalloc(&data_, kCount * sizeof(float)));
    ZT_CUDA_CHECK(cudaMemset(data_, 0, kCount * sizeof(float)));
  }
  void TearDown() override {
    if (data_ != nullptr) cudaFree(data_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  static constexpr size_t kCount = size_t(1) << 26;  // 256 MiB of fp32
  SelfComm self_;
  cudaStream_t stream_ = nullptr;
  float* data_ = nullptr;
};

TEST_F(NcclBusyTimeTest, LargeAllReduceIsCountedAndTakeResets) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/60);
  EXPECT_EQ(nccl.take_busy_seconds(), 0.0);
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < 4; ++i) nccl.all_reduce(data_, kCount, DType::kF32, ReduceOp::kSum)->wait();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const double busy = nccl.take_busy_seconds();
  std::printf("4 all-reduces of %zu floats: busy %.6f s, wall %.6f s\n", kCount, busy, wall);
  EXPECT_GT(busy, 0.0);
  EXPECT_LE(busy, wall);
  EXPECT_EQ(nccl.take_busy_seconds(), 0.0);
}

TEST_F(NcclBusyTimeTest, UnfinishedCollectiveIsKeptForTheNextTake) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/60);
  // The collective waits for the compute stream, blocked until a thread releases it 300 ms
  // later: the take must return at once (a take that waited would return after the release).
  std::atomic<bool> released{false};
  ZT_CUDA_CHECK(cudaLaunchHostFunc(stream_, wait_for_release, &released));
  CommHandle h = nccl.all_reduce(data_, kCount, DType::kF32, ReduceOp::kSum);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    released = true;
  });
  const Clock::time_point start = Clock::now();
  const double early = nccl.take_busy_seconds();
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  releaser.join();
  EXPECT_EQ(early, 0.0);
  EXPECT_LT(took, 0.1) << "take_busy_seconds waited for the collective";
  h->wait();
  // The time between the timing events excludes the blocked compute stream: the comm stream
  // reaches the start event only once the compute stream's work is done.
  const double later = nccl.take_busy_seconds();
  EXPECT_GT(later, 0.0);
  EXPECT_LT(later, 0.3);
  EXPECT_FALSE(nccl.aborted());
}

TEST_F(NcclBusyTimeTest, ManySmallCollectivesAddUp) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/60);
  // Each collective is waited, so its events go back to the pool and are reused by the next.
  double total = 0.0;
  for (int i = 0; i < 1000; ++i) {
    nccl.all_reduce(data_, 1024, DType::kF32, ReduceOp::kSum)->wait();
    if (i % 100 == 99) total += nccl.take_busy_seconds();
  }
  EXPECT_GT(total, 0.0);
  EXPECT_EQ(nccl.take_busy_seconds(), 0.0);
}

}  // namespace
}  // namespace zt
