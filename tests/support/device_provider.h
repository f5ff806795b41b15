// A ParamProvider for CUDA tests: every layer's parameters and gradients resident on one device
// in a 16-bit dtype, initialised like HostProvider (same values, rounded once), gradients zeroed,
// and the same log of hook calls.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"
#include "model/provider.h"
#include "runtime/cuda/context.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/dtype.h"
#include "runtime/memory.h"

namespace zt::testing {

class DeviceProvider final : public model::ParamProvider {
 public:
  // Copies are queued on ctx.stream() (the model's stream: a non-blocking stream is not ordered
  // after plain cudaMemcpy) and waited for.
  DeviceProvider(const model::GptjConfig& config, DType dtype, uint64_t seed, const CudaContext& ctx)
      : dtype_(dtype), ctx_(ctx), specs_(model::gptj_param_specs(config)) {
    const int layers = model::num_layers_total(config);
    params_.resize(size_t(layers));
    grads_.resize(size_t(layers));
    const Device device = Device::cuda(ctx.device());
    for (const model::ParamSpec& s : specs_) {
      std::vector<float> init(size_t(s.numel()));
      model::init_param_values(s, config, seed, 0, s.numel(), init.data());
      std::vector<unsigned char> host(size_t(s.numel()) * dtype_size(dtype));
      convert_cpu(init.data(), DType::kF32, host.data(), dtype, size_t(s.numel()));
      param_buffers_.push_back(Buffer::allocate(device, host.size(), MemCategory::kParams, s.name));
      grad_buffers_.push_back(Buffer::allocate(device, host.size(), MemCategory::kGrads, s.name));
      ZT_CUDA_CHECK(cudaMemcpyAsync(param_buffers_.back().data(), host.data(), host.size(),
                                    cudaMemcpyHostToDevice, ctx.stream()));
      ctx.synchronize();  // `host` goes out of scope
      param_host_.push_back(std::move(host));
    }
    for (size_t i = 0; i < specs_.size(); ++i) {
      const model::ParamSpec& s = specs_[i];
      params_[size_t(s.layer)].emplace_back(param_buffers_[i].data(), dtype, s.shape, device);
      grads_[size_t(s.layer)].emplace_back(grad_buffers_[i].data(), dtype, s.shape, device);
    }
    zero_grads();
  }

  void before_layer(int layer, model::Pass pass) override { log(layer, pass, "before"); }
  void after_layer(int layer, model::Pass pass) override { log(layer, pass, "after"); }
  std::span<const Tensor> layer_params(int layer) override { return params_.at(size_t(layer)); }
  std::span<const Tensor> layer_grads(int layer) override { return grads_.at(size_t(layer)); }
  void grad_ready(int layer) override { calls.push_back("ready " + std::to_string(layer)); }

  const std::vector<model::ParamSpec>& specs() const { return specs_; }
  size_t num_params() const { return specs_.size(); }
  DType dtype() const { return dtype_; }
  // Element j of parameter i (forward order) as stored, through fp64.
  double param(size_t i, int64_t j) const {
    return load_as_double(param_host_[i].data(), dtype_, size_t(j));
  }
  void zero_grads() {
    for (const Buffer& g : grad_buffers_)
      ZT_CUDA_CHECK(cudaMemsetAsync(g.data(), 0, g.bytes(), ctx_.stream()));
    ctx_.synchronize();
  }
  // Gradient i (forward order) as stored, through fp64; waits for the queued work.
  std::vector<double> grad(size_t i) const {
    const size_t n = size_t(specs_[i].numel());
    std::vector<unsigned char> host(n * dtype_size(dtype_));
    ZT_CUDA_CHECK(cudaMemcpyAsync(host.data(), grad_buffers_[i].data(), host.size(),
                                  cudaMemcpyDeviceToHost, ctx_.stream()));
    ctx_.synchronize();
    std::vector<double> out(n);
    for (size_t j = 0; j < n; ++j) out[j] = load_as_double(host.data(), dtype_, j);
    return out;
  }
  // The raw bits of every gradient (16-bit dtypes), concatenated in forward order, for bitwise
  // comparisons.
  std::vector<uint16_t> grad_bits() const {
    std::vector<uint16_t> out;
    for (size_t i = 0; i < specs_.size(); ++i) {
      std::vector<uint16_t> host(size_t(specs_[i].numel()));
      ZT_CUDA_CHECK(cudaMemcpyAsync(host.data(), grad_buffers_[i].data(), grad_buffers_[i].bytes(),
                                    cudaMemcpyDeviceToHost, ctx_.stream()));
      ctx_.synchronize();
      out.insert(out.end(), host.begin(), host.end());
    }
    return out;
  }

  std::vector<std::string> calls;

 private:
  void log(int layer, model::Pass pass, const char* what) {
    calls.push_back(std::string(what) + (pass == model::Pass::kForward ? " fwd " : " bwd ") +
                    std::to_string(layer));
  }

  DType dtype_;
  const CudaContext& ctx_;
  std::vector<model::ParamSpec> specs_;
  std::vector<std::vector<unsigned char>> param_host_;  // the uploaded values, as stored
  std::vector<Buffer> param_buffers_;
  std::vector<Buffer> grad_buffers_;
  std::vector<std::vector<Tensor>> params_;
  std::vector<std::vector<Tensor>> grads_;
};

}  // namespace zt::testing
