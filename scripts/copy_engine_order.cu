// Do host-to-device copies on two streams run in the order they were queued? 300 copies of 40 MB
// on stream A, then 32 KB on stream B; prints when B's copy finished (docs/performance.md, the
// delayed update's upload). Stand-alone, on a GPU machine:
//   nvcc -O2 -o /tmp/copy_engine_order scripts/copy_engine_order.cu && /tmp/copy_engine_order
#include <cstdio>
#include <cuda_runtime.h>
int main() {
  const size_t piece = 40u << 20; const int n = 300;
  char *h, *d; cudaMallocHost(&h, piece); cudaMalloc(&d, piece * 8);
  int *hs, *ds; cudaMallocHost(&hs, 32768); cudaMalloc(&ds, 32768);
  cudaStream_t a, b; cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking); cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
  cudaEvent_t ea0, ea1, eb; cudaEventCreate(&ea0); cudaEventCreate(&ea1); cudaEventCreate(&eb);
  for (int rep = 0; rep < 3; ++rep) {
    cudaEventRecord(ea0, a);
    for (int i = 0; i < n; ++i) cudaMemcpyAsync(d + (i % 8) * piece, h, piece, cudaMemcpyHostToDevice, a);
    cudaEventRecord(ea1, a);
    cudaMemcpyAsync(ds, hs, 32768, cudaMemcpyHostToDevice, b);
    cudaEventRecord(eb, b);
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      std::printf("CUDA error: %s\n", cudaGetErrorString(e));
      return 1;
    }
    float all = 0, small = 0; cudaEventElapsedTime(&all, ea0, ea1); cudaEventElapsedTime(&small, ea0, eb);
    std::printf("rep %d: %d x 40 MB on A took %.1f ms (%.1f GB/s); 32 KB on B done %.1f ms after A's start\n",
                rep, n, all, n * piece / all / 1e6, small);
  }
  return 0;
}
