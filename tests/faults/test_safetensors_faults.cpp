// safetensors files (runtime/safetensors.h) beyond the table of malformed headers in
// tests/runtime/test_safetensors.cpp: a small valid file cut at every byte, and with random
// bytes of its header changed. Opening must either succeed (and then every tensor reads within
// the file) or be a zt::UserError naming the file (issue 8).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "tests/faults/outcome.h"
#include "tests/support/temp_dir.h"

namespace zt {
namespace {

using testing::expect_clean;
using testing::Outcome;
using testing::outcome_of;

// Opens `path` and reads every float tensor whole.
Outcome open_and_read(const std::string& path) {
  return outcome_of([&] {
    const SafetensorsFile f(path);
    for (const std::string& name : f.names()) {
      const SafetensorsEntry& e = f.at(name);
      if (!e.float_dtype) continue;
      std::vector<float> out(size_t(e.numel()));
      f.read_f32(e, 0, e.numel(), out.data());
    }
  });
}

// A small valid file: three float dtypes, a scalar, an empty tensor and metadata.
std::string small_file(const std::string& dir) {
  const std::string path = dir + "/small.safetensors";
  SafetensorsWriter w(path,
                      {{"a.weight", DType::kF32, {3, 4}},
                       {"b", DType::kBF16, {5}},
                       {"c", DType::kF16, {}},
                       {"empty", DType::kF32, {0, 2}},
                       {"d", DType::kF64, {2}}},
                      {{"format", "pt"}});
  const std::vector<float> v(12, 1.5f);
  w.write("a.weight", v.data(), 12);
  w.write("b", v.data(), 5);
  w.write("c", v.data(), 1);
  w.write("d", v.data(), 2);
  w.finish();
  return path;
}

void expect_named(const Outcome& o, const std::string& path, const std::string& input) {
  expect_clean(o, input, /*may_accept=*/true);
  if (o.kind == Outcome::kUserError) {
    EXPECT_NE(o.message.find(path), std::string::npos) << input << ": " << o.message;
  }
}

TEST(SafetensorsFaults, CutAtEveryByte) {
  const std::string dir = testing::fresh_dir("cut");
  const std::string bytes = testing::read_file(small_file(dir));
  ASSERT_EQ(open_and_read(dir + "/small.safetensors").kind, Outcome::kAccepted);
  const std::string path = dir + "/cut.safetensors";
  for (size_t n = 0; n < bytes.size(); ++n) {
    testing::write_file(dir, "cut.safetensors", bytes.substr(0, n));
    const Outcome o = open_and_read(path);
    // Every cut loses data the header promises (the last tensor is not empty).
    EXPECT_EQ(o.kind, Outcome::kUserError) << "cut at " << n << ": " << o.message;
    expect_named(o, path, "cut at " + std::to_string(n));
  }
}

TEST(SafetensorsFaults, RandomHeaderBytes) {
  const std::string dir = testing::fresh_dir("flip");
  const std::string bytes = testing::read_file(small_file(dir));
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | uint8_t(bytes[size_t(i)]);
  ASSERT_LT(8 + header_size, bytes.size());
  const std::string path = dir + "/flip.safetensors";
  // JSON's own characters make the damage reach deeper than random bytes alone would.
  const std::string json_bytes = "{}[]\",:0123456789-+.eE \\u\x80\xff";
  std::mt19937 rng(8);  // fixed seed: the same inputs every run
  for (int trial = 0; trial < 1500; ++trial) {
    std::string bad = bytes;
    const int changes = 1 + int(rng() % 3);
    for (int c = 0; c < changes; ++c) {
      // Mostly the header JSON, sometimes the length field.
      const size_t at = rng() % 8 == 0 ? rng() % 8 : 8 + rng() % header_size;
      bad[at] = rng() % 2 ? char(rng()) : json_bytes[rng() % json_bytes.size()];
    }
    testing::write_file(dir, "flip.safetensors", bad);
    expect_named(open_and_read(path), path, "header trial " + std::to_string(trial));
  }
}

}  // namespace
}  // namespace zt
