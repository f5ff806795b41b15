// Tensors, owned buffers, per-category memory accounting, and the check macros.
#include <gtest/gtest.h>

#include <string>

#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/tensor.h"

namespace zt {
namespace {

TEST(Memory, TracksCurrentAndPeakPerCategory) {
  MemoryTracker& t = MemoryTracker::of(Device::cpu());
  const MemStats before = t.stats();
  t.reset_peak();
  {
    Buffer p = Buffer::allocate(Device::cpu(), 1000, MemCategory::kParams, "test params");
    Buffer g = Buffer::allocate(Device::cpu(), 3000, MemCategory::kGrads, "test grads");
    const MemStats s = t.stats();
    EXPECT_EQ(s.current[int(MemCategory::kParams)] - before.current[int(MemCategory::kParams)], 1000);
    EXPECT_EQ(s.current[int(MemCategory::kGrads)] - before.current[int(MemCategory::kGrads)], 3000);
    EXPECT_EQ(s.current_total - before.current_total, 4000);
    g.release();
    EXPECT_EQ(t.stats().current_total - before.current_total, 1000);
    Buffer a = Buffer::allocate(Device::cpu(), 2000, MemCategory::kActivations, "test acts");
    // Peak of the total saw params + grads = 4000 at once; it never saw 3000 + 2000.
    EXPECT_EQ(t.stats().peak_total - before.current_total, 4000);
    EXPECT_EQ(t.stats().peak[int(MemCategory::kActivations)] -
                  before.current[int(MemCategory::kActivations)], 2000);
  }
  EXPECT_EQ(t.stats().current_total, before.current_total);
}

TEST(Memory, BufferMovesOwnership) {
  MemoryTracker& t = MemoryTracker::of(Device::cpu());
  const int64_t base = t.stats().current_total;
  Buffer a = Buffer::allocate(Device::cpu(), 64, MemCategory::kBuffers, "a");
  Buffer b = std::move(a);
  EXPECT_TRUE(a.empty());
  EXPECT_FALSE(b.empty());
  EXPECT_EQ(t.stats().current_total - base, 64);
  Buffer c = Buffer::allocate(Device::cpu(), 32, MemCategory::kBuffers, "c");
  c = std::move(b);  // frees c's 32 bytes
  EXPECT_EQ(t.stats().current_total - base, 64);
  c.zero();
  EXPECT_EQ(static_cast<unsigned char*>(c.data())[63], 0);
}

// An allocation the device cannot give is the user's to fix (a smaller run, more sharding): a
// UserError that names what was being allocated, what is in use, and what to try.
TEST(Memory, OutOfMemoryIsAUserErrorThatSaysWhatToTry) {
  Buffer kept = Buffer::allocate(Device::cpu(), 4096, MemCategory::kParams, "test params");
  try {
    Buffer::allocate(Device::cpu(), size_t(1) << 60, MemCategory::kActivations, "an exabyte");
    FAIL() << "an allocation of 2^60 bytes succeeded";
  } catch (const UserError& e) {
    const std::string m = e.what();
    for (const char* part : {"out of memory on cpu allocating 1048576.00 TiB for an exabyte (activations)",
                             "in use: params", "micro_batch_size", "zero.stage", "zerotrain estimate"})
      EXPECT_NE(m.find(part), std::string::npos) << part << " missing from: " << m;
    EXPECT_EQ(m.find("memory.cpp"), std::string::npos) << "a user error carries no source location: " << m;
  }
}

TEST(Memory, CudaBufferWithoutCudaIsAClearError) {
  if (built_with_cuda()) GTEST_SKIP() << "built with CUDA";
  try {
    Buffer::allocate(Device::cuda(0), 16, MemCategory::kParams, "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
  }
}

TEST(Tensor, ViewsSlicesAndChecks) {
  Buffer buf = Buffer::allocate(Device::cpu(), 24 * sizeof(float), MemCategory::kBuffers, "t");
  Tensor t = buf.tensor(DType::kF32, Shape{2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.str(), "fp32[2, 3, 4]@cpu");
  Tensor s = t.slice(12, Shape{3, 4});
  EXPECT_EQ(static_cast<float*>(s.data), t.as<float>() + 12);
  EXPECT_EQ(t.reshape(Shape{6, 4}).shape, (Shape{6, 4}));
  EXPECT_THROW(t.slice(20, Shape{2, 4}), Error);
  EXPECT_THROW(t.reshape(Shape{5, 5}), Error);
  EXPECT_THROW(t.as<double>(), Error);
  EXPECT_THROW(buf.tensor(DType::kF64, Shape{24}), Error);  // does not fit
}

TEST(Errors, CheckReportsExpressionLocationAndRank) {
  set_process_rank(3);
  try {
    const int n = 0;
    ZT_CHECK(n > 0, "n must be positive, got ", n);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("n must be positive, got 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_memory.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("`n > 0`"), std::string::npos) << msg;
  }
  set_process_rank(0);
  EXPECT_THROW(throw_user_error("bad key ", 1), UserError);
}

}  // namespace
}  // namespace zt
