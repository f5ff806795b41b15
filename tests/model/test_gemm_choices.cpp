// GEMM choices files (model/gemm_choices.h): the text round trip, reading and writing files, and
// the error each malformed line gets. The CUDA side (tuning, choices in force) is in
// tests/cuda/test_ops_cuda.cpp (CudaGemm.TunedAndChosenCandidatesMatchTheCpuTwin).
#include "model/gemm_choices.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt::model {
namespace {

using zt::testing::user_error_of;

GemmChoices sample() {
  GemmChoices c;
  c.device = "NVIDIA H200";
  c.library = "130100";
  c.index["bf16>bf16 NN m=8192 n=16384 k=4096 lda=4096 ldb=16384 ldc=16384 epilogue=none"] = 7;
  c.index["bf16>bf16 NT m=8192 n=4096 k=4096 lda=4096 ldb=4096 ldc=4096 epilogue=bias"] = 0;
  return c;
}

void expect_same(const GemmChoices& a, const GemmChoices& b) {
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.library, b.library);
  EXPECT_EQ(a.index, b.index);
}

TEST(GemmChoices, TextRoundTrips) {
  const GemmChoices c = sample();
  const std::string text = format_gemm_choices(c);
  EXPECT_NE(text.find("device NVIDIA H200\n"), std::string::npos);
  EXPECT_NE(text.find("choice 7 bf16>bf16 NN m=8192"), std::string::npos);
  expect_same(parse_gemm_choices(text, "f"), c);
}

TEST(GemmChoices, FileRoundTrips) {
  const std::string dir = zt::testing::fresh_dir("choices");
  const std::string path = dir + "/gemms.txt";
  write_gemm_choices(path, sample());
  expect_same(read_gemm_choices(path), sample());
  EXPECT_NE(user_error_of([&] { read_gemm_choices(dir + "/missing.txt"); }).find("missing.txt"),
            std::string::npos);
}

TEST(GemmChoices, MalformedLinesNameTheFileAndLine) {
  const std::string head = "# comment\n\ndevice NVIDIA H200\ncublaslt 130100\n";
  struct Case {
    std::string text, expected;
  };
  const Case cases[] = {
      {head + "choice x key\n", "gemms.txt:5: `x` is not a candidate index"},
      {head + "choice -1 key\n", "gemms.txt:5: `-1` is not a candidate index"},
      {head + "choice 3\n", "gemms.txt:5: a choice without a problem key"},
      {head + "choice 1 k\nchoice 2 k\n", "gemms.txt:6: a second choice for `k`"},
      {head + "algo 1 k\n", "gemms.txt:5: unexpected line `algo 1 k`"},
      {"device NVIDIA H200\nchoice 1 k\n", "gemms.txt: no `cublaslt` line"},
      {"cublaslt 1\n", "gemms.txt: no `device` line"},
  };
  for (const Case& c : cases) {
    const std::string error = user_error_of([&] { parse_gemm_choices(c.text, "gemms.txt"); });
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.text << "\n-> " << error;
  }
  // Every line error says how to make a good file.
  EXPECT_NE(user_error_of([&] { parse_gemm_choices(head + "x\n", "g"); }).find("--tune-gemms"),
            std::string::npos);
}

}  // namespace
}  // namespace zt::model
