// The zerotrain command line: subcommands, their flags and help texts.
#pragma once

#include <string>
#include <vector>

namespace zt::launch {

struct CliCommand {
  enum class Kind { kHelp, kVersion, kTrain, kTrainHelp, kEstimate, kEstimateHelp, kBench, kBenchHelp };
  Kind kind = Kind::kHelp;
  std::string config_path;             // train: empty = the built-in defaults (tiny CPU run)
  std::vector<std::string> overrides;  // train: "section.key=value" from --set, in order
  std::vector<std::string> command_args;  // estimate, bench: the flags after the command
};

// Throws zt::UserError naming the bad argument and the usage.
CliCommand parse_cli(const std::vector<std::string>& args);
std::string usage_text();
std::string train_usage_text();  // includes the reference of every config key

// The whole program: parses, dispatches, prints errors; returns the exit code
// (0 ok, 2 bad input, 1 internal error).
int run_cli(const std::vector<std::string>& args);

}  // namespace zt::launch
