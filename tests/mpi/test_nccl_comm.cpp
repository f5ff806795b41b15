// The Comms over device buffers, NcclComm (one rank per GPU) and HostStagedComm (ranks may share
// GPUs): each collective against values known exactly, in place and out of place, and ordering
// after the compute stream and before the work that waits for the result. Skips without GPUs.
#include <gtest/gtest.h>
#include <mpi.h>

#ifdef ZT_WITH_CUDA
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/mpi_comm.h"
#include "tests/support/device_comms.h"

namespace zt {
namespace {

using testing::DeviceCommKind;

class DeviceCommTest : public ::testing::TestWithParam<DeviceCommKind> {
 protected:
  void SetUp() override {
    const std::string skip = testing::device_comm_skip_reason(GetParam(), world_.size());
    if (!skip.empty()) GTEST_SKIP() << skip;
    const int device = testing::device_of_rank(world_.rank());
    ZT_CUDA_CHECK(cudaSetDevice(device));
    ZT_CUDA_CHECK(cudaStreamCreate(&stream_));
    comm_ = testing::make_device_comm(GetParam(), world_, device, stream_);
  }
  void TearDown() override {
    comm_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  template <class T>
  T* device_copy(const std::vector<T>& host) {
    void* p = nullptr;
    ZT_CUDA_CHECK(cudaMalloc(&p, host.size() * sizeof(T) + 1));
    ZT_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    buffers_.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  std::vector<T> host_copy(const T* p, size_t n) {
    std::vector<T> out(n);
    ZT_CUDA_CHECK(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }
  ~DeviceCommTest() override {
    for (void* p : buffers_) cudaFree(p);
  }

  MpiComm world_{MPI_COMM_WORLD};
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Comm> comm_;
  std::vector<void*> buffers_;
};

TEST_P(DeviceCommTest, AllReduceSumAndMaxAreExact) {
  const int n = world_.size(), r = world_.rank();
  std::vector<float> x(1001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 17) - 8) + 0.5f * float(r);  // exact
  float* d = device_copy(x);
  comm_->all_reduce(d, x.size(), DType::kF32, ReduceOp::kSum)->wait();
  const std::vector<float> sum = host_copy(d, x.size());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(sum[i], float(n) * float(int(i % 17) - 8) + 0.5f * float(n * (n - 1) / 2)) << i;
  std::vector<bf16> y(77);
  for (size_t i = 0; i < y.size(); ++i) y[i] = float_to_bf16(float(r * 3 + int(i)));
  bf16* e = device_copy(y);
  comm_->all_reduce(e, y.size(), DType::kBF16, ReduceOp::kMax)->wait();
  const std::vector<bf16> mx = host_copy(e, y.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(bf16_to_float(mx[i]), float((n - 1) * 3 + int(i)));
}

TEST_P(DeviceCommTest, ReduceScatterAllGatherAndBroadcast) {
  const int n = world_.size(), r = world_.rank();
  const size_t block = 37;
  std::vector<float> send(block * size_t(n));
  for (size_t i = 0; i < send.size(); ++i) send[i] = float(i) + float(r);
  float* s = device_copy(send);
  float* out = device_copy(std::vector<float>(block, -1.0f));
  comm_->reduce_scatter(s, out, block, DType::kF32, ReduceOp::kSum)->wait();
  const std::vector<float> got = host_copy(out, block);
  for (size_t i = 0; i < block; ++i)
    EXPECT_EQ(got[i], float(n) * float(size_t(r) * block + i) + float(n * (n - 1) / 2));
  // In-place gather: each rank's block already in place.
  std::vector<float> full(block * size_t(n), -1.0f);
  for (size_t i = 0; i < block; ++i) full[size_t(r) * block + i] = float(r * 1000 + int(i));
  float* f = device_copy(full);
  comm_->all_gather(f + size_t(r) * block, f, block, DType::kF32)->wait();
  const std::vector<float> gathered = host_copy(f, full.size());
  for (int q = 0; q < n; ++q)
    for (size_t i = 0; i < block; ++i) EXPECT_EQ(gathered[size_t(q) * block + i], float(q * 1000 + int(i)));
  std::vector<float> b(13, float(r + 1));
  float* db = device_copy(b);
  comm_->broadcast(db, b.size(), DType::kF32, n - 1)->wait();
  for (float v : host_copy(db, b.size())) EXPECT_EQ(v, float(n));
  comm_->barrier();
}

// A kernel-free check of ordering: the collective sees what was queued on the compute stream
// before it, and a stream told to wait (NCCL: on the device; HostStagedComm: the host waits)
// sees its result.
TEST_P(DeviceCommTest, OrdersAfterComputeAndBeforeWaitingStreams) {
  const int n = world_.size();
  std::vector<float> zeros(4096, 0.0f), ones(4096, 1.0f);
  float* d = device_copy(zeros);
  float* src = device_copy(ones);
  ZT_CUDA_CHECK(cudaMemcpyAsync(d, src, ones.size() * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  CommHandle h = comm_->all_reduce(d, ones.size(), DType::kF32, ReduceOp::kSum);
  float* copy = device_copy(zeros);
  if (GetParam() == DeviceCommKind::kNccl) NcclComm::stream_wait(*h, stream_);
  else h->wait();
  ZT_CUDA_CHECK(cudaMemcpyAsync(copy, d, ones.size() * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (float v : host_copy(copy, ones.size())) ASSERT_EQ(v, float(n));
  EXPECT_TRUE(h->test());
}

INSTANTIATE_TEST_SUITE_P(Comms, DeviceCommTest,
                         ::testing::Values(DeviceCommKind::kNccl, DeviceCommKind::kHostStaged),
                         testing::device_comm_name);

}  // namespace
}  // namespace zt
#endif  // ZT_WITH_CUDA
