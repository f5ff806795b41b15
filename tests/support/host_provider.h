// A ParamProvider for tests: every layer's parameters and gradients resident in host memory in
// one chosen dtype, initialised like the engine, and a log of the hook calls.
#pragma once

#include <string>
#include <vector>

#include "model/params.h"
#include "model/provider.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace zt::testing {

class HostProvider final : public model::ParamProvider {
 public:
  HostProvider(const model::GptjConfig& config, DType dtype, uint64_t seed)
      : dtype_(dtype), specs_(model::gptj_param_specs(config)) {
    const int layers = model::num_layers_total(config);
    params_.resize(size_t(layers));
    grads_.resize(size_t(layers));
    for (const model::ParamSpec& s : specs_) {
      std::vector<float> init(size_t(s.numel()));
      model::init_param_values(s, config, seed, 0, s.numel(), init.data());
      std::vector<unsigned char> p(size_t(s.numel()) * dtype_size(dtype));
      convert_cpu(init.data(), DType::kF32, p.data(), dtype, size_t(s.numel()));
      param_data_.push_back(std::move(p));
      grad_data_.emplace_back(size_t(s.numel()) * dtype_size(dtype), 0);
    }
    for (size_t i = 0; i < specs_.size(); ++i) {
      params_[size_t(specs_[i].layer)].emplace_back(param_data_[i].data(), dtype, specs_[i].shape);
      grads_[size_t(specs_[i].layer)].emplace_back(grad_data_[i].data(), dtype, specs_[i].shape);
    }
  }

  void before_layer(int layer, model::Pass pass) override { log(layer, pass, "before"); }
  void after_layer(int layer, model::Pass pass) override { log(layer, pass, "after"); }
  std::span<const Tensor> layer_params(int layer) override { return params_.at(size_t(layer)); }
  std::span<const Tensor> layer_grads(int layer) override { return grads_.at(size_t(layer)); }
  void grad_ready(int layer) override { calls.push_back("ready " + std::to_string(layer)); }

  const std::vector<model::ParamSpec>& specs() const { return specs_; }
  size_t num_params() const { return specs_.size(); }
  // Element j of parameter i (forward order), through fp64.
  double param(size_t i, int64_t j) const { return load_as_double(param_data_[i].data(), dtype_, size_t(j)); }
  void set_param(size_t i, int64_t j, double v) { store_from_double(param_data_[i].data(), dtype_, size_t(j), v); }
  double grad(size_t i, int64_t j) const { return load_as_double(grad_data_[i].data(), dtype_, size_t(j)); }
  void zero_grads() {
    for (auto& g : grad_data_) std::fill(g.begin(), g.end(), 0);
  }
  // All gradients concatenated in forward order, as double.
  std::vector<double> all_grads() const {
    std::vector<double> out;
    for (size_t i = 0; i < specs_.size(); ++i)
      for (int64_t j = 0; j < specs_[i].numel(); ++j) out.push_back(grad(i, j));
    return out;
  }

  std::vector<std::string> calls;

 private:
  void log(int layer, model::Pass pass, const char* what) {
    calls.push_back(std::string(what) + (pass == model::Pass::kForward ? " fwd " : " bwd ") +
                    std::to_string(layer));
  }

  DType dtype_;
  std::vector<model::ParamSpec> specs_;
  std::vector<std::vector<unsigned char>> param_data_;
  std::vector<std::vector<unsigned char>> grad_data_;
  std::vector<std::vector<Tensor>> params_;
  std::vector<std::vector<Tensor>> grads_;
};

}  // namespace zt::testing
