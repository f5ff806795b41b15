// HostStagedComm's staging (comm.backend = "mpi" on GPUs): pinned blocks reused from collective
// to collective (pageable ones once pinning fails), and a block goes back to the pool only after
// the host collective let go of it.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_device.h"
#include "runtime/cuda/host_staged_comm.h"
#include "runtime/device.h"
#include "runtime/memory.h"
#include "runtime/self_comm.h"
#include "tests/support/user_error.h"

namespace zt {
namespace {

int64_t host_buffer_bytes() {
  return MemoryTracker::of(Device::cpu()).stats().current[size_t(MemCategory::kBuffers)];
}

TEST(StagingPool, ReusesPinnedBlocksAndReplacesTooSmallOnes) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  StagingPool pool;
  Buffer a = pool.take(1000);
  ASSERT_GE(a.bytes(), 1000u);
  EXPECT_TRUE(a.pinned());
  const void* first = a.data();
  pool.give(std::move(a));
  EXPECT_EQ(pool.free_blocks(), 1u);
  // A smaller request takes the same block: no new allocation.
  const int64_t before = host_buffer_bytes();
  Buffer b = pool.take(10);
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(host_buffer_bytes(), before);
  // Two at once: the second is a new block; both come back.
  Buffer c = pool.take(1000);
  EXPECT_NE(c.data(), first);
  pool.give(std::move(b));
  pool.give(std::move(c));
  EXPECT_EQ(pool.free_blocks(), 2u);
  // Larger than every free block: those are released and one block of the new size is pinned.
  Buffer d = pool.take(5000);
  EXPECT_GE(d.bytes(), 5000u);
  EXPECT_EQ(pool.free_blocks(), 0u);
  EXPECT_EQ(host_buffer_bytes(), before - 1000 + int64_t(d.bytes()));
  // Zero bytes still gets a block (MPI may be handed its address).
  Buffer e = pool.take(0);
  EXPECT_FALSE(e.empty());
}

// When pinning fails (here: a request for 1 PiB, which neither cudaMallocHost nor the host
// allocator can meet), the pool warns and stages in pageable memory from then on; the request
// that failed to pin is an out-of-memory error only because pageable memory cannot hold it either.
TEST(StagingPool, StagesInPageableMemoryAfterPinningFails) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  StagingPool pool;
  Buffer pinned = pool.take(100);
  EXPECT_TRUE(pinned.pinned());
  const std::string error = zt::testing::user_error_of([&] { pool.take(size_t(1) << 50); });
  EXPECT_NE(error.find("out of memory on cpu"), std::string::npos) << error;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the failed pinning left a CUDA error behind";
  const int64_t before = host_buffer_bytes();
  Buffer b = pool.take(4096);
  ASSERT_GE(b.bytes(), 4096u);
  EXPECT_FALSE(b.pinned());
  EXPECT_EQ(host_buffer_bytes(), before + int64_t(b.bytes()));
  std::memset(b.data(), 0x5a, b.bytes());  // usable host memory
  // Pageable blocks are reused like pinned ones.
  const void* address = b.data();
  pool.give(std::move(b));
  EXPECT_EQ(pool.take(1000).data(), address);
}

// On one rank every collective returns its input; repeated collectives of the same size reuse
// one staging block, so host memory stays where the first put it.
TEST(HostStagedComm, RepeatedCollectivesReuseOneStagingBlock) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  SelfComm self;
  HostStagedComm comm(self, 0);
  const size_t n = 1 << 20;
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = float(i % 1009) * 0.25f;
  Buffer dev = Buffer::allocate(Device::cuda(0), n * sizeof(float), MemCategory::kBuffers, "data");
  Buffer out = Buffer::allocate(Device::cuda(0), n * sizeof(float), MemCategory::kBuffers, "out");
  cuda_copy(dev.data(), values.data(), n * sizeof(float));
  int64_t after_first = 0;
  for (int round = 0; round < 3; ++round) {
    comm.all_reduce(dev.data(), n, DType::kF32, ReduceOp::kSum)->wait();
    comm.all_gather(dev.data(), out.data(), n / 2, DType::kF32)->wait();  // smaller: same block
    if (round == 0) after_first = host_buffer_bytes();
    EXPECT_EQ(comm.staging_pool().free_blocks(), 1u) << "round " << round;
    EXPECT_EQ(host_buffer_bytes(), after_first) << "round " << round;
  }
  std::vector<float> got(n);
  cuda_copy(got.data(), dev.data(), n * sizeof(float));
  EXPECT_EQ(std::memcmp(got.data(), values.data(), n * sizeof(float)), 0);
  cuda_copy(got.data(), out.data(), n / 2 * sizeof(float));
  EXPECT_EQ(std::memcmp(got.data(), values.data(), n / 2 * sizeof(float)), 0);
}

// A host Comm whose requests record, when destroyed, how many staging blocks were back in the
// pool: the staging must still be theirs then (an MPI request may write into it until it ends).
class RecordingHostComm final : public Comm {
 public:
  struct Request final : CommRequest {
    explicit Request(RecordingHostComm& owner) : owner_(owner) {}
    ~Request() override { owner_.free_blocks_at_request_end.push_back(owner_.pool->free_blocks()); }
    void wait() override {}
    bool test() override { return true; }
    RecordingHostComm& owner_;
  };
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return Device::cpu(); }
  CommHandle all_reduce(void*, size_t, DType, ReduceOp) override {
    return std::make_unique<Request>(*this);
  }
  CommHandle reduce_scatter(const void*, void*, size_t, DType, ReduceOp) override {
    return std::make_unique<Request>(*this);
  }
  CommHandle all_gather(const void*, void*, size_t, DType) override {
    return std::make_unique<Request>(*this);
  }
  CommHandle broadcast(void*, size_t, DType, int) override {
    return std::make_unique<Request>(*this);
  }
  void barrier() override {}

  const StagingPool* pool = nullptr;
  std::vector<size_t> free_blocks_at_request_end;
};

TEST(HostStagedComm, StagingReturnsToThePoolOnlyAfterTheHostRequestEnds) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  RecordingHostComm host;
  HostStagedComm comm(host, 0);
  host.pool = &comm.staging_pool();
  Buffer dev = Buffer::allocate(Device::cuda(0), 256, MemCategory::kBuffers, "data");
  comm.all_reduce(dev.data(), 64, DType::kF32, ReduceOp::kSum)->wait();  // waited
  { CommHandle unwaited = comm.broadcast(dev.data(), 64, DType::kF32, 0); }  // destroyed unwaited
  ASSERT_EQ(host.free_blocks_at_request_end.size(), 2u);
  EXPECT_EQ(host.free_blocks_at_request_end[0], 0u);
  EXPECT_EQ(host.free_blocks_at_request_end[1], 0u);  // the first block was taken again
  EXPECT_EQ(comm.staging_pool().free_blocks(), 1u);
}

}  // namespace
}  // namespace zt
