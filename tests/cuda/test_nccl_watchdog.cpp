// The NcclComm watchdog (issue 8) on one GPU: a collective held back past comm.timeout_s aborts
// the communicator and throws a message naming it, later calls throw instead of hanging, and
// normal collectives stay correct and fast.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/comm.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/nccl_comm.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/self_comm.h"
#include "zero/device_ops.h"

namespace zt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Holds a stream for the number of milliseconds behind `data`, on CUDA's callback thread: a
// kernel-free stand-in for compute that runs long (or a peer that never shows up). It ends on
// its own, so the process can always exit.
void CUDART_CB hold_stream(void* data) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<const int*>(data)));
}

// A stream, a device buffer and a host Comm of one rank: what a 1-rank NcclComm needs.
class NcclWatchdogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    ZT_CUDA_CHECK(cudaSetDevice(0));
    ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    // cudaFree waits for the device, so a held stream has run out by the time the test ends.
    for (void* p : buffers_) cudaFree(p);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  float* device_copy(const std::vector<float>& host) {
    void* p = nullptr;
    ZT_CUDA_CHECK(cudaMalloc(&p, host.size() * sizeof(float)));
    ZT_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
    buffers_.push_back(p);
    return static_cast<float*>(p);
  }
  std::vector<float> host_copy(const float* p, size_t n) {
    std::vector<float> out(n);
    ZT_CUDA_CHECK(cudaMemcpy(out.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
  }
  void hold(const int& ms) { ZT_CUDA_CHECK(cudaLaunchHostFunc(stream_, hold_stream, const_cast<int*>(&ms))); }

  SelfComm self_;
  cudaStream_t stream_ = nullptr;
  std::vector<void*> buffers_;
};

TEST_F(NcclWatchdogTest, StuckCollectiveAbortsWithinTheTimeoutAndLaterCallsThrow) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/0.5);
  float* d = device_copy(std::vector<float>(1024, 1.0f));
  nccl.all_reduce(d, 1024, DType::kF32, ReduceOp::kSum)->wait();  // a healthy first collective

  // The compute stream is busy for 1.5 s, well past the 0.5 s timeout: the collective (which
  // waits for it) cannot complete in time.
  static const int kHoldMs = 1500;
  hold(kHoldMs);
  const Clock::time_point start = Clock::now();
  CommHandle stuck = nccl.all_reduce(d, 1024, DType::kF32, ReduceOp::kSum);
  std::string message;
  try {
    stuck->wait();
    ADD_FAILURE() << "wait() returned although the collective could not complete in time";
  } catch (const Error& e) {
    message = e.what();
  }
  const double threw_after = seconds_since(start);
  std::printf("watchdog error after %.3f s:\n  %s\n", threw_after, message.c_str());

  EXPECT_NE(message.find("all_reduce #2 (1024 elements of fp32)"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0 of 1"), std::string::npos) << message;
  EXPECT_NE(message.find("comm.timeout_s = 0.5"), std::string::npos) << message;
  EXPECT_NE(message.find("Another rank may have died or be stuck"), std::string::npos) << message;
  EXPECT_TRUE(nccl.aborted());
  // The watchdog noticed at the timeout (the message says how long it had waited) ...
  std::smatch waited;
  ASSERT_TRUE(std::regex_search(message, waited, std::regex("for ([0-9.eE+-]+) s \\(comm")))
      << message;
  const double detected_after = std::stod(waited[1].str());
  EXPECT_GE(detected_after, 0.5);
  EXPECT_LT(detected_after, 1.0);
  // ... and the wait threw soon after. ncclCommAbort frees device memory, which may wait for the
  // device to go idle, i.e. for the held stream (it could not wait for an NCCL kernel: those
  // quit on abort); either way the throw comes before 2 s, not never.
  EXPECT_GE(threw_after, 0.5);
  EXPECT_LT(threw_after, 2.0);

  // Every later use throws the same error at once instead of touching the aborted communicator.
  const auto throws_same = [&](auto&& call, const char* what) {
    const Clock::time_point t = Clock::now();
    try {
      call();
      ADD_FAILURE() << what << " did not throw after the abort";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message) << what;
    }
    EXPECT_LT(seconds_since(t), 0.1) << what << " took long to throw";
  };
  throws_same([&] { stuck->wait(); }, "wait() again");
  throws_same([&] { stuck->test(); }, "test()");
  throws_same([&] { NcclComm::stream_wait(*stuck, stream_); }, "stream_wait()");
  throws_same([&] { nccl.all_reduce(d, 1024, DType::kF32, ReduceOp::kSum); }, "all_reduce()");
  throws_same([&] { nccl.all_gather(d, d, 1024, DType::kF32); }, "all_gather()");
  throws_same([&] { nccl.broadcast(d, 1024, DType::kF32, 0); }, "broadcast()");
  throws_same([&] { nccl.barrier(); }, "barrier()");
  throws_same([&] { nccl.host_sync(stream_); }, "host_sync()");
  stuck.reset();  // dropping a request of an aborted communicator does not wait either
  std::printf("later calls threw the same error; total %.3f s\n", seconds_since(start));
}

// The engine's host reads on a GPU (the sum of squares, a download, a scalar all-reduce) wait
// under the watchdog as well. With the compute stream held past comm.timeout_s, as when it waits
// on a collective that a dead peer never joins, each throws the watchdog's error instead of
// blocking until the stream moves on: a copy into pageable host memory blocks the host until
// everything queued before it is done, so the watched wait has to come first.
TEST_F(NcclWatchdogTest, EngineHostReadsEndWithTheWatchdogsError) {
  CudaContext ctx(0);
  const std::pair<const char*, std::function<void(zero::DeviceOps&, Comm&)>> reads[] = {
      {"take_sum_of_squares", [](zero::DeviceOps& ops, Comm&) { ops.take_sum_of_squares(); }},
      {"download",
       [](zero::DeviceOps& ops, Comm&) {
         Buffer b = ops.allocate(64, MemCategory::kBuffers, "test buffer");
         unsigned char host[64];
         ops.download(b.data(), host, sizeof(host));
       }},
      {"all_reduce_scalar",
       [](zero::DeviceOps& ops, Comm& comm) { ops.all_reduce_scalar(comm, 1.5, ReduceOp::kSum); }},
  };
  for (const auto& [name, read] : reads) {
    auto ops = zero::make_cuda_device_ops(ctx);
    NcclComm nccl(self_, 0, ctx.stream(), /*timeout_s=*/0.5);
    static const int kHoldMs = 1500;
    ZT_CUDA_CHECK(cudaLaunchHostFunc(ctx.stream(), hold_stream, const_cast<int*>(&kHoldMs)));
    std::string message;
    try {
      read(*ops, nccl);
      ADD_FAILURE() << name << " returned although the stream was held past the timeout";
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("comm.timeout_s = 0.5"), std::string::npos) << name << ": " << message;
    std::smatch waited;
    ASSERT_TRUE(std::regex_search(message, waited, std::regex("for ([0-9.eE+-]+) s \\(comm")))
        << name << ": " << message;
    EXPECT_LT(std::stod(waited[1].str()), 1.0) << name;  // noticed at the timeout, not at 1.5 s
    EXPECT_TRUE(nccl.aborted()) << name;
    ZT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));  // the hold is over before the next
  }
}

TEST_F(NcclWatchdogTest, CollectivesWithATimeoutGiveTheRightValues) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/0.5);
  EXPECT_EQ(nccl.timeout_s(), 0.5);
  const size_t n = 4099;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(int(i % 23) - 11) * 0.25f;
  float* d = device_copy(x);
  float* other = device_copy(std::vector<float>(n, -7.0f));
  // Written on the compute stream just before: the collectives must see it (ordering by events).
  ZT_CUDA_CHECK(cudaMemcpyAsync(d, other, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  ZT_CUDA_CHECK(cudaMemcpyAsync(d, device_copy(x), n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));

  nccl.all_reduce(d, n, DType::kF32, ReduceOp::kSum)->wait();
  EXPECT_EQ(host_copy(d, n), x);  // one rank: the sum is the value itself
  nccl.all_reduce(d, n, DType::kF32, ReduceOp::kMax)->wait();
  EXPECT_EQ(host_copy(d, n), x);

  // Out of place (NCCL copies for one rank), then a stream waits on the device for the result.
  float* gathered = device_copy(std::vector<float>(n, 0.0f));
  CommHandle h = nccl.all_gather(d, gathered, n, DType::kF32);
  NcclComm::stream_wait(*h, stream_);
  float* copy = device_copy(std::vector<float>(n, 0.0f));
  ZT_CUDA_CHECK(cudaMemcpyAsync(copy, gathered, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  nccl.host_sync(stream_);
  EXPECT_EQ(host_copy(copy, n), x);
  EXPECT_TRUE(h->test());

  float* scattered = device_copy(std::vector<float>(n, 0.0f));
  nccl.reduce_scatter(d, scattered, n, DType::kF32, ReduceOp::kSum)->wait();
  EXPECT_EQ(host_copy(scattered, n), x);
  nccl.broadcast(d, n, DType::kF32, 0)->wait();
  EXPECT_EQ(host_copy(d, n), x);
  nccl.all_reduce(d, 0, DType::kF32, ReduceOp::kSum)->wait();  // empty: nothing to do
  nccl.barrier();

  // A collective held back for less than the timeout completes normally.
  static const int kHoldMs = 200;
  hold(kHoldMs);
  CommHandle held = nccl.all_reduce(d, n, DType::kF32, ReduceOp::kSum);
  EXPECT_FALSE(held->test());
  held->wait();
  EXPECT_TRUE(held->test());
  EXPECT_EQ(host_copy(d, n), x);
  EXPECT_FALSE(nccl.aborted());
}

// The fast path: a wait that is already over, or ends soon, costs about what
// cudaEventSynchronize costs. Printed for the record; the bounds only catch gross regressions.
TEST_F(NcclWatchdogTest, WaitsThatEndQuicklyStayCheap) {
  NcclComm nccl(self_, 0, stream_, /*timeout_s=*/600.0);
  float* d = device_copy(std::vector<float>(1, 1.0f));
  const int iterations = 2000;
  for (int i = 0; i < 100; ++i) nccl.all_reduce(d, 1, DType::kF32, ReduceOp::kSum)->wait();
  Clock::time_point start = Clock::now();
  for (int i = 0; i < iterations; ++i) nccl.all_reduce(d, 1, DType::kF32, ReduceOp::kSum)->wait();
  const double per_wait_us = seconds_since(start) * 1e6 / iterations;

  // The same stream pattern waited with cudaEventSynchronize, for comparison.
  cudaEvent_t ev = nullptr, ready = nullptr;
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  start = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    ZT_CUDA_CHECK(cudaEventRecord(ready, stream_));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(nccl.comm_stream(), ready, 0));
    ZT_CUDA_CHECK(cudaEventRecord(ev, nccl.comm_stream()));
    ZT_CUDA_CHECK(cudaEventSynchronize(ev));
  }
  const double baseline_us = seconds_since(start) * 1e6 / iterations;

  // A wait that ends 20 ms in: how late after the stream is free does it return?
  static const int kHoldMs = 20;
  const auto late_by = [&](bool watchdog) {
    hold(kHoldMs);
    const Clock::time_point t = Clock::now();
    if (watchdog) {
      nccl.all_reduce(d, 1, DType::kF32, ReduceOp::kSum)->wait();
    } else {
      ZT_CUDA_CHECK(cudaEventRecord(ev, stream_));
      ZT_CUDA_CHECK(cudaEventSynchronize(ev));
    }
    return seconds_since(t) * 1e3 - kHoldMs;
  };
  double late_watchdog = 0, late_sync = 0;
  for (int i = 0; i < 5; ++i) {
    late_watchdog += late_by(true) / 5;
    late_sync += late_by(false) / 5;
  }
  ZT_CUDA_CHECK(cudaEventDestroy(ev));
  ZT_CUDA_CHECK(cudaEventDestroy(ready));
  std::printf("collective + wait: %.2f us (event record + cudaEventSynchronize: %.2f us); "
              "after a 20 ms hold: %.3f ms late (cudaEventSynchronize: %.3f ms)\n",
              per_wait_us, baseline_us, late_watchdog, late_sync);
  EXPECT_LT(per_wait_us, 200.0);
  EXPECT_LT(late_watchdog - late_sync, 1.0);
}

}  // namespace
}  // namespace zt
