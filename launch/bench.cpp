// `zerotrain bench`: per-op timings of the CUDA backend at GPT-J layer shapes (GEMMs in TFLOP/s
// against a bf16 8192^3 GEMM measured in the same run, attention in TFLOP/s, memory-bound ops in
// GB/s), so performance work starts from measured figures.
#include "launch/bench.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "launch/flags.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/rng.h"

#ifdef ZT_WITH_CUDA
#include <cuda_runtime.h>

#include "model/ops_cuda.h"
#include "optim/adamw_cuda.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#endif

namespace zt::launch {

std::string bench_usage_text() {
  return "usage: zerotrain bench [--model gptj-6b|gptj-tiny] [--micro-batch B] [--seq-len T]\n"
         "                       [--precision bf16|fp16] [--iters N] [--tune-gemms FILE]\n"
         "\n"
         "Times the CUDA ops at the model's layer shapes on GPU 0 (N = B x T tokens): every GEMM\n"
         "of a block and of the head, forward and backward, in TFLOP/s and as a share of a bf16\n"
         "8192^3 GEMM measured in the same run; the fused causal attention in TFLOP/s (causal\n"
         "FLOPs: forward 2 B H T^2 Dh, backward 2.5x that) and as a share of the 989 TFLOP/s\n"
         "dense bf16 peak of an H100 SXM / H200; LayerNorm, gelu, cross-entropy and AdamW in GB/s.\n"
         "Defaults: gptj-6b, micro-batch 4 x 2048 tokens, bf16, 20 timed iterations after a\n"
         "warm-up of at least 50 ms of GPU work per op. Operands hold random values: constant\n"
         "ones draw less power, which a power-capped GPU turns into faster GEMMs than training sees.\n"
         "\n"
         "--tune-gemms FILE times up to 8 of cuBLASLt's candidate algorithms for each GEMM of the\n"
         "model's layers and head (at this micro-batch and sequence length) and writes the fastest\n"
         "to FILE; with ZT_GEMM_CHOICES=FILE2, FILE2's problems keep their choice and FILE gets\n"
         "its other lines too (so FILE2 = FILE adds to FILE). A training run with\n"
         "train.gemm_choices = FILE, or any run with ZT_GEMM_CHOICES=FILE in its environment,\n"
         "then uses them on the same GPU kind and cuBLASLt version; the same file gives the same\n"
         "algorithms, so the same bits, in every run. (train.gemm_choices also tunes by itself, at\n"
         "the run's own shapes.) The GEMM rows of the tuning run itself include the tuning.\n";
}

BenchArgs parse_bench_args(const std::vector<std::string>& args) {
  BenchArgs b;
  b.model = model::gptj_preset("gptj-6b");
  // Every argument is a flag with a value: bench has no switches and no positional arguments.
  FlagReader r("bench", args, FlagReader::Values::kNextOnly);
  while (r.next()) {
    const std::string flag = r.flag();
    const std::string value = r.value();
    if (flag == "--model") {
      b.model = model::gptj_preset(value);
    } else if (flag == "--micro-batch") {
      b.micro_batch = parse_int_flag(flag, value, 1);
    } else if (flag == "--seq-len") {
      b.seq_len = parse_int_flag(flag, value, 1);
    } else if (flag == "--iters") {
      b.iters = int(parse_int_flag(flag, value, 1, INT32_MAX));
    } else if (flag == "--tune-gemms") {
      b.tune_gemms = value;
    } else if (flag == "--precision") {
      if (!parse_dtype(value, &b.precision) || (b.precision != DType::kBF16 && b.precision != DType::kF16))
        throw_user_error("--precision ", value, ": the CUDA ops run in bf16 or fp16");
    } else {
      r.unknown_option();
    }
  }
  if (b.seq_len > b.model.n_positions)
    throw_user_error("--seq-len ", b.seq_len, " exceeds the model's n_positions ", b.model.n_positions);
  return b;
}

#ifndef ZT_WITH_CUDA

std::string run_bench(const BenchArgs&) {
  throw_user_error("`zerotrain bench` times the CUDA backend, and this zerotrain was built without "
                   "CUDA (configure with -DZT_CUDA=ON on a machine with the CUDA toolkit)");
}

#else

namespace {

constexpr double kPeakTflops = 989.0;  // dense bf16, H100 SXM and H200 (DESIGN.md section 6)

// Device memory for the benchmark, freed at scope end; filled with small values so no op sees
// NaN or inf. Operands whose values reach the tensor cores get fill_random: a constant fill
// draws less power than training data does, and under the GPU's power cap that showed as up to
// 20% more GEMM throughput than real tensors get (H200, bf16: the 8192^3 reference at 894
// TFLOP/s with every byte 0x3c, 797 with random values; fc_out dx 819 against 681).
class DeviceBuffer {
 public:
  DeviceBuffer(size_t bytes) : bytes_(bytes) {
    ZT_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    ZT_CUDA_CHECK(cudaMemset(ptr_, 0x3c, bytes));  // 0x3c3c: ~1.1 in fp16, ~0.011 in bf16
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

// Fills the first n elements (of dtype dt) of `buffer` with values uniform in [-scale, scale):
// random signs and mantissas, as activations and weights have. Made on the host, 16M at a time.
void fill_random(const DeviceBuffer& buffer, DType dt, int64_t n, float scale, uint64_t stream) {
  constexpr int64_t kChunk = int64_t(1) << 24;
  std::vector<float> values(size_t(std::min(n, kChunk)));
  std::vector<char> converted(values.size() * dtype_size(dt));
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t count = std::min(kChunk, n - begin);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i)
      values[size_t(i)] = float((2.0 * random_uniform(2026, stream, uint64_t(begin + i)) - 1.0) * scale);
    convert_cpu(values.data(), DType::kF32, converted.data(), dt, size_t(count));
    ZT_CUDA_CHECK(cudaMemcpy(static_cast<char*>(buffer.get()) + begin * int64_t(dtype_size(dt)),
                             converted.data(), size_t(count) * dtype_size(dt), cudaMemcpyHostToDevice));
  }
}

// Milliseconds between two events around `calls` calls of `fn` on ctx's stream.
double events_ms(const CudaContext& ctx, int calls, const std::function<void()>& fn) {
  cudaEvent_t start, stop;
  ZT_CUDA_CHECK(cudaEventCreate(&start));
  ZT_CUDA_CHECK(cudaEventCreate(&stop));
  ZT_CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
  for (int i = 0; i < calls; ++i) fn();
  ZT_CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
  ZT_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return double(ms);
}

// Milliseconds per call of `fn` in steady state: `iters` calls between events, after a warm-up
// of at least kWarmupMs of GPU work. With a warm-up of 3 calls the first timed calls still ran
// slower, a fixed ~0.75 ms per window (H200: attention backward 0.95 ms per call at 20
// iterations, 0.933 ms at 50, 0.916 ms at 100 and at 200).
constexpr double kWarmupMs = 50.0;
double time_ms(const CudaContext& ctx, int iters, const std::function<void()>& fn) {
  const double first = events_ms(ctx, 1, fn);  // also the first call's one-time costs
  const int warmup = int(std::min(1000.0, std::ceil(kWarmupMs / std::max(first, 1e-3))));
  for (int i = 0; i < warmup; ++i) fn();
  return events_ms(ctx, iters, fn) / iters;
}

std::string line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string line(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return std::string(buf) + "\n";
}

}  // namespace

std::string run_bench(const BenchArgs& a) {
  if (cuda_device_count() == 0)
    throw_user_error("`zerotrain bench` needs a CUDA device, and none is visible");
  const CudaContext ctx(0);
  cudaDeviceProp prop;
  ZT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const model::GptjConfig& c = a.model;
  const DType dt = a.precision;
  const int64_t n = a.micro_batch * a.seq_len, d = c.d_model, f = c.d_ff, v = c.vocab_size;
  const int64_t h = c.n_head, hd = c.head_dim();
  const size_t e = dtype_size(dt);
  std::string out = line("zerotrain bench on %s (%d SMs): %s, %lld tokens per micro-batch "
                         "(%lld x %lld), d_model %lld, d_ff %lld, vocab %lld, %lld heads of %lld",
                         prop.name, prop.multiProcessorCount, std::string(dtype_name(dt)).c_str(),
                         (long long)n, (long long)a.micro_batch, (long long)a.seq_len, (long long)d,
                         (long long)f, (long long)v, (long long)h, (long long)hd);

  // The reference GEMM: bf16 8192^3, the figure DESIGN.md section 10 quotes.
  double ref_tflops = 0;
  {
    const int64_t s = 8192;
    DeviceBuffer A(size_t(s * s) * 2), B(size_t(s * s) * 2), C(size_t(s * s) * 2);
    fill_random(A, DType::kBF16, s * s, 1.0f, 1);
    fill_random(B, DType::kBF16, s * s, 0.02f, 2);
    const double ms = time_ms(ctx, a.iters, [&] {
      model::cuda::gemm(ctx, false, true, s, s, s, 1.0f, A.get(), s, B.get(), s, 0.0f, C.get(), s,
                        DType::kBF16, DType::kBF16);
    });
    ref_tflops = 2.0 * double(s) * s * s / (ms * 1e-3) / 1e12;
    out += line("\nreference GEMM bf16 8192^3: %.1f TFLOP/s (%.0f%% of the %.0f TFLOP/s dense peak)",
                ref_tflops, 100 * ref_tflops / kPeakTflops, kPeakTflops);
  }

  // Tuning covers the model's GEMMs: the reference above keeps the heuristic's pick.
  if (!a.tune_gemms.empty()) model::cuda::set_gemm_tuning(true);
  const char* choices = std::getenv("ZT_GEMM_CHOICES");
  out += line("\n%-34s %10s %12s %12s%s", "GEMM (M x N x K)", "ms", "TFLOP/s", "of 8192^3",
              !a.tune_gemms.empty() ? "  (tuning)"
              : choices != nullptr && *choices != '\0' ? "  (ZT_GEMM_CHOICES)" : "");
  // A forward with a bias runs as linear_forward does it (the bias in the GEMM's epilogue), so
  // its problem is the one training runs and tunes.
  auto gemm_row = [&](const char* name, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                      bool bias = false) {
    DeviceBuffer A(size_t(M * K) * e), B(size_t(K * N) * e), C(size_t(M * N) * e), bias_values(size_t(N) * e);
    fill_random(A, dt, M * K, 1.0f, 1);  // activations (or output gradients) around 1
    fill_random(B, dt, K * N, 0.02f, 2);  // weights at GPT-J's init scale
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    const double ms = time_ms(ctx, a.iters, [&] {
      if (bias)
        model::cuda::linear_forward(ctx, A.get(), B.get(), bias_values.get(), C.get(), M, K, N, dt);
      else
        model::cuda::gemm(ctx, ta, tb, M, N, K, 1.0f, A.get(), lda, B.get(), ldb, 0.0f, C.get(), N, dt, dt);
    });
    const double tflops = 2.0 * double(M) * N * K / (ms * 1e-3) / 1e12;
    char label[128];
    std::snprintf(label, sizeof(label), "%s %lldx%lldx%lld", name, (long long)M, (long long)N, (long long)K);
    out += line("%-34s %10.3f %12.1f %11.0f%%", label, ms, tflops, 100 * tflops / ref_tflops);
  };
  gemm_row("q/k/v/out fwd", false, true, n, d, d);
  gemm_row("q/k/v/out dx", false, false, n, d, d);
  gemm_row("q/k/v/out dw", true, false, d, d, n);
  gemm_row("fc_in fwd", false, true, n, f, d, true);
  gemm_row("fc_in dx", false, false, n, d, f);
  gemm_row("fc_in dw", true, false, f, d, n);
  gemm_row("fc_out fwd", false, true, n, d, f, true);
  gemm_row("fc_out dx", false, false, n, f, d);
  gemm_row("fc_out dw", true, false, d, f, n);
  gemm_row("lm_head fwd", false, true, n, v, d, true);
  gemm_row("lm_head dx", false, false, n, d, v);
  gemm_row("lm_head dw", true, false, v, d, n);
  if (!a.tune_gemms.empty()) {
    model::cuda::set_gemm_tuning(false);
    const model::GemmChoices tuned = model::cuda::gemm_choices_in_use(0);
    model::write_gemm_choices(a.tune_gemms, tuned);
    int moved = 0;
    for (const auto& [key, index] : tuned.index) moved += index != 0;
    out += line("GEMM choices for %zu problems written to %s (%d differ from the heuristic's "
                "pick); run with ZT_GEMM_CHOICES=%s", tuned.index.size(), a.tune_gemms.c_str(),
                moved, a.tune_gemms.c_str());
  }

  {
    const int64_t b = a.micro_batch, t = a.seq_len;
    DeviceBuffer q(size_t(n * d) * e), k(size_t(n * d) * e), vv(size_t(n * d) * e), o(size_t(n * d) * e),
        dout(size_t(n * d) * e), dq(size_t(n * d) * e), dk(size_t(n * d) * e), dv(size_t(n * d) * e),
        lse(size_t(b * h * t) * 4);
    // The forward, timed first, writes the output and log-sum-exp that the backward reads.
    fill_random(q, dt, n * d, 1.0f, 3);
    fill_random(k, dt, n * d, 1.0f, 4);
    fill_random(vv, dt, n * d, 1.0f, 5);
    fill_random(dout, dt, n * d, 1.0f, 6);
    const double fwd = time_ms(ctx, a.iters, [&] {
      model::cuda::attention_forward(ctx, q.get(), k.get(), vv.get(), o.get(), lse.as<float>(), b, t, h, hd, dt);
    });
    const double bwd = time_ms(ctx, a.iters, [&] {
      model::cuda::attention_backward(ctx, dout.get(), q.get(), k.get(), vv.get(), o.get(), lse.as<float>(),
                                      dq.get(), dk.get(), dv.get(), b, t, h, hd, dt);
    });
    const double flops_fwd = 2.0 * double(b) * h * double(t) * t * hd;  // 2 matmuls, causal half
    const double flops_bwd = 2.5 * flops_fwd;                          // 5 matmuls
    out += line("\n%-34s %10s %12s %12s", "causal attention", "ms", "TFLOP/s", "of peak");
    out += line("%-34s %10.3f %12.1f %11.1f%%", "forward", fwd, flops_fwd / (fwd * 1e-3) / 1e12,
                100 * flops_fwd / (fwd * 1e-3) / 1e12 / kPeakTflops);
    out += line("%-34s %10.3f %12.1f %11.1f%%", "backward", bwd, flops_bwd / (bwd * 1e-3) / 1e12,
                100 * flops_bwd / (bwd * 1e-3) / 1e12 / kPeakTflops);
    const double both = (flops_fwd + flops_bwd) / ((fwd + bwd) * 1e-3) / 1e12;
    out += line("%-34s %10.3f %12.1f %11.1f%%", "forward + backward", fwd + bwd, both, 100 * both / kPeakTflops);
  }

  out += line("\n%-34s %10s %12s", "memory-bound ops", "ms", "GB/s");
  auto bw_row = [&](const char* name, double bytes, const std::function<void()>& fn) {
    const double ms = time_ms(ctx, a.iters, fn);
    out += line("%-34s %10.3f %12.0f", name, ms, bytes / (ms * 1e-3) / 1e9);
  };
  {
    // A reference for the rows below: a device-to-device copy (its read and its write counted).
    const size_t bytes = size_t(1) << 30;
    DeviceBuffer src(bytes), dst(bytes);
    ZT_CUDA_CHECK(cudaMemset(src.get(), 0, bytes));
    bw_row("device copy, 1 GiB (reference)", 2.0 * double(bytes), [&] {
      ZT_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, ctx.stream()));
    });
  }
  {
    DeviceBuffer x(size_t(n * d) * e), y(size_t(n * d) * e), w(size_t(d) * e), bias(size_t(d) * e),
        mean(size_t(n) * 4), rstd(size_t(n) * 4), dx(size_t(n * d) * e), dw(size_t(d) * e), db(size_t(d) * e);
    fill_random(x, dt, n * d, 1.0f, 7);
    fill_random(w, dt, d, 1.0f, 8);
    bw_row("layernorm forward", double(n * d) * e * 2, [&] {
      model::cuda::layernorm_forward(ctx, x.get(), w.get(), bias.get(), y.get(), mean.as<float>(),
                                     rstd.as<float>(), n, d, 1e-5, dt);
    });
    bw_row("layernorm backward", double(n * d) * e * 4, [&] {
      model::cuda::layernorm_backward(ctx, y.get(), x.get(), w.get(), mean.as<float>(), rstd.as<float>(),
                                      dx.get(), dw.get(), db.get(), n, d, dt);
    });
  }
  {
    DeviceBuffer x(size_t(n * f) * e), y(size_t(n * f) * e), dy(size_t(n * f) * e);
    fill_random(x, dt, n * f, 1.0f, 9);
    fill_random(dy, dt, n * f, 1.0f, 10);
    bw_row("gelu forward", double(n * f) * e * 2, [&] { model::cuda::gelu_forward(ctx, x.get(), y.get(), n * f, dt); });
    bw_row("gelu backward", double(n * f) * e * 3,
           [&] { model::cuda::gelu_backward(ctx, x.get(), dy.get(), y.get(), n * f, dt); });
  }
  {
    DeviceBuffer logits(size_t(n * v) * e), targets(size_t(n) * 4), losses(size_t(n) * 4);
    fill_random(logits, dt, n * v, 1.0f, 11);
    ZT_CUDA_CHECK(cudaMemset(targets.get(), 0, size_t(n) * 4));
    // dloss != 0: the training case, reading the logits and writing dlogits over them.
    bw_row("cross-entropy + dlogits", double(n * v) * e * 2, [&] {
      model::cuda::cross_entropy(ctx, logits.get(), targets.as<int32_t>(), losses.as<float>(), n, v,
                                 1.0f / float(n), dt);
    });
  }
  {
    const int64_t p = int64_t(256) << 20;  // 268M parameters: an 8-way shard of GPT-J-6B's optimizer state and more
    DeviceBuffer master(size_t(p) * 4), m(size_t(p) * 4), vv(size_t(p) * 4), g(size_t(p) * e), p16(size_t(p) * e);
    ZT_CUDA_CHECK(cudaMemset(m.get(), 0, size_t(p) * 4));
    ZT_CUDA_CHECK(cudaMemset(vv.get(), 0, size_t(p) * 4));
    fill_random(master, DType::kF32, p, 0.02f, 12);
    fill_random(g, dt, p, 1e-3f, 13);
    optim::AdamWStep hp;
    bw_row("AdamW (fp32 state, 16-bit grad+param)", double(p) * (4 * 6 + e * 2), [&] {
      optim::adamw_step_cuda(ctx, master.as<float>(), m.as<float>(), vv.as<float>(), g.get(), dt, p, hp, p16.get(), dt);
    });
  }
  return out;
}

#endif  // ZT_WITH_CUDA

}  // namespace zt::launch
