// Command-line flags of every zerotrain command: a table of typical mistakes, each a
// zt::UserError naming the flag or argument and pointing to the command's --help, and random
// argument lists drawn from flags, values and junk, which every parser must accept or refuse
// with a UserError, never crash on (issue 8; the suite also runs under ASan+UBSan).
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "launch/bench.h"
#include "launch/cli.h"
#include "launch/convert_cmd.h"
#include "launch/estimate.h"
#include "launch/prepare_cmd.h"
#include "launch/tokenize_cmd.h"
#include "tests/faults/outcome.h"

namespace zt::launch {
namespace {

using Args = std::vector<std::string>;
using testing::expect_clean;
using testing::expect_user_error;
using testing::outcome_of;

struct Command {
  const char* name;
  std::function<void(const Args&)> parse;
  Args flags;  // the command's own flags, for the random lists
};

std::vector<Command> commands() {
  return {
      {"train", [](const Args& a) { Args full{"train"}; full.insert(full.end(), a.begin(), a.end()); parse_cli(full); },
       {"--set", "--help"}},
      {"estimate", [](const Args& a) { parse_estimate_args(a); },
       {"--model", "--config", "--gpus", "--gpus-per-node", "--gpu-mem", "--cpu-mem", "--micro-batch",
        "--seq-len", "--precision", "--activation-checkpointing", "--offload"}},
      {"bench", [](const Args& a) { parse_bench_args(a); },
       {"--model", "--micro-batch", "--seq-len", "--reps", "--tune-gemms"}},
      {"prepare", [](const Args& a) { parse_prepare_args(a); },
       {"--tokenizer", "--out", "--format", "--jsonl-key", "--val-fraction", "--seed", "--shard-tokens",
        "--compress", "--threads", "--overwrite", "--quiet"}},
      {"tokenize", [](const Args& a) { parse_tokenize_args(a); }, {"--tokenizer", "--decode"}},
      {"convert", [](const Args& a) { parse_convert_args(a); },
       {"hf-to-zt", "zt-to-hf", "--in", "--out", "--dtype", "--overwrite"}},
  };
}

std::string joined(const char* command, const Args& args) {
  std::string s = std::string("zerotrain ") + command;
  for (const std::string& a : args) s += " '" + a + "'";
  return s;
}

TEST(CliFaults, TypicalMistakesNameTheFlag) {
  struct Case {
    const char* command;
    Args args;
    std::vector<std::string> parts;  // what the message must contain
  };
  const std::vector<Case> cases = {
      {"train", {"--sett", "train.steps=3"}, {"--sett"}},
      {"train", {"a.toml", "b.toml"}, {"two config files"}},
      {"estimate", {"--gpus"}, {"--gpus", "needs a value"}},
      {"estimate", {"--gpus", "0"}, {"--gpus"}},
      {"estimate", {"--gpus", "two"}, {"--gpus"}},
      {"estimate", {"--gpus", "99999999999999999999999"}, {"--gpus"}},
      {"estimate", {"--gpu-mem", "80XB"}, {"--gpu-mem"}},
      {"estimate", {"--precision", "fp8"}, {"--precision"}},
      {"estimate", {"--frobnicate", "1"}, {"--frobnicate", "zerotrain estimate --help"}},
      {"bench", {"--micro-batch", "-1"}, {"--micro-batch"}},
      {"bench", {"--reps"}, {"--reps"}},
      {"prepare", {"--val-fraction", "1.5"}, {"--val-fraction"}},
      {"prepare", {"--compress", "12"}, {"--compress"}},
      {"prepare", {"--format", "csv"}, {"--format"}},
      {"prepare", {"--shard-tokens", "10X"}, {"--shard-tokens"}},
      {"prepare", {"--threads", "0"}, {"--threads"}},
      {"prepare", {"--bogus"}, {"--bogus"}},
      {"tokenize", {"--tokenizer"}, {"--tokenizer"}},
      {"convert", {"hf-to-zt", "--in", "a"}, {"--out"}},
      {"convert", {"hf-to-zt", "zt-to-hf", "--in", "a", "--out", "b"}, {"zt-to-hf"}},
      {"convert", {"zt-to-hf", "--in", "a", "--out", "b", "--dtype", "fp64"}, {"--dtype"}},
  };
  for (const Case& c : cases) {
    for (const Command& cmd : commands()) {
      if (std::string(cmd.name) != c.command) continue;
      expect_user_error(outcome_of([&] { cmd.parse(c.args); }), joined(c.command, c.args), c.parts);
    }
  }
}

// Random lists of up to 6 arguments from the command's flags, plausible and absurd values, and
// junk: the parser either accepts the list or refuses it with a UserError.
TEST(CliFaults, RandomArgumentListsNeverCrash) {
  const Args values = {"", "0", "1", "-1", "2.5", "1e400", "nan", "99999999999999999999", "80GiB", "bf16",
                       "fp8", "gptj-6b", "gptj-nope", "text", "jsonl", "on", "off", "x=y", "=", "--",
                       "-", "-h", "\xff\xfe", std::string("a\0b", 3), "/nonexistent/dir", "k", "10M"};
  std::mt19937_64 rng(20261201);
  int runs = 0;
  for (const Command& cmd : commands()) {
    Args pool = cmd.flags;
    pool.insert(pool.end(), values.begin(), values.end());
    for (const std::string& f : cmd.flags) pool.push_back(f + "=" + values[rng() % values.size()]);
    for (int trial = 0; trial < 400; ++trial) {
      Args args(rng() % 7);
      for (std::string& a : args) a = pool[rng() % pool.size()];
      expect_clean(outcome_of([&] { cmd.parse(args); }), joined(cmd.name, args), /*may_accept=*/true);
      ++runs;
    }
  }
  EXPECT_EQ(runs, 2400);
}

}  // namespace
}  // namespace zt::launch
