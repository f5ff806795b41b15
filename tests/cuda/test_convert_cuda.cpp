// The CUDA dtype conversion against its CPU twin, bit for bit, over every dtype pair.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/cuda/cuda_device.h"
#include "runtime/device.h"
#include "runtime/memory.h"
#include "runtime/rng.h"

namespace zt {
namespace {

TEST(CudaConvert, MatchesCpuBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 1000003;
  // Values across the fp16 and bf16 ranges, plus the edge cases: subnormals, ties, inf, NaN.
  std::vector<float> src(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    src[size_t(i)] = float(std::ldexp(random_normal(5, 0, uint64_t(i)), int(i % 60) - 40));
  const float edges[] = {0.0f, -0.0f, 65504.0f, 65520.0f, 1e30f, INFINITY, -INFINITY, NAN,
                         std::ldexp(1.0f, -25), std::ldexp(3.0f, -26), std::ldexp(1.0f, -140)};
  std::memcpy(src.data(), edges, sizeof(edges));
  const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF64};
  for (DType from : dtypes) {
    // The source in `from`, made on the CPU.
    std::vector<unsigned char> host_src(size_t(n) * dtype_size(from));
    convert_cpu(src.data(), DType::kF32, host_src.data(), from, size_t(n));
    Buffer dev_src = Buffer::allocate(Device::cuda(0), host_src.size(), MemCategory::kBuffers, "src");
    cuda_copy(dev_src.data(), host_src.data(), host_src.size());
    for (DType to : dtypes) {
      std::vector<unsigned char> expect(size_t(n) * dtype_size(to));
      convert_cpu(host_src.data(), from, expect.data(), to, size_t(n));
      Buffer dev_dst = Buffer::allocate(Device::cuda(0), expect.size(), MemCategory::kBuffers, "dst");
      convert_cuda(dev_src.tensor(from, Shape{n}), dev_dst.tensor(to, Shape{n}));
      std::vector<unsigned char> got(expect.size());
      cuda_copy(got.data(), dev_dst.data(), got.size());
      // NaN payloads may legitimately differ between host and device libraries; compare NaN-ness
      // for those and every other element bit for bit.
      for (int64_t i = 0; i < n; ++i) {
        const double e = load_as_double(expect.data(), to, size_t(i));
        const double g = load_as_double(got.data(), to, size_t(i));
        if (std::isnan(e)) {
          ASSERT_TRUE(std::isnan(g)) << dtype_name(from) << "->" << dtype_name(to) << " at " << i;
          continue;
        }
        const size_t w = dtype_size(to);
        ASSERT_EQ(std::memcmp(expect.data() + size_t(i) * w, got.data() + size_t(i) * w, w), 0)
            << dtype_name(from) << "->" << dtype_name(to) << " at " << i << ": " << e << " vs " << g;
      }
    }
  }
}

TEST(CudaMemory, DeviceBuffersAreAccounted) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  MemoryTracker& t = MemoryTracker::of(Device::cuda(0));
  const int64_t base = t.stats().current_total;
  {
    Buffer b = Buffer::allocate(Device::cuda(0), 1 << 20, MemCategory::kParams, "params");
    b.zero();
    EXPECT_EQ(t.stats().current_total - base, 1 << 20);
  }
  EXPECT_EQ(t.stats().current_total, base);
}

}  // namespace
}  // namespace zt

namespace zt {
namespace {

TEST(CudaAccumulate, MatchesCpuBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const size_t n = 100003;
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64}) {
    std::vector<float> a(n), b(n);
    for (size_t i = 0; i < n; ++i) {
      a[i] = float(random_normal(8, 0, i) * std::ldexp(1.0, int(i % 20) - 10));
      b[i] = float(random_normal(8, 1, i) * std::ldexp(1.0, int(i % 13) - 6));
    }
    const size_t w = dtype_size(dt);
    std::vector<unsigned char> src(n * w), dst(n * w);
    convert_cpu(a.data(), DType::kF32, src.data(), dt, n);
    convert_cpu(b.data(), DType::kF32, dst.data(), dt, n);
    Buffer d_src = Buffer::allocate(Device::cuda(0), n * w, MemCategory::kBuffers, "src");
    Buffer d_dst = Buffer::allocate(Device::cuda(0), n * w, MemCategory::kBuffers, "dst");
    cuda_copy(d_src.data(), src.data(), n * w);
    cuda_copy(d_dst.data(), dst.data(), n * w);
    accumulate_cpu(src.data(), dt, dst.data(), dt, n);
    accumulate_cuda(d_src.data(), d_dst.data(), n, dt, nullptr);
    std::vector<unsigned char> got(n * w);
    cuda_copy(got.data(), d_dst.data(), n * w);  // cudaMemcpy waits for the default stream
    EXPECT_EQ(got, dst) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace zt
