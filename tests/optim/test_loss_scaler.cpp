// The dynamic loss scaler: growth after clean steps, hysteresis, backoff, and the floor.
#include <gtest/gtest.h>

#include <string>

#include "optim/loss_scaler.h"
#include "runtime/error.h"

namespace zt::optim {
namespace {

TEST(LossScaler, StartsAtTwoToTheSixteenAndGrowsAfterTheInterval) {
  DynamicLossScaler s(LossScalerConfig{});
  EXPECT_EQ(s.scale(), 65536.0);
  for (int i = 0; i < 999; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 65536.0);
  s.update(false);  // the 1000th clean step
  EXPECT_EQ(s.scale(), 131072.0);
  EXPECT_EQ(s.clean_steps(), 0);
}

TEST(LossScaler, HysteresisDelaysTheFirstBackoff) {
  DynamicLossScaler s(LossScalerConfig{1024.0, 10, 2, 1.0});
  s.update(true);  // tolerated
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.hysteresis_left(), 1);
  s.update(true);  // now the scale halves
  EXPECT_EQ(s.scale(), 512.0);
  s.update(true);  // hysteresis is used up until the next growth
  EXPECT_EQ(s.scale(), 256.0);
  for (int i = 0; i < 10; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.hysteresis_left(), 2);  // growth restores the tolerance
}

TEST(LossScaler, AnOverflowRestartsTheCleanCount) {
  DynamicLossScaler s(LossScalerConfig{8.0, 3, 5, 1.0});
  s.update(false);
  s.update(false);
  s.update(true);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 8.0);
  s.update(false);
  EXPECT_EQ(s.scale(), 16.0);
}

// A restored scaler continues exactly as the one whose state it took.
TEST(LossScaler, RestoredStateContinuesLikeTheOriginal) {
  LossScalerConfig cfg;
  cfg.growth_interval = 5;
  cfg.hysteresis = 3;
  DynamicLossScaler a(cfg);
  for (bool overflow : {true, false, false, true, true, false, false, false}) a.update(overflow);
  DynamicLossScaler b(cfg);
  b.restore(a.scale(), a.hysteresis_left(), a.clean_steps());
  for (bool overflow : {false, false, true, false, false, false, false, false, true, true}) {
    a.update(overflow);
    b.update(overflow);
    EXPECT_EQ(b.scale(), a.scale());
    EXPECT_EQ(b.hysteresis_left(), a.hysteresis_left());
    EXPECT_EQ(b.clean_steps(), a.clean_steps());
  }
  EXPECT_THROW(b.restore(0.5, 1, 0), Error);  // below min_scale
  EXPECT_THROW(b.restore(8.0, 4, 0), Error);  // more hysteresis than the config has
  EXPECT_THROW(b.restore(8.0, 1, 5), Error);  // a full growth interval would have grown
}

TEST(LossScaler, OverflowAtTheMinimumIsAnErrorThatSaysSo) {
  DynamicLossScaler s(LossScalerConfig{2.0, 1000, 1, 1.0});
  s.update(true);
  EXPECT_EQ(s.scale(), 1.0);
  try {
    s.update(true);
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("loss scale collapsed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zt::optim
