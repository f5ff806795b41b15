// Tests of LrSchedule::at (warmup, constant / cosine / linear decay, edge cases) and decay names.
#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "runtime/error.h"

namespace zt::optim {
namespace {

LrSchedule schedule(LrDecay decay, int64_t warmup, int64_t decay_steps) {
  LrSchedule s;
  s.decay = decay;
  s.lr = 1e-3;
  s.min_lr = 1e-4;
  s.warmup_steps = warmup;
  s.decay_steps = decay_steps;
  return s;
}

TEST(LrSchedule, LinearWarmup) {
  for (LrDecay decay : {LrDecay::kConstant, LrDecay::kCosine, LrDecay::kLinear}) {
    const LrSchedule s = schedule(decay, 10, 110);
    EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
    EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
    EXPECT_DOUBLE_EQ(s.at(9), 9e-4);
    EXPECT_EQ(s.at(10), 1e-3);  // the peak exactly, at the last warmup step
  }
}

TEST(LrSchedule, ConstantAfterWarmup) {
  const LrSchedule s = schedule(LrDecay::kConstant, 10, 110);
  for (int64_t step : {11, 60, 109, 110, 111, 100000}) EXPECT_EQ(s.at(step), 1e-3) << step;
}

TEST(LrSchedule, CosineDecay) {
  const LrSchedule s = schedule(LrDecay::kCosine, 10, 110);  // 100 decay steps
  // Midpoint: cos(pi / 2) = 0, so the lr is halfway between lr and min_lr.
  EXPECT_DOUBLE_EQ(s.at(60), (1e-3 + 1e-4) / 2.0);
  // A quarter of the way: (1 + cos(pi / 4)) / 2 = (1 + sqrt(2) / 2) / 2 of the range above min_lr.
  EXPECT_DOUBLE_EQ(s.at(35), 1e-4 + 9e-4 * (1.0 + std::sqrt(2.0) / 2.0) / 2.0);
  EXPECT_DOUBLE_EQ(s.at(85), 1e-4 + 9e-4 * (1.0 - std::sqrt(2.0) / 2.0) / 2.0);
  // Strictly decreasing over the decay.
  for (int64_t step = 11; step < 110; ++step) EXPECT_GT(s.at(step), s.at(step + 1)) << step;
  EXPECT_LT(s.at(11), 1e-3);
}

TEST(LrSchedule, LinearDecay) {
  LrSchedule s = schedule(LrDecay::kLinear, 0, 100);
  s.lr = 1.0;
  s.min_lr = 0.1;
  EXPECT_DOUBLE_EQ(s.at(1), 1.0 - 0.9 * 0.01);
  EXPECT_DOUBLE_EQ(s.at(25), 0.775);
  EXPECT_DOUBLE_EQ(s.at(50), 0.55);
  EXPECT_DOUBLE_EQ(s.at(75), 0.325);
}

TEST(LrSchedule, EndsAtMinLrAndStaysThere) {
  for (LrDecay decay : {LrDecay::kCosine, LrDecay::kLinear}) {
    const LrSchedule s = schedule(decay, 10, 110);
    EXPECT_EQ(s.at(110), 1e-4);  // exactly min_lr at decay_steps
    EXPECT_EQ(s.at(111), 1e-4);
    EXPECT_EQ(s.at(1000000), 1e-4);
    EXPECT_GT(s.at(109), 1e-4);
  }
}

TEST(LrSchedule, NoWarmup) {
  const LrSchedule cosine = schedule(LrDecay::kCosine, 0, 100);
  // Step 1 is already 1% into the decay.
  EXPECT_DOUBLE_EQ(cosine.at(1),
                   1e-4 + 9e-4 * (1.0 + std::cos(std::numbers::pi * 0.01)) / 2.0);
  EXPECT_DOUBLE_EQ(cosine.at(50), (1e-3 + 1e-4) / 2.0);
  const LrSchedule constant = schedule(LrDecay::kConstant, 0, 100);
  EXPECT_EQ(constant.at(1), 1e-3);
}

// decay_steps <= warmup_steps: the decay has ended when warmup does (lr_schedule.cpp's note), so
// warmup runs as usual and every later step is past the end: min_lr, or lr for constant.
TEST(LrSchedule, DecayEndingBeforeWarmupEnds) {
  for (int64_t decay_steps : {0, 5, 10}) {
    for (LrDecay decay : {LrDecay::kCosine, LrDecay::kLinear}) {
      const LrSchedule s = schedule(decay, 10, decay_steps);
      EXPECT_DOUBLE_EQ(s.at(5), 5e-4) << decay_steps;
      EXPECT_EQ(s.at(10), 1e-3) << decay_steps;
      EXPECT_EQ(s.at(11), 1e-4) << decay_steps;
      EXPECT_EQ(s.at(500), 1e-4) << decay_steps;
    }
    const LrSchedule constant = schedule(LrDecay::kConstant, 10, decay_steps);
    EXPECT_EQ(constant.at(11), 1e-3);
  }
  // Neither warmup nor decay: constant is lr, the decays are at their end from step 1.
  EXPECT_EQ(schedule(LrDecay::kConstant, 0, 0).at(1), 1e-3);
  EXPECT_EQ(schedule(LrDecay::kCosine, 0, 0).at(1), 1e-4);
}

TEST(LrSchedule, RejectsStepZero) {
  EXPECT_THROW(schedule(LrDecay::kCosine, 10, 100).at(0), Error);
  EXPECT_THROW(schedule(LrDecay::kCosine, 0, 100).at(0), Error);
}

TEST(LrSchedule, DecayNamesRoundTrip) {
  for (LrDecay decay : {LrDecay::kConstant, LrDecay::kCosine, LrDecay::kLinear}) {
    LrDecay parsed = decay == LrDecay::kCosine ? LrDecay::kLinear : LrDecay::kCosine;
    ASSERT_TRUE(parse_lr_decay(lr_decay_name(decay), &parsed)) << lr_decay_name(decay);
    EXPECT_EQ(parsed, decay);
  }
  EXPECT_EQ(lr_decay_name(LrDecay::kConstant), "constant");
  EXPECT_EQ(lr_decay_name(LrDecay::kCosine), "cosine");
  EXPECT_EQ(lr_decay_name(LrDecay::kLinear), "linear");
}

TEST(LrSchedule, RejectsUnknownDecayName) {
  for (const char* name : {"", "Cosine", "exponential", "cosine ", "lin"}) {
    LrDecay parsed = LrDecay::kLinear;
    EXPECT_FALSE(parse_lr_decay(name, &parsed)) << '"' << name << '"';
    EXPECT_EQ(parsed, LrDecay::kLinear) << "a failed parse leaves the output alone";
  }
}

}  // namespace
}  // namespace zt::optim
