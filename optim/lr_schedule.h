// Learning-rate schedules: linear warmup, then constant, cosine or linear decay to min_lr.
#pragma once

#include <cstdint>
#include <string_view>

namespace zt::optim {

enum class LrDecay { kConstant, kCosine, kLinear };
std::string_view lr_decay_name(LrDecay decay);  // "constant", "cosine", "linear"
bool parse_lr_decay(std::string_view name, LrDecay* out);

struct LrSchedule {
  LrDecay decay = LrDecay::kCosine;
  double lr = 1e-3;       // peak learning rate, reached at the end of warmup
  double min_lr = 0.0;    // reached at decay_steps and kept after (cosine, linear)
  int64_t warmup_steps = 0;
  // Step at which the decay ends: set it (usually to the run's total steps); left at 0, every
  // step after warmup gets min_lr (cosine, linear).
  int64_t decay_steps = 0;

  // The learning rate of optimizer step `step` (1-based):
  //   step <= warmup_steps: lr * step / warmup_steps
  //   then, with p = (step - warmup_steps) / (decay_steps - warmup_steps) clamped to [0, 1]:
  //   constant: lr; cosine: min_lr + (lr - min_lr) (1 + cos(pi p)) / 2; linear: lr - (lr - min_lr) p
  double at(int64_t step) const;
};

}  // namespace zt::optim
