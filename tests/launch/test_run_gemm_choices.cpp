// train.gemm_choices (launch/run_gemm_choices.h) without a GPU: the key is parsed and written
// back; ZT_GEMM_CHOICES beside it is a UserError on any backend; a CPU run neither tunes nor
// creates the file. The GPU side (tuning, writing, reading back to the same losses) is
// tests/scripts/gemm_choices_test.sh.
#include "launch/run_gemm_choices.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "launch/config.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt::launch {
namespace {

TEST(RunGemmChoices, KeyIsParsedAndWrittenBack) {
  const RunConfig c = parse_config("[train]\ngemm_choices = \"tuned/h200.txt\"\n", "t.toml", {});
  EXPECT_EQ(c.train.gemm_choices, "tuned/h200.txt");
  EXPECT_EQ(parse_config(config_to_toml(c), "back.toml", {}).train.gemm_choices, "tuned/h200.txt");
  EXPECT_EQ(parse_config("", "empty.toml", {}).train.gemm_choices, "");
}

TEST(RunGemmChoices, EnvironmentVariableBesideTheKeyIsAUserError) {
  const std::string dir = zt::testing::fresh_dir("env");
  const std::string path = dir + "/gemms.txt";
  ::setenv("ZT_GEMM_CHOICES", "/elsewhere/gemms.txt", 1);
  const std::string error =
      zt::testing::user_error_of([&] { RunGemmChoices choices(path, Device::cpu(), true); });
  ::unsetenv("ZT_GEMM_CHOICES");
  EXPECT_NE(error.find("train.gemm_choices = \"" + path + "\""), std::string::npos) << error;
  EXPECT_NE(error.find("unset ZT_GEMM_CHOICES"), std::string::npos) << error;
  // Unset (or empty), the variable is no conflict.
  ::setenv("ZT_GEMM_CHOICES", "", 1);
  RunGemmChoices choices(path, Device::cpu(), true);
  ::unsetenv("ZT_GEMM_CHOICES");
  EXPECT_FALSE(choices.tuning());
}

TEST(RunGemmChoices, CpuRunNeitherTunesNorWrites) {
  const std::string dir = zt::testing::fresh_dir("cpu");
  const std::string path = dir + "/sub/gemms.txt";
  RunGemmChoices choices(path, Device::cpu(), true);
  EXPECT_FALSE(choices.tuning());
  choices.after_step();
  EXPECT_FALSE(std::filesystem::exists(dir + "/sub"));
  RunGemmChoices off("", Device::cpu(), true);
  EXPECT_FALSE(off.tuning());
}

}  // namespace
}  // namespace zt::launch
