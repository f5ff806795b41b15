// adamw_cpu_bench: the CPU AdamW's throughput on each SIMD path and thread count, against a
// STREAM-like copy / triad bandwidth measured in the same run (not a test; prints figures).
//
//   adamw_cpu_bench [--params N] [--reps R] [--grad bf16|fp16|fp32] [--copy bf16|fp16|fp32|none]
//
// N defaults to 256M parameters, halved until the buffers fit in half of the free memory.
// Memory traffic per parameter: fp32 param, m, v read + written (24 bytes), the gradient read
// (2 or 4) and the 16-bit copy written (0, 2 or 4): 28 bytes for bf16 gradients and copies.
// The figure of merit is AdamW GB/s over the measured copy bandwidth (issue 6 asks >= 70%).
#include <omp.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "runtime/dtype.h"

namespace {

using zt::DType;
using zt::optim::CpuSimd;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string cpu_features() {
  std::string out;
#if defined(__x86_64__)
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;  // F16C, AVX512_BF16 straight from cpuid
  const std::pair<const char*, int> features[] = {
      {"avx2", __builtin_cpu_supports("avx2")},
      {"f16c", __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29))},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512dq", __builtin_cpu_supports("avx512dq")},
      {"avx512bf16", __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5))},
  };
  for (const auto& [name, on] : features) {
    if (on) out += std::string(out.empty() ? "" : " ") + name;
  }
#endif
  return out.empty() ? "none" : out;
}

// Page-aligned, uninitialised (first touch happens in the threads that will use the pages).
template <class T>
struct Buffer {
  T* data = nullptr;
  explicit Buffer(size_t n) {
    if (n == 0) return;
    data = static_cast<T*>(std::aligned_alloc(4096, (n * sizeof(T) + 4095) / 4096 * 4096));
    if (data == nullptr) {
      std::fprintf(stderr, "out of memory allocating %zu bytes\n", n * sizeof(T));
      std::exit(1);
    }
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

struct Bandwidth {
  double copy_gbs = 0, triad_gbs = 0, update_gbs = 0;
};

// STREAM-like copy (c = a, 16 bytes per element) and triad (a = b + s c, 24 bytes), all threads,
// static schedule, best of `reps`. STREAM counts the bytes the program names, not the line a
// plain store first reads (copy and triad move 24 and 32 bytes); AdamW writes only lines it has
// just read (except the 16-bit copy), so it can pass "100% of copy". The third figure, update
// (b = b + s a in place, 24 bytes, no hidden read), has AdamW's read-modify-write shape.
Bandwidth stream(size_t n, int reps) {
  Buffer<double> a(n), b(n), c(n);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(n); ++i) {
    a.data[i] = 1.0;
    b.data[i] = 2.0;
    c.data[i] = 0.0;
  }
  double best_copy = 1e30, best_triad = 1e30, best_update = 1e30;
  for (int r = 0; r < reps; ++r) {
    double t = now_s();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < int64_t(n); ++i) c.data[i] = a.data[i];
    best_copy = std::min(best_copy, now_s() - t);
    t = now_s();
    const double s = 3.0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < int64_t(n); ++i) a.data[i] = b.data[i] + s * c.data[i];
    best_triad = std::min(best_triad, now_s() - t);
    t = now_s();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < int64_t(n); ++i) b.data[i] = b.data[i] + 1e-9 * a.data[i];
    best_update = std::min(best_update, now_s() - t);
  }
  // Keep the loops from being discarded.
  volatile double sink = a.data[n / 2] + b.data[n / 4] + c.data[n / 3];
  (void)sink;
  return {16.0 * double(n) / best_copy / 1e9, 24.0 * double(n) / best_triad / 1e9,
          24.0 * double(n) / best_update / 1e9};
}

bool parse_dtype_arg(const char* s, DType* out, bool* none) {
  *none = std::strcmp(s, "none") == 0;
  if (*none) return true;
  return zt::parse_dtype(s, out) && *out != DType::kF64;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 256ll << 20;
  bool n_given = false;
  int reps = 5;
  DType grad_dtype = DType::kBF16, copy_dtype = DType::kBF16;
  bool no_copy = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    bool none = false;
    if (arg == "--params" && value) {
      n = std::atoll(value), n_given = true, ++i;
    } else if (arg == "--reps" && value) {
      reps = std::max(1, std::atoi(value)), ++i;
    } else if (arg == "--grad" && value && parse_dtype_arg(value, &grad_dtype, &none) && !none) {
      ++i;
    } else if (arg == "--copy" && value && parse_dtype_arg(value, &copy_dtype, &no_copy)) {
      ++i;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--params N] [--reps R] [--grad bf16|fp16|fp32] "
                   "[--copy bf16|fp16|fp32|none]\n",
                   argv[0]);
      return 2;
    }
  }
  const size_t copy_bytes = no_copy ? 0 : zt::dtype_size(copy_dtype);
  const size_t bytes_per_param = 24 + zt::dtype_size(grad_dtype) + copy_bytes;
  const size_t resident_per_param = 12 + zt::dtype_size(grad_dtype) + copy_bytes;
  const double free_bytes = double(sysconf(_SC_AVPHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  if (!n_given) {
    while (n > (1 << 20) && double(n) * double(resident_per_param) > 0.5 * free_bytes) n /= 2;
  }
  const int max_threads = omp_get_max_threads();

  std::printf("cpu: %s\n", cpu_model().c_str());
  std::printf("simd features: %s\n", cpu_features().c_str());
  std::printf("adamw paths: best %s; supported:", cpu_simd_name(zt::optim::best_cpu_simd()));
  const CpuSimd paths[] = {CpuSimd::kScalar, CpuSimd::kAvx2, CpuSimd::kAvx512,
                           CpuSimd::kAvx512Bf16};
  for (CpuSimd p : paths) {
    if (zt::optim::cpu_simd_supported(p)) std::printf(" %s", cpu_simd_name(p));
  }
  std::printf("\nthreads: %d (OpenMP max), free memory %.1f GiB\n", max_threads,
              free_bytes / double(1ull << 30));
  {
    std::ifstream load("/proc/loadavg");
    std::string line;
    if (std::getline(load, line)) std::printf("load average (others share the cores?): %s\n", line.c_str());
  }

  // STREAM arrays: 3 x 8 bytes x ns, at least 4x the last-level cache of any current CPU.
  const size_t ns = size_t(std::min<int64_t>(std::max<int64_t>(n / 4, 32ll << 20), 128ll << 20));
  const Bandwidth bw = stream(ns, reps);
  std::printf(
      "stream (%zu doubles per array, %d threads, best of %d): copy %.2f GB/s, triad %.2f GB/s, "
      "update %.2f GB/s\n",
      ns, max_threads, reps, bw.copy_gbs, bw.triad_gbs, bw.update_gbs);

  std::printf("adamw: %lld params, grad %s, copy %s, %zu bytes/param of traffic\n",
              static_cast<long long>(n), std::string(zt::dtype_name(grad_dtype)).c_str(),
              no_copy ? "none" : std::string(zt::dtype_name(copy_dtype)).c_str(),
              bytes_per_param);
  Buffer<float> param{size_t(n)}, m{size_t(n)}, v{size_t(n)};
  Buffer<uint8_t> grad{size_t(n) * zt::dtype_size(grad_dtype)};
  Buffer<uint8_t> copy{size_t(n) * copy_bytes};
  // First touch by tile, with the static schedule adamw_step_cpu uses.
  const int64_t tile = zt::optim::kAdamWCpuTile;
  const int64_t tiles = (n + tile - 1) / tile;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < tiles; ++k) {
    for (int64_t i = k * tile; i < std::min(n, (k + 1) * tile); ++i) {
      const float x = float((i * 2654435761ll) % 2001 - 1000) * 1e-3f;  // [-1, 1]
      param.data[i] = x;
      m.data[i] = 0.01f * x;
      v.data[i] = 1e-4f * x * x;
      const double g = 0.5 * double(x) + 0.25;
      zt::store_from_double(grad.data, grad_dtype, size_t(i), g);
      if (copy_bytes) zt::store_from_double(copy.data, copy_dtype, size_t(i), 0.0);
    }
  }

  std::printf("%-12s %7s %12s %9s %8s %9s %10s\n", "path", "threads", "Mparams/s", "GB/s",
              "ms/step", "of copy", "of update");
  int64_t step = 1;
  for (CpuSimd path : paths) {
    if (!zt::optim::cpu_simd_supported(path)) {
      std::printf("%-12s (not supported by this CPU)\n", cpu_simd_name(path));
      continue;
    }
    std::vector<int> thread_counts = {1};
    if (max_threads > 1) thread_counts.push_back(max_threads);
    for (int threads : thread_counts) {
      omp_set_num_threads(threads);
      zt::optim::AdamWStep hp;
      hp.lr = 1e-4;
      hp.weight_decay = 0.1;
      double best = 1e30;
      for (int r = 0; r <= reps; ++r) {  // r == 0: warm-up
        hp.step = step++;
        const double t = now_s();
        zt::optim::adamw_step_cpu(path, param.data, m.data, v.data, grad.data, grad_dtype, n, hp,
                                  copy_bytes ? copy.data : nullptr, copy_dtype);
        if (r > 0) best = std::min(best, now_s() - t);
      }
      const double gbs = double(bytes_per_param) * double(n) / best / 1e9;
      std::printf("%-12s %7d %12.1f %9.2f %8.2f %8.1f%% %9.1f%%\n", cpu_simd_name(path), threads,
                  double(n) / best / 1e6, gbs, best * 1e3, 100.0 * gbs / bw.copy_gbs,
                  100.0 * gbs / bw.update_gbs);
      std::fflush(stdout);
    }
  }
  omp_set_num_threads(max_threads);
  return 0;
}
