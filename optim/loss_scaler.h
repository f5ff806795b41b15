// Dynamic loss scaling for fp16 training (DESIGN.md section 5).
//
// The loss (and so every gradient) is multiplied by scale() before backward so small fp16
// gradients do not flush to zero. After each step the caller reports whether any gradient
// overflowed (agreed across ranks): an overflowed step is skipped, and after `hysteresis`
// consecutive-or-not overflows since the last growth the scale halves; after growth_interval
// clean steps in a row it doubles. Overflowing at min_scale is an error: fp16 cannot represent
// these gradients even unscaled.
#pragma once

#include <cstdint>

namespace zt::optim {

struct LossScalerConfig {
  double initial_scale = 65536.0;  // 2^16
  int64_t growth_interval = 1000;  // clean steps before the scale doubles
  int64_t hysteresis = 2;          // overflows tolerated before the scale halves
  double min_scale = 1.0;
};

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(const LossScalerConfig& config);

  double scale() const { return scale_; }
  int64_t hysteresis_left() const { return hysteresis_left_; }
  int64_t clean_steps() const { return clean_steps_; }

  // Records one step's outcome. Throws zt::UserError when an overflow happens at min_scale.
  void update(bool overflow);
  // Puts the scaler back into a saved state (a checkpoint's): the scale, the overflows still
  // tolerated and the clean steps counted. The state must be one this config can reach
  // (scale >= min_scale, 1 <= hysteresis_left <= hysteresis, 0 <= clean_steps < growth_interval).
  void restore(double scale, int64_t hysteresis_left, int64_t clean_steps);

 private:
  LossScalerConfig config_;
  double scale_;
  int64_t hysteresis_left_;
  int64_t clean_steps_ = 0;  // clean steps since the last overflow or growth
};

}  // namespace zt::optim
