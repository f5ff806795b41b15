// Malformed run configs (launch::parse_config / load_config): the example config cut at every
// byte and with bytes flipped, every key at extreme values, and a table of typical mistakes, each
// of which must be a zt::UserError naming the line or key and the fix (issue 8).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/config_schema.h"
#include "tests/faults/outcome.h"
#include "tests/support/temp_dir.h"

namespace zt::launch {
namespace {

using testing::expect_clean;
using testing::expect_user_error;
using testing::outcome_of;
using namespace std::string_literals;

const std::string kExample = std::string(ZT_SOURCE_DIR) + "/examples/tiny-cpu.toml";

testing::Outcome parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return outcome_of([&] { parse_config(text, "run.toml", overrides); });
}

TEST(ConfigFaults, ExampleCutAtEveryByte) {
  const std::string text = testing::read_file(kExample);
  ASSERT_GT(text.size(), 100u);
  ASSERT_EQ(parse(text).kind, testing::Outcome::kAccepted);
  for (size_t n = 0; n < text.size(); ++n) {
    const testing::Outcome o = parse(text.substr(0, n));
    expect_clean(o, "tiny-cpu.toml cut at byte " + std::to_string(n), /*may_accept=*/true);
    // Every refusal says where: the source name and a line.
    if (o.kind == testing::Outcome::kUserError) {
      EXPECT_EQ(o.message.rfind("run.toml:", 0), 0u) << "cut at " << n << ": " << o.message;
    }
  }
}

TEST(ConfigFaults, ExampleWithRandomByteFlips) {
  const std::string text = testing::read_file(kExample);
  std::mt19937 rng(8);  // fixed seed: the same inputs every run
  for (int trial = 0; trial < 1500; ++trial) {
    std::string bad = text;
    const int flips = 1 + int(rng() % 3);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] ^= char(1 + rng() % 255);
    expect_clean(parse(bad), "tiny-cpu.toml with byte flips, trial " + std::to_string(trial),
                 /*may_accept=*/true);
  }
}

// Every key at the extremes of its type, in the file and through --set: accepted or refused
// with a message naming the key (never an overflow further on: UBSan checks that).
TEST(ConfigFaults, EveryKeyAtExtremeValues) {
  const std::vector<std::string> ints = {"9223372036854775807", "-9223372036854775808", "0", "-1",
                                         "4611686018427387904"};
  const std::vector<std::string> floats = {"1e308", "-1e308", "inf", "-inf", "nan", "0.0", "-0.0",
                                           "5e-324"};
  const std::vector<std::string> others = {"\"\"", "\"x\"", "true", "1", "1.5", "[1, 2]", "{ a = 1 }"};
  for (const ConfigKey& key : config_schema()) {
    std::vector<std::string> values = others;
    if (key.type == KeyType::kInt) values.insert(values.end(), ints.begin(), ints.end());
    if (key.type == KeyType::kFloat) values.insert(values.end(), floats.begin(), floats.end());
    for (const std::string& v : values) {
      const std::string file = "[" + key.section + "]\n" + key.name + " = " + v + "\n";
      const testing::Outcome o = parse(file);
      expect_clean(o, key.key + " = " + v, /*may_accept=*/true);
      // The file's line, or (model shape rules, checked after every key is read) the key.
      if (o.kind == testing::Outcome::kUserError) {
        EXPECT_TRUE(o.message.find("run.toml:") != std::string::npos ||
                    o.message.find(key.key) != std::string::npos)
            << key.key << " = " << v << ": " << o.message;
      }
      const testing::Outcome set = parse("", {key.key + "=" + v});
      expect_clean(set, "--set " + key.key + "=" + v, /*may_accept=*/true);
    }
  }
}

TEST(ConfigFaults, TypicalMistakesNameTheLineKeyAndFix) {
  struct Case {
    std::string text;
    std::vector<std::string> parts;  // all in the message
  };
  const Case cases[] = {
      {"[train]\nsteps = \"many\"\n", {"run.toml:2", "train.steps", "expected an integer", "got a string"}},
      {"[train]\nsteps = 1.5\n", {"run.toml:2", "train.steps", "expected an integer"}},
      {"[optimizer]\nlr = \"fast\"\n", {"run.toml:2", "optimizer.lr", "expected"}},
      {"[model]\npreset = 3\n", {"run.toml:2", "model.preset", "wrong type"}},
      {"[train]\nsteps = 99999999999999999999\n", {"run.toml:2", "invalid TOML"}},
      {"[train]\nsteps = -9223372036854775808\n", {"run.toml:2", "train.steps", "out of range"}},
      {"[train]\nseq_len = 9223372036854775807\n", {"run.toml:2", "train.seq_len", "model.n_positions"}},
      {"[optimizer]\nlr = 1e999\n", {"run.toml:2:11", "invalid TOML", "1e999"}},
      {"[optimizer]\nlr = nan\n", {"run.toml:2", "optimizer.lr"}},
      {"[optimizer]\nlr = inf\n", {"run.toml:2", "optimizer.lr"}},
      {"[trian]\nsteps = 5\n", {"run.toml:1", "unknown config section \"trian\"", "train"}},
      {"[train]\nstesp = 5\n", {"run.toml:2", "unknown config key \"train.stesp\"", "train.steps"}},
      {"steps = 5\n", {"run.toml:1", "unknown config key \"steps\"", "train.steps"}},
      {"train = 5\n", {"run.toml:1", "train = 5", "expected a table ([train])"}},
      {"[[train]]\nsteps = 5\n", {"run.toml:1", "train", "expected a table ([train])"}},
      {"[train.sub]\nx = 1\n", {"run.toml:1", "unknown config key \"train.sub\""}},
      {"[train]\nsteps = 5\nsteps = 6\n", {"run.toml:3", "invalid TOML"}},
      {"[train]\nsteps = 5\n[train]\nseed = 1\n", {"run.toml:3", "invalid TOML"}},
      {"[train]\nout_dir = \"r\xff\"\n", {"run.toml:2", "invalid TOML"}},
      {"# caf\xc3\x28\n[train]\n", {"run.toml:1", "invalid TOML"}},
      {"[train]\nout_dir = \"a\0b\"\n"s, {"run.toml:2", "invalid TOML"}},
      {"[train]\nsteps = \n", {"run.toml:2", "invalid TOML"}},
      {"[train\nsteps = 5\n", {"run.toml:1", "invalid TOML"}},
      {"[train]\nprecision = \"fp8\"\n", {"run.toml:2", "train.precision", "\"fp32\""}},
      {"[zero]\nstage = 4\n", {"run.toml:2", "zero.stage = 4", "out of range"}},
  };
  for (const Case& c : cases) expect_user_error(parse(c.text), "config " + c.text, c.parts);
}

TEST(ConfigFaults, FilesThatAreNotConfigs) {
  const std::string dir = testing::fresh_dir("files");
  // An empty file is a valid (empty) TOML document: the defaults.
  EXPECT_EQ(load_config(testing::write_file(dir, "empty.toml", ""), {}).train.steps, RunConfig().train.steps);
  expect_user_error(outcome_of([&] { load_config(dir, {}); }), "a directory",
                    {"cannot read config file \"" + dir + "\"", "Is a directory", "check the path"});
  const std::string binary = testing::write_file(dir, "binary.toml", std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10));
  expect_user_error(outcome_of([&] { load_config(binary, {}); }), "a binary file",
                    {binary + ":1", "invalid TOML"});
}

}  // namespace
}  // namespace zt::launch
