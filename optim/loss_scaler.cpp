// The dynamic loss scaler's update rule.
#include "optim/loss_scaler.h"

#include <algorithm>

#include "runtime/error.h"

namespace zt::optim {

DynamicLossScaler::DynamicLossScaler(const LossScalerConfig& config)
    : config_(config), scale_(config.initial_scale), hysteresis_left_(config.hysteresis) {
  ZT_CHECK(config.initial_scale >= config.min_scale && config.min_scale > 0,
           "loss scale: initial_scale ", config.initial_scale, " must be >= min_scale ",
           config.min_scale, " > 0");
  ZT_CHECK(config.growth_interval >= 1 && config.hysteresis >= 1, "loss scale: growth_interval ",
           config.growth_interval, " and hysteresis ", config.hysteresis, " must be >= 1");
}

void DynamicLossScaler::update(bool overflow) {
  if (overflow) {
    clean_steps_ = 0;
    if (hysteresis_left_ > 1) {
      --hysteresis_left_;  // tolerated: skip the step, keep the scale
      return;
    }
    if (scale_ <= config_.min_scale)
      throw_user_error("fp16 loss scale collapsed: gradients overflow even at the minimum scale ",
                       config_.min_scale, ". The run is diverging or fp16 cannot hold its "
                       "gradients: lower optimizer.lr, enable clipping (optimizer.grad_clip), "
                       "check the data, or train in bf16 (train.precision = \"bf16\")");
    scale_ = std::max(scale_ * 0.5, config_.min_scale);
    return;
  }
  if (++clean_steps_ >= config_.growth_interval) {
    scale_ *= 2.0;
    clean_steps_ = 0;
    hysteresis_left_ = config_.hysteresis;
  }
}

void DynamicLossScaler::restore(double scale, int64_t hysteresis_left, int64_t clean_steps) {
  ZT_CHECK(scale >= config_.min_scale && hysteresis_left >= 1 &&
               hysteresis_left <= config_.hysteresis && clean_steps >= 0 &&
               clean_steps < config_.growth_interval,
           "loss scale: the state (scale ", scale, ", hysteresis left ", hysteresis_left,
           ", clean steps ", clean_steps, ") cannot be reached with this config");
  scale_ = scale;
  hysteresis_left_ = hysteresis_left;
  clean_steps_ = clean_steps;
}

}  // namespace zt::optim
