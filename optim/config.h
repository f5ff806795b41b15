// The optimizer section of a run's config: AdamW, the LR schedule and gradient clipping.
#pragma once

#include <cstdint>

#include "optim/lr_schedule.h"

namespace zt::optim {

struct OptimizerConfig {
  double lr = 3e-3;            // peak learning rate
  double min_lr = 3e-4;        // end of the decay
  int64_t warmup_steps = 20;   // linear warmup from 0 to lr
  LrDecay decay = LrDecay::kCosine;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_bias_and_norm = false;  // false: biases and LayerNorm parameters get no weight decay
  double grad_clip = 1.0;            // max global gradient norm; 0 disables clipping
};

}  // namespace zt::optim
