// DeviceOps on the host: the CPU reference functions of runtime/ and optim/.
#include <cstring>
#include <vector>

#include "optim/grad_clip.h"
#include "runtime/error.h"
#include "zero/device_ops.h"

namespace zt::zero {

namespace {

class CpuDeviceOps final : public DeviceOps {
 public:
  Device device() const override { return Device::cpu(); }
  void zero(void* data, size_t bytes) override { std::memset(data, 0, bytes); }
  void accumulate(const void* src, void* dst, size_t n, DType dtype) override {
    accumulate_cpu(src, dtype, dst, dtype, n);
  }
  void upload(const float* host, void* dst, size_t n, DType dtype) override {
    convert_cpu(host, DType::kF32, dst, dtype, n);
  }
  void download(const void* src, void* host, size_t bytes) override { std::memcpy(host, src, bytes); }
  void copy(const void* src, void* dst, size_t bytes) override { std::memmove(dst, src, bytes); }
  void add_sum_of_squares(const void* data, DType dtype, int64_t n) override {
    sum_ += optim::sum_of_squares_cpu(data, dtype, n);
  }
  double take_sum_of_squares() override {
    const double s = sum_;
    sum_ = 0.0;
    return s;
  }
  void adamw(float* param, float* m, float* v, const void* grad, DType grad_dtype, int64_t n,
             const optim::AdamWStep& hp, void* param16, DType param16_dtype) override {
    optim::adamw_step_cpu(param, m, v, grad, grad_dtype, n, hp, param16, param16_dtype);
  }
  void download_async(const void* src, void* host, size_t bytes) override { std::memcpy(host, src, bytes); }
  void upload_async(const void* host, void* dst, size_t bytes) override { std::memcpy(dst, host, bytes); }
  int64_t mark_copies() override { return markers_++; }
  void wait_copies_on_host(int64_t marker) override {
    ZT_CHECK(marker >= 0 && marker < markers_, "copy marker ", marker, " was never handed out");
  }
  void forget_copy_markers() override { markers_ = 0; }
  void compute_after_copies() override {}
  void copies_after_compute() override {}
  void comm_after_uploads(Comm&) override {}
  void wait(CommRequest& request) override { request.wait(); }
  double all_reduce_scalar(Comm& comm, double value, ReduceOp op) override {
    comm.all_reduce(&value, 1, DType::kF64, op)->wait();
    return value;
  }

 private:
  double sum_ = 0.0;
  int64_t markers_ = 0;  // copies happen at once: a marker only has to exist
};

}  // namespace

std::unique_ptr<DeviceOps> make_cpu_device_ops() { return std::make_unique<CpuDeviceOps>(); }

}  // namespace zt::zero
