// How fast can AdamW's access pattern go on this GPU, and which launch shape gets there? fp32
// master, m and v read and written, a bf16 gradient read and a bf16 parameter copy written: 28
// bytes per parameter, 268M parameters. Prints a device-to-device copy for reference, then
// AdamW's arithmetic (as optim/cuda/adamw.cu computes it) and trivial arithmetic, each with a
// resident grid of 1-8 blocks per SM striding over the arrays, with or without streaming cache
// hints and with two packs per pass, and with one pack per thread (docs/performance.md,
// "Memory-bound kernels against a device copy"). Stand-alone, on a GPU machine:
//   nvcc -O3 -arch=sm_90 -o /tmp/adamw_access scripts/adamw_access_sweep.cu && /tmp/adamw_access
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cstdio>
#include <cstdint>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
struct C { float b1, omb1, b2, omb2, bias2, eps, decay, step, gs; };
__device__ __forceinline__ void upd(float& p, float& m, float& v, float g0, const C& c) {
  const float g = __fmul_rn(g0, c.gs);
  m = __fadd_rn(__fmul_rn(c.b1, m), __fmul_rn(c.omb1, g));
  v = __fadd_rn(__fmul_rn(c.b2, v), __fmul_rn(__fmul_rn(c.omb2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bias2), c.eps);
  p = __fsub_rn(__fmul_rn(p, c.decay), __fmul_rn(c.step, __fdiv_rn(m, denom)));
}
template <bool kMath, bool kCs, int kU>
__global__ void __launch_bounds__(256) k(float* P, float* M, float* V, const uint4* G, uint4* P16, int64_t packs, C c) {
  const int64_t stride = int64_t(gridDim.x) * 256 * kU;
  for (int64_t k0 = int64_t(blockIdx.x) * 256 * kU + threadIdx.x; k0 < packs; k0 += stride) {
    float p[kU][8], m[kU][8], v[kU][8], g[kU][8];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t kk = k0 + u * 256; if (kk >= packs) break;
      const float4* a = reinterpret_cast<const float4*>(P) + 2 * kk;
      const float4* b = reinterpret_cast<const float4*>(M) + 2 * kk;
      const float4* d = reinterpret_cast<const float4*>(V) + 2 * kk;
      float4 x0 = kCs ? __ldcs(a) : a[0], x1 = kCs ? __ldcs(a + 1) : a[1];
      float4 y0 = kCs ? __ldcs(b) : b[0], y1 = kCs ? __ldcs(b + 1) : b[1];
      float4 z0 = kCs ? __ldcs(d) : d[0], z1 = kCs ? __ldcs(d + 1) : d[1];
      uint4 w = kCs ? __ldcs(G + kk) : G[kk];
      float pp[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
      float mm[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
      float vv[8] = {z0.x, z0.y, z0.z, z0.w, z1.x, z1.y, z1.z, z1.w};
      uint32_t ww[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) { p[u][j] = pp[j]; m[u][j] = mm[j]; v[u][j] = vv[j];
        g[u][j] = __uint_as_float(((j & 1) ? (ww[j / 2] >> 16) : (ww[j / 2] & 0xffff)) << 16); }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t kk = k0 + u * 256; if (kk >= packs) break;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (kMath) upd(p[u][j], m[u][j], v[u][j], g[u][j], c);
        else { p[u][j] += g[u][j]; m[u][j] += 1.f; v[u][j] += 2.f; }
      }
      float4* a = reinterpret_cast<float4*>(P) + 2 * kk;
      float4* b = reinterpret_cast<float4*>(M) + 2 * kk;
      float4* d = reinterpret_cast<float4*>(V) + 2 * kk;
      float4 o[6] = {make_float4(p[u][0], p[u][1], p[u][2], p[u][3]), make_float4(p[u][4], p[u][5], p[u][6], p[u][7]),
                     make_float4(m[u][0], m[u][1], m[u][2], m[u][3]), make_float4(m[u][4], m[u][5], m[u][6], m[u][7]),
                     make_float4(v[u][0], v[u][1], v[u][2], v[u][3]), make_float4(v[u][4], v[u][5], v[u][6], v[u][7])};
      uint32_t h[4];
      for (int j = 0; j < 4; ++j) {
        __nv_bfloat16 lo = __float2bfloat16_rn(p[u][2 * j]), hi = __float2bfloat16_rn(p[u][2 * j + 1]);
        h[j] = uint32_t(__bfloat16_as_ushort(lo)) | (uint32_t(__bfloat16_as_ushort(hi)) << 16);
      }
      if (kCs) { __stcs(a, o[0]); __stcs(a + 1, o[1]); __stcs(b, o[2]); __stcs(b + 1, o[3]); __stcs(d, o[4]); __stcs(d + 1, o[5]);
        __stcs(P16 + kk, make_uint4(h[0], h[1], h[2], h[3])); }
      else { a[0] = o[0]; a[1] = o[1]; b[0] = o[2]; b[1] = o[3]; d[0] = o[4]; d[1] = o[5]; P16[kk] = make_uint4(h[0], h[1], h[2], h[3]); }
    }
  }
}
int main() {
  const int64_t n = int64_t(256) << 20, packs = n / 8;
  float *P, *M, *V; uint4 *G, *P16; char* cpy;
  CK(cudaMalloc(&P, n * 4)); CK(cudaMalloc(&M, n * 4)); CK(cudaMalloc(&V, n * 4));
  CK(cudaMalloc(&G, n * 2)); CK(cudaMalloc(&P16, n * 2)); CK(cudaMalloc(&cpy, size_t(2) << 30));
  CK(cudaMemset(P, 0, n * 4)); CK(cudaMemset(M, 0, n * 4)); CK(cudaMemset(V, 0, n * 4)); CK(cudaMemset(G, 0x3c, n * 2));
  int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  C c{0.9f, 0.1f, 0.999f, 0.001f, 0.03f, 1e-8f, 0.99999f, 1e-4f, 1.f};
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  auto timeit = [&](const char* name, double bytes, auto fn) {
    for (int i = 0; i < 20; ++i) fn();  // warm-up ~ >50 ms
    cudaEventRecord(e0); const int it = 30; for (int i = 0; i < it; ++i) fn(); cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1); ms /= it;
    printf("%-52s %8.3f ms %8.0f GB/s\n", name, ms, bytes / (ms * 1e-3) / 1e9);
  };
  const double ab = double(n) * 28;
  timeit("cudaMemcpy D2D 1 GiB (read + write)", 2.0 * (1 << 30), [&] { cudaMemcpyAsync(cpy + (size_t(1) << 30), cpy, size_t(1) << 30, cudaMemcpyDeviceToDevice); });
  for (int per : {1, 2, 4, 8}) {
    int g = sms * per; char nm[96];
    snprintf(nm, 96, "adamw math, cs, x1, grid %d/SM", per); timeit(nm, ab, [&] { k<true, true, 1><<<g, 256>>>(P, M, V, G, P16, packs, c); });
    snprintf(nm, 96, "adamw math, plain, x1, grid %d/SM", per); timeit(nm, ab, [&] { k<true, false, 1><<<g, 256>>>(P, M, V, G, P16, packs, c); });
    snprintf(nm, 96, "adamw math, cs, x2, grid %d/SM", per); timeit(nm, ab, [&] { k<true, true, 2><<<g, 256>>>(P, M, V, G, P16, packs, c); });
    snprintf(nm, 96, "trivial math, cs, x1, grid %d/SM", per); timeit(nm, ab, [&] { k<false, true, 1><<<g, 256>>>(P, M, V, G, P16, packs, c); });
  }
  int gfull = int((packs + 255) / 256);
  timeit("adamw math, cs, x1, one pack per thread (no loop)", ab, [&] { k<true, true, 1><<<gfull, 256>>>(P, M, V, G, P16, packs, c); });
  timeit("trivial math, cs, x1, one pack per thread", ab, [&] { k<false, true, 1><<<gfull, 256>>>(P, M, V, G, P16, packs, c); });
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  return 0;
}
