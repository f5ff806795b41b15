// Learning-rate schedules: linear warmup, then constant, cosine or linear decay to min_lr.
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "runtime/error.h"

namespace zt::optim {

namespace {
constexpr LrDecay kAllDecays[] = {LrDecay::kConstant, LrDecay::kCosine, LrDecay::kLinear};
}  // namespace

std::string_view lr_decay_name(LrDecay decay) {
  switch (decay) {
    case LrDecay::kConstant: return "constant";
    case LrDecay::kCosine: return "cosine";
    case LrDecay::kLinear: return "linear";
  }
  return "unknown";
}

bool parse_lr_decay(std::string_view name, LrDecay* out) {
  for (LrDecay d : kAllDecays) {
    if (name == lr_decay_name(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

// Edge cases, chosen to follow the header's two rules ("warmup first"; "min_lr is reached at
// decay_steps and kept after") rather than special meanings:
// - warmup_steps = 0: no warmup, step 1 already uses the decay formula.
// - decay_steps <= warmup_steps: the decay has ended by the time warmup does, so every step after
//   warmup is past decay_steps: lr for constant, min_lr for cosine and linear (p = 1). Warmup is
//   unchanged, so such a schedule jumps from lr to min_lr after warmup: the caller sets
//   decay_steps (usually the run's total steps) for a real decay.
// - step >= decay_steps after warmup: exactly min_lr for cosine and linear (the linear formula at
//   p = 1 could be an ulp away from min_lr).
double LrSchedule::at(int64_t step) const {
  ZT_CHECK(step >= 1, "LrSchedule::at: step is 1-based, got ", step);
  ZT_CHECK(warmup_steps >= 0, "LrSchedule: warmup_steps must be >= 0, got ", warmup_steps);
  // The ratio first, so the last warmup step gives lr exactly (ratio 1).
  if (step <= warmup_steps) return lr * (double(step) / double(warmup_steps));
  if (decay == LrDecay::kConstant) return lr;
  if (step >= decay_steps) return min_lr;
  // Here warmup_steps < step < decay_steps, so the denominator is positive and p is in (0, 1).
  const double p = std::clamp(double(step - warmup_steps) / double(decay_steps - warmup_steps),
                              0.0, 1.0);
  switch (decay) {
    case LrDecay::kConstant: return lr;
    case LrDecay::kCosine:
      return min_lr + (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * p)) / 2.0;
    case LrDecay::kLinear: return lr - (lr - min_lr) * p;
  }
  ZT_FAIL("LrSchedule::at: unknown decay ", int(decay));
}

}  // namespace zt::optim
