// Private to the Hopper attention kernels (model/cuda/attention_sm90.cu): PTX wrappers of the
// warpgroup MMA (wgmma, sm_90a only), its fences, and the shared-memory matrix descriptor for the
// 128-byte swizzled layout those kernels keep their tiles in.
//
// A warpgroup is 4 consecutive warps (128 threads). wgmma.m64nNk16 multiplies a 64 x 16 A by a
// 16 x N B into a 64 x N fp32 accumulator spread over the warpgroup: warp w holds rows 16w..16w+15
// in the same fragment layout as mma.sync.m16n8k16 (attention.cu), one [4] group per 8 columns,
// so d[nt][e] is (row 16w + g + 8 (e / 2), column 8 nt + 2c + e % 2). An A operand in registers
// uses mma.sync's A fragment layout as well.
//
// Shared-memory operands are described by a 64-bit descriptor: start address, leading-dimension
// byte offset (LBO), stride-dimension byte offset (SBO), swizzle mode (PTX ISA, "Matrix
// Descriptor Format"). Our tiles are [Dh / 64 column blocks][rows][64] 16-bit elements: each row
// of a column block is 128 bytes, and in every 8-row x 128-byte atom (1024-byte aligned) the
// 16-byte chunk c of row r is stored at chunk c ^ (r % 8) (the 128-byte swizzle).
//   K-major operand (A, or B given as [N][K]): a k-step of 16 reads 32 bytes of each row, so
//     its start is block (k / 64) + 2 (k % 64) bytes; SBO = 1024 (next 8 rows); LBO unused.
//   MN-major operand (B given as [K][N], e.g. V in P V): a k-step is 16 rows (start + 16 * 128
//     bytes); SBO = 1024 (next 8 rows of K); LBO = the column-block stride (next 64 of N).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace zt::model::cuda::wgmma {

// A descriptor is built in two steps so a k-loop costs one add per step: the low word (start
// address and LBO) of an operand's first k-step, then the full descriptor `byte_offset` bytes
// further (offsets stay inside shared memory, so the 14-bit address field cannot carry).
__device__ __forceinline__ uint32_t sw128_desc_lo(uint32_t smem_addr, uint32_t lbo_bytes) {
  return ((smem_addr & 0x3FFFFu) >> 4) | (((lbo_bytes >> 4) & 0x3FFFu) << 16);
}
__device__ __forceinline__ uint64_t sw128_desc(uint32_t lo, uint32_t byte_offset) {
  constexpr uint32_t kHi = (1024u >> 4) | (1u << 30);  // SBO = 1024 bytes; 128-byte swizzle
  return (uint64_t(kHi) << 32) | uint64_t(lo + (byte_offset >> 4));
}

// x, with the compiler unable to see where it came from: keeps loop-invariant addresses from
// being precomputed for every unrolled step and held in registers the accumulators need.
__device__ __forceinline__ uint32_t opaque(uint32_t x) {
  asm volatile("" : "+r"(x));
  return x;
}

// Orders this thread's earlier register writes (accumulators, A fragments) before the next
// wgmma of the warpgroup.
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving reads or writes of accumulator registers across a wait or
// fence (the wgmma asm statements only tie them to the issue).
template <int kTiles>
__device__ __forceinline__ void fence_registers(float (&d)[kTiles][4]) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// d (+)= A B for one k-step of 16, A and B of type Elem (__nv_bfloat16 or __half). _ss: A and B
// from shared memory; _rs: A from registers. kTransB = 1 for an MN-major B. scale_d = 0 ignores
// d's old value. The asm is written once per operand form, in a macro, with the type and shape
// spliced in. ZT_WGMMA_D(i): the [4] accumulator group of columns 8i..8i+7 as asm outputs;
// ZT_WGMMA_R*: their operand names in the asm text (4 per group, numbered from %0).
#define ZT_WGMMA_D(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define ZT_WGMMA_D0_7                                                                              \
  ZT_WGMMA_D(0), ZT_WGMMA_D(1), ZT_WGMMA_D(2), ZT_WGMMA_D(3), ZT_WGMMA_D(4), ZT_WGMMA_D(5),        \
      ZT_WGMMA_D(6), ZT_WGMMA_D(7)
#define ZT_WGMMA_R0_31                                                                             \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                         \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"

// A and B from shared memory: REGS names the accumulators (the asm outputs after the other
// arguments), DESC_A, DESC_B, SCALE_D and TRANS_B the inputs that follow them.
#define ZT_WGMMA_SS(TYPE, SHAPE, REGS, DESC_A, DESC_B, SCALE_D, TRANS_B, ...)                      \
  asm volatile(                                                                                    \
      "{\n.reg .pred p;\n"                                                                         \
      "setp.ne.b32 p, " SCALE_D ", 0;\n"                                                           \
      "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " {" REGS "}, " DESC_A ", "      \
      DESC_B ", p, 1, 1, 0, " TRANS_B ";\n}\n"                                                     \
      : __VA_ARGS__ : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(kTransB))

#define ZT_WGMMA_M64N64_SS(TYPE)                                                                   \
  ZT_WGMMA_SS(TYPE, "m64n64k16", ZT_WGMMA_R0_31, "%32", "%33", "%34", "%35", ZT_WGMMA_D0_7)
#define ZT_WGMMA_M64N80_SS(TYPE)                                                                   \
  ZT_WGMMA_SS(TYPE, "m64n80k16", ZT_WGMMA_R0_31 ", %32, %33, %34, %35, %36, %37, %38, %39",        \
              "%40", "%41", "%42", "%43", ZT_WGMMA_D0_7, ZT_WGMMA_D(8), ZT_WGMMA_D(9))
// m64nNk16 with A and B from shared memory, N = 8 kTiles: 64, or 80 (FlashAttention-3's key
// tile at head dim 256, in the forward).
template <int kTransB, class Elem, int kTiles>
__device__ __forceinline__ void wgmma_ss(float (&d)[kTiles][4], uint64_t desc_a, uint64_t desc_b,
                                         int scale_d) {
  static_assert(kTiles == 8 || kTiles == 10, "m64n64k16 or m64n80k16");
  constexpr bool kHalf = std::is_same_v<Elem, __half>;
  if constexpr (kTiles == 8 && kHalf)
    ZT_WGMMA_M64N64_SS("f16");
  else if constexpr (kTiles == 8)
    ZT_WGMMA_M64N64_SS("bf16");
  else if constexpr (kHalf)
    ZT_WGMMA_M64N80_SS("f16");
  else
    ZT_WGMMA_M64N80_SS("bf16");
}
#undef ZT_WGMMA_M64N64_SS
#undef ZT_WGMMA_M64N80_SS
#undef ZT_WGMMA_SS

// m64n256k16 with A from registers (P or dS fragments against a [K][256] tile).
#define ZT_WGMMA_R32_127                                                                           \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "               \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "               \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "               \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "               \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "   \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define ZT_WGMMA_M64N256_RS(TYPE)                                                                  \
  asm volatile(                                                                                    \
      "{\n.reg .pred p;\n"                                                                         \
      "setp.ne.b32 p, %133, 0;\n"                                                                  \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " {" ZT_WGMMA_R0_31 ", "        \
      ZT_WGMMA_R32_127 "}, {%128, %129, %130, %131}, %132, p, 1, 1, %134;\n}\n"                    \
      : ZT_WGMMA_D0_7,                                                                             \
        ZT_WGMMA_D(8), ZT_WGMMA_D(9), ZT_WGMMA_D(10), ZT_WGMMA_D(11), ZT_WGMMA_D(12),              \
        ZT_WGMMA_D(13), ZT_WGMMA_D(14), ZT_WGMMA_D(15), ZT_WGMMA_D(16), ZT_WGMMA_D(17),            \
        ZT_WGMMA_D(18), ZT_WGMMA_D(19), ZT_WGMMA_D(20), ZT_WGMMA_D(21), ZT_WGMMA_D(22),            \
        ZT_WGMMA_D(23), ZT_WGMMA_D(24), ZT_WGMMA_D(25), ZT_WGMMA_D(26), ZT_WGMMA_D(27),            \
        ZT_WGMMA_D(28), ZT_WGMMA_D(29), ZT_WGMMA_D(30), ZT_WGMMA_D(31)                             \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(kTransB))

template <int kTransB, class Elem>
__device__ __forceinline__ void wgmma_m64n256k16_rs(float (&d)[32][4],
    const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  if constexpr (std::is_same_v<Elem, __half>)
    ZT_WGMMA_M64N256_RS("f16");
  else
    ZT_WGMMA_M64N256_RS("bf16");
}
#undef ZT_WGMMA_M64N256_RS
#undef ZT_WGMMA_R32_127
#undef ZT_WGMMA_R0_31
#undef ZT_WGMMA_D0_7
#undef ZT_WGMMA_D

}  // namespace zt::model::cuda::wgmma
