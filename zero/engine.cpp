// The single-process engine: flat buffers, initialisation, AdamW step with clipping.
#include "zero/engine.h"

#include <cmath>

#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace zt::zero {

Engine::Engine(const model::GptjConfig& config, const EngineOptions& options)
    : config_(config), options_(options) {
  ZT_CHECK(options.param_dtype == DType::kF32 || options.param_dtype == DType::kBF16,
           "the engine keeps parameters in fp32 or bf16, not ", dtype_name(options.param_dtype));
  const optim::OptimizerConfig& o = options.optimizer;
  schedule_ = optim::LrSchedule{o.decay, o.lr, o.min_lr, o.warmup_steps, options.total_steps};
  specs_ = model::gptj_param_specs(config_);
  const int layers = model::num_layers_total(config_);
  layout_ = make_flat_layout(specs_, layers);

  const size_t n = size_t(layout_.total);
  const DType dt = options.param_dtype;
  params_ = Buffer::allocate(Device::cpu(), n * dtype_size(dt), MemCategory::kParams, "parameters");
  grads_ = Buffer::allocate(Device::cpu(), n * dtype_size(dt), MemCategory::kGrads, "gradients");
  if (dt != DType::kF32)
    master_ = Buffer::allocate(Device::cpu(), n * sizeof(float), MemCategory::kOptimizer,
                               "fp32 master parameters");
  adam_m_ = Buffer::allocate(Device::cpu(), n * sizeof(float), MemCategory::kOptimizer, "Adam m");
  adam_v_ = Buffer::allocate(Device::cpu(), n * sizeof(float), MemCategory::kOptimizer, "Adam v");
  adam_m_.zero();
  adam_v_.zero();
  grads_.zero();

  float* w = master();
  for (const FlatParam& p : layout_.params)
    model::init_param_values(specs_[size_t(p.spec_index)], config_, options.seed, 0, p.numel,
                             w + p.offset);
  if (dt != DType::kF32) convert_cpu(w, DType::kF32, params_.data(), dt, n);

  for (int layer = 0; layer < layers; ++layer) {
    param_views_.push_back(views_of(params_, layer));
    grad_views_.push_back(views_of(grads_, layer));
  }
}

float* Engine::master() const {
  return static_cast<float*>(master_.empty() ? params_.data() : master_.data());
}

std::vector<Tensor> Engine::views_of(const Buffer& buffer, int layer) const {
  // Views in params.h order: specs_ is in forward order, so sort this layer's params by spec.
  std::vector<Tensor> views;
  const int first = layout_.first_param_of_layer[size_t(layer)];
  for (int i = first; i < int(layout_.params.size()) && layout_.params[size_t(i)].layer == layer; ++i) {
    const FlatParam& p = layout_.params[size_t(i)];
    const model::ParamSpec& s = specs_[size_t(p.spec_index)];
    ZT_CHECK(s.index_in_layer == i - first, "flat layout out of params.h order at ", s.name);
    views.push_back(buffer.tensor(options_.param_dtype, Shape{layout_.total}).slice(p.offset, s.shape));
  }
  return views;
}

std::span<const Tensor> Engine::layer_params(int layer) {
  return param_views_.at(size_t(layer));
}

std::span<const Tensor> Engine::layer_grads(int layer) { return grad_views_.at(size_t(layer)); }

void Engine::zero_grads() { grads_.zero(); }

StepStats Engine::step() {
  StepStats stats;
  const DType dt = options_.param_dtype;
  const double sum_sq = optim::sum_of_squares_cpu(grads_.data(), dt, layout_.total);
  stats.grad_norm = std::sqrt(sum_sq);
  if (!std::isfinite(stats.grad_norm)) {
    stats.skipped = true;
    log_warn("step ", steps_taken_ + 1, " skipped: the gradient norm is ", stats.grad_norm,
             "; parameters and optimizer state are unchanged");
    return stats;
  }
  const optim::OptimizerConfig& o = options_.optimizer;
  stats.clip_coef = optim::clip_coefficient(stats.grad_norm, o.grad_clip);
  ++steps_taken_;
  stats.lr = schedule_.at(steps_taken_);

  optim::AdamWStep hp;
  hp.lr = stats.lr;
  hp.beta1 = o.beta1;
  hp.beta2 = o.beta2;
  hp.eps = o.eps;
  hp.step = steps_taken_;
  hp.grad_scale = stats.clip_coef;
  float* w = master();
  float* m = static_cast<float*>(adam_m_.data());
  float* v = static_cast<float*>(adam_v_.data());
  const size_t elem = dtype_size(dt);
  for (const FlatParam& p : layout_.params) {
    const model::ParamSpec& s = specs_[size_t(p.spec_index)];
    hp.weight_decay = (s.is_bias_or_norm() && !o.decay_bias_and_norm) ? 0.0 : o.weight_decay;
    const void* g = static_cast<const char*>(grads_.data()) + size_t(p.offset) * elem;
    void* p16 = dt == DType::kF32 ? nullptr : static_cast<char*>(params_.data()) + size_t(p.offset) * elem;
    optim::adamw_step_cpu(w + p.offset, m + p.offset, v + p.offset, g, dt, p.numel, hp, p16, dt);
  }
  return stats;
}

std::vector<float> Engine::master_values() const {
  const float* w = master();
  return std::vector<float>(w, w + layout_.total);
}

}  // namespace zt::zero
