// The training engine: owns parameters, gradients and optimizer state in flat buffers, serves
// them to the model as a ParamProvider, and takes optimizer steps.
//
// This is the single-process engine (one rank, nothing partitioned: ZeRO stage 0 at world size
// 1). The ZeRO stages extend this same class with a Comm and a partition policy.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/provider.h"
#include "optim/config.h"
#include "optim/lr_schedule.h"
#include "runtime/memory.h"
#include "zero/flat_layout.h"

namespace zt::zero {

struct EngineOptions {
  // Storage dtype of the parameters and gradients the model sees: fp32, or bf16 with fp32
  // master weights kept by the optimizer.
  DType param_dtype = DType::kF32;
  optim::OptimizerConfig optimizer;
  int64_t total_steps = 1;  // end of the LR decay
  uint64_t seed = 0;        // parameter initialisation
};

struct StepStats {
  double grad_norm = 0.0;  // global L2 norm of the gradients, before clipping
  double clip_coef = 1.0;  // factor applied to the gradients (1 = not clipped)
  double lr = 0.0;         // learning rate used (0 when skipped)
  bool skipped = false;    // non-finite gradients: no parameter, moment or step count changed
};

class Engine final : public model::ParamProvider {
 public:
  Engine(const model::GptjConfig& config, const EngineOptions& options);

  // ParamProvider: everything is resident, so the layer hooks have nothing to fetch or reduce.
  void before_layer(int layer, model::Pass pass) override {}
  void after_layer(int layer, model::Pass pass) override {}
  std::span<const Tensor> layer_params(int layer) override;
  std::span<const Tensor> layer_grads(int layer) override;
  void grad_ready(int layer) override {}

  void zero_grads();
  // One AdamW step over the accumulated gradients: global-norm clipping, decoupled weight decay
  // (not on biases and LayerNorm unless optimizer.decay_bias_and_norm), then the new values are
  // written to the parameters the model reads. Non-finite gradients skip the step.
  StepStats step();
  int64_t steps_taken() const { return steps_taken_; }

  int64_t num_params() const { return layout_.total; }
  const FlatLayout& layout() const { return layout_; }
  const std::vector<model::ParamSpec>& specs() const { return specs_; }
  // The fp32 master values of all parameters, in flat layout order.
  std::vector<float> master_values() const;
  // The gradient accumulators, in flat layout order and their storage dtype.
  Tensor flat_grads() const { return grads_.tensor(options_.param_dtype, Shape{layout_.total}); }

 private:
  float* master() const;
  std::vector<Tensor> views_of(const Buffer& buffer, int layer) const;

  model::GptjConfig config_;
  EngineOptions options_;
  optim::LrSchedule schedule_;
  std::vector<model::ParamSpec> specs_;
  FlatLayout layout_;
  Buffer params_;  // model-facing parameters in param_dtype
  Buffer master_;  // fp32 master (empty when param_dtype is fp32: params_ is the master)
  Buffer grads_;   // gradient accumulators in param_dtype
  Buffer adam_m_;
  Buffer adam_v_;
  std::vector<std::vector<Tensor>> param_views_;  // per layer
  std::vector<std::vector<Tensor>> grad_views_;   // per layer
  int64_t steps_taken_ = 0;
};

}  // namespace zt::zero
