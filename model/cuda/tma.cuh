// Private to the Hopper attention kernels (model/cuda/attention_sm90.cu): PTX wrappers of the
// tensor memory accelerator (TMA, sm_90) and of the shared-memory barriers (mbarrier) that tell
// a waiting thread its tile has landed.
//
// A TMA load copies one box of a tensor described by a CUtensorMap (made on the host with
// cuTensorMapEncodeTiled) into shared memory, asynchronously, issued by a single thread; box
// elements past the tensor's edges arrive as zeros. The copy writes through the async proxy,
// the one wgmma reads through, so no proxy fence is needed between the two. Its completion is
// counted in bytes on an mbarrier: the issuing thread first arrives on the barrier announcing
// the bytes to expect (arrive_expect_tx), and the barrier's phase completes once all arrivals
// and all the bytes are in. Waiters wait for a phase by its parity (phase number % 2).
#pragma once

#include <cstdint>

namespace zt::model::cuda::tma {

// Initialises the barrier at shared address `bar` for `count` arrivals per phase. One thread
// does it, then a __syncthreads() makes it visible to the block.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival.
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// One arrival that also announces `bytes` more of asynchronous copies to wait for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

// One arrival once this thread's earlier cp.async copies have landed (counted in the
// barrier's arrivals: the "noinc" form does not add one to the expected count).
__device__ __forceinline__ void mbarrier_arrive_on_cp_async(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// Starts the copy of the box at coordinates (c0, c1, c2, c3) (innermost first) of the 4-D
// tensor `tensor_map` (the address of a __grid_constant__ kernel parameter) to shared address
// `dst`, completing on barrier `bar`.
__device__ __forceinline__ void load_4d(uint32_t dst, const void* tensor_map, uint32_t bar, int c0,
                                        int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

}  // namespace zt::model::cuda::tma
