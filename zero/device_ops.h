// DeviceOps: what the ZeRO engine does to its flat buffers, on the device they live on (the host
// for the CPU backend, a GPU's stream for the CUDA backend), so one engine serves both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "optim/adamw.h"
#include "runtime/comm.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/memory.h"

#ifdef ZT_WITH_CUDA
#include "runtime/cuda/context.h"
#endif

namespace zt::zero {

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  virtual Device device() const = 0;

  // On a GPU the buffer is stream-ordered on the ops' stream (runtime/memory.h): the engine
  // allocates and frees layer buffers inside a step, and a cudaFree there would synchronise the
  // device, stalling both the host and the communication stream.
  virtual Buffer allocate(size_t bytes, MemCategory category, const char* what) const {
    return Buffer::allocate(device(), bytes, category, what);
  }
  // Host memory this device copies to and from asynchronously: pinned on a GPU (the offloaded
  // optimizer state and its staging), plain host memory on the CPU backend.
  virtual Buffer allocate_host(size_t bytes, MemCategory category, const char* what) const {
    return Buffer::allocate(Device::cpu(), bytes, category, what);
  }
  virtual void zero(void* data, size_t bytes) = 0;
  // dst[i] += src[i], one rounding to dtype.
  virtual void accumulate(const void* src, void* dst, size_t n, DType dtype) = 0;
  // Host fp32 values into device storage of `dtype` (rounded to nearest even).
  virtual void upload(const float* host, void* dst, size_t n, DType dtype) = 0;
  // Device bytes to the host, after the work queued so far.
  virtual void download(const void* src, void* host, size_t bytes) = 0;
  // Bytes between two buffers of this device, in queue order.
  virtual void copy(const void* src, void* dst, size_t bytes) = 0;
  // Adds the sum of squares of data[0..n) to a running total; take_sum_of_squares returns the
  // total (waiting for queued work) and resets it.
  virtual void add_sum_of_squares(const void* data, DType dtype, int64_t n) = 0;
  virtual double take_sum_of_squares() = 0;
  // optim::adamw_step_cpu / adamw_step_cuda on this device's buffers.
  virtual void adamw(float* param, float* m, float* v, const void* grad, DType grad_dtype, int64_t n,
                     const optim::AdamWStep& hp, void* param16, DType param16_dtype) = 0;
  // Offload copies (ZeRO-Offload), queued on copy streams (one per direction) so they overlap
  // compute, each other and the host's CPU Adam. download_async runs after the compute work
  // queued so far and the downloads queued before it; upload_async after the uploads queued
  // before it. The CPU backend copies at once.
  virtual void download_async(const void* src, void* host, size_t bytes) = 0;
  virtual void upload_async(const void* host, void* dst, size_t bytes) = 0;
  // A marker of the copies queued so far, both directions; wait_copies_on_host(marker) blocks the
  // host until they are done. Markers count up from 0 and stay valid until forget_copy_markers().
  virtual int64_t mark_copies() = 0;
  virtual void wait_copies_on_host(int64_t marker) = 0;
  virtual void forget_copy_markers() = 0;
  // Compute work queued after this call runs after every copy queued so far.
  virtual void compute_after_copies() = 0;
  // Copies queued after this call run after the compute work queued so far (download_async does
  // this itself). An upload into a stream-ordered buffer (allocate) needs it: the pool may hand
  // out memory that compute work queued earlier still uses.
  virtual void copies_after_compute() = 0;
  // `comm`'s collectives queued after this call run after every upload queued so far, while the
  // compute stream stays free to run on (stage 3 with offload_params: a layer's all-gather reads
  // its uploaded shard piece, and the prefetch overlaps the current layer's compute). `comm`
  // must be the comm of this device (an NcclComm or HostStagedComm on a GPU).
  virtual void comm_after_uploads(Comm& comm) = 0;
  // Work queued after this call sees the collective's result (the host waits on the CPU; on a
  // GPU the compute stream waits on the device).
  virtual void wait(CommRequest& request) = 0;
  // One double reduced over `comm`'s ranks (staged through this device's memory when the comm
  // moves device buffers).
  virtual double all_reduce_scalar(Comm& comm, double value, ReduceOp op) = 0;
};

std::unique_ptr<DeviceOps> make_cpu_device_ops();
#ifdef ZT_WITH_CUDA
// Work goes to ctx.stream(); `ctx` must outlive the returned object.
std::unique_ptr<DeviceOps> make_cuda_device_ops(const CudaContext& ctx);
#endif

}  // namespace zt::zero
