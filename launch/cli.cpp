// Command-line parsing and dispatch for the zerotrain executable.
#include "launch/cli.h"

#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>

#include "launch/bench.h"
#include "launch/convert_cmd.h"
#include "launch/bootstrap.h"
#include "launch/config.h"
#include "launch/estimate.h"
#include "launch/prepare_cmd.h"
#include "launch/run_outputs.h"
#include "launch/signals.h"
#include "launch/tokenize_cmd.h"
#include "launch/trainer.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace zt::launch {

namespace {

constexpr const char* kVersion = "0.1.0";

// `zerotrain train` on every rank. Rank 0 alone reads and checks the config (one message, one
// file read on a shared file system) and hands the resolved config to the others.
int run_train(const CliCommand& cmd) {
  MpiSession mpi;
  const ProcessInfo& me = mpi.info();
  std::string resolved, error;
  std::optional<RunConfig> config;
  if (me.rank == 0) {
    try {
      config = load_config(cmd.config_path, cmd.overrides);
      check_out_dir(config->train);
      resolved = config_to_toml(*config);
    } catch (const UserError& e) {
      error = e.what();
    }
  }
  error = mpi.broadcast_string(error);
  if (!error.empty()) {
    if (me.rank == 0) std::fprintf(stderr, "zerotrain: error: %s\n", error.c_str());
    return 2;
  }
  resolved = mpi.broadcast_string(resolved);
  if (me.rank != 0) {
    // Rank 0 checked it; should it still not read back here, rank 0 must not wait for this rank.
    try {
      config = parse_config(resolved, "(resolved config from rank 0)", {});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zerotrain: internal error on rank %d of %d: %s\n", me.rank, me.size,
                   e.what());
      std::fflush(stderr);
      mpi.abort(1);
      return 1;
    }
  }
  // SIGTERM / SIGINT from here on: finish the step, save, exit 0 (launch/signals.h). Earlier, the
  // default (exit at once) is right: nothing is worth saving before training starts.
  install_stop_handlers(me.rank == 0);
  try {
    TrainOptions options;
    options.local_rank = me.local_rank;
    options.local_size = me.local_size;
    train(*config, mpi.world(), options);
  } catch (const std::exception& e) {
    const bool user = dynamic_cast<const UserError*>(&e) != nullptr;
    std::fflush(stdout);
    std::fprintf(stderr, "zerotrain: %s on rank %d of %d (%s): %s\n", user ? "error" : "internal error",
                 me.rank, me.size, me.host.c_str(), e.what());
    std::fflush(stderr);
    // Another rank may be waiting in a collective for this one: end them all.
    if (me.size > 1) mpi.abort(user ? 2 : 1);
    return user ? 2 : 1;
  }
  return 0;
}

}  // namespace

std::string usage_text() {
  return "zerotrain: ZeRO data-parallel training of GPT-J models\n"
         "\n"
         "usage:\n"
         "  [mpirun -np N] zerotrain train [CONFIG.toml] [--set section.key=value ...]\n"
         "      train a model; without CONFIG, the built-in defaults train gptj-tiny on the\n"
         "      synthetic corpus on the CPU (see examples/tiny-cpu.toml)\n"
         "  zerotrain train --help     every config key with its type, default and meaning\n"
         "  zerotrain estimate [--model gptj-6b] [--gpus N] [--offload] ...\n"
         "      per-GPU memory for each ZeRO stage and what fits (zerotrain estimate --help)\n"
         "  zerotrain bench [--model gptj-6b] [--micro-batch 4] [--seq-len 2048]\n"
         "      per-op timings of the CUDA backend at the model's shapes (zerotrain bench --help)\n"
         "  zerotrain prepare --tokenizer DIR --out DATASET_DIR [--format text|jsonl] FILES...\n"
         "      tokenize documents into HDF5 shards to train on (zerotrain prepare --help)\n"
         "  zerotrain tokenize --tokenizer DIR [--decode] < INPUT\n"
         "      GPT-2 BPE token ids of stdin, or the text of ids (zerotrain tokenize --help)\n"
         "  zerotrain convert hf-to-zt|zt-to-hf --in DIR --out DIR\n"
         "      Hugging Face GPT-J weights to a zerotrain checkpoint and back (zerotrain convert --help)\n"
         "  zerotrain --help           this text\n"
         "  zerotrain --version\n"
         "\n"
         "examples:\n"
         "  zerotrain train examples/tiny-cpu.toml\n"
         "  zerotrain train examples/tiny-cpu.toml --set train.steps=50 --set optimizer.lr=1e-3\n"
         "  mpirun -np 4 zerotrain train examples/tiny-cpu.toml --set zero.stage=2\n"
         "  mpirun -np 2 zerotrain train examples/gptj-6b-finetune.toml   # from Hugging Face weights\n"
         "  zerotrain estimate --model gptj-6b --gpus 8 --gpu-mem 80GiB --offload\n";
}

std::string train_usage_text() {
  return "usage: zerotrain train [CONFIG.toml] [--set section.key=value ...]\n"
         "\n"
         "CONFIG.toml holds sections [model], [train], [optimizer], [data], [zero], [comm] and\n"
         "[fp16]; every key is optional.\n"
         "--set overrides one key after the file is read (repeatable; later ones win).\n"
         "Outputs go to train.out_dir: config.toml (the resolved config) and metrics.jsonl.\n"
         "\n" +
         config_reference_text();
}

CliCommand parse_cli(const std::vector<std::string>& args) {
  CliCommand cmd;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") return cmd;
  if (args[0] == "--version") {
    cmd.kind = CliCommand::Kind::kVersion;
    return cmd;
  }
  if (args[0] == "estimate" || args[0] == "bench") {
    const bool estimate = args[0] == "estimate";
    cmd.kind = estimate ? CliCommand::Kind::kEstimate : CliCommand::Kind::kBench;
    for (size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--help" || args[i] == "-h") {
        cmd.kind = estimate ? CliCommand::Kind::kEstimateHelp : CliCommand::Kind::kBenchHelp;
        return cmd;
      }
      cmd.command_args.push_back(args[i]);
    }
    return cmd;
  }
  if (args[0] != "train")
    throw_user_error("unknown command \"", args[0], "\": the commands are train, estimate, "
                     "bench, prepare, tokenize and convert (run `zerotrain --help`)");
  cmd.kind = CliCommand::Kind::kTrain;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      cmd.kind = CliCommand::Kind::kTrainHelp;
      return cmd;
    }
    if (a == "--set" || a.rfind("--set=", 0) == 0) {
      std::string value;
      if (a == "--set") {
        if (i + 1 >= args.size())
          throw_user_error("--set needs a value: --set section.key=value (e.g. --set train.steps=50)");
        value = args[++i];
      } else {
        value = a.substr(6);
      }
      cmd.overrides.push_back(value);
      continue;
    }
    if (a.rfind("-", 0) == 0)
      throw_user_error("unknown option \"", a, "\" for `zerotrain train`: the options are --set "
                       "section.key=value and --help");
    if (!cmd.config_path.empty())
      throw_user_error("two config files given (\"", cmd.config_path, "\" and \"", a,
                       "\"): `zerotrain train` takes one; use --set to change single keys");
    cmd.config_path = a;
  }
  return cmd;
}

int run_cli(const std::vector<std::string>& args) {
  try {
    log_configure(LogOptions{});
    // `tokenize` filters stdin to stdout and needs nothing of the rest of the CLI.
    if (!args.empty() && args[0] == "tokenize") {
      const TokenizeArgs t = parse_tokenize_args({args.begin() + 1, args.end()});
      if (t.help) std::fputs(tokenize_usage_text().c_str(), stdout);
      else run_tokenize(t, std::cin, std::cout);
      std::cout.flush();
      return 0;
    }
    // `prepare` runs on one process, like `tokenize`.
    if (!args.empty() && args[0] == "prepare") {
      PrepareArgs p = parse_prepare_args({args.begin() + 1, args.end()});
      if (p.help) {
        std::fputs(prepare_usage_text().c_str(), stdout);
        return 0;
      }
      // SIGINT / SIGTERM stop it cleanly: temporary files removed, out_dir as it was, exit
      // status 128 + signal (a second signal ends it at once).
      install_stop_handlers(false);
      p.options.stop = [] { return stop_requested(); };
      std::string report;
      try {
        report = run_prepare(p);
      } catch (const UserError& e) {
        const int sig = stop_signal();
        restore_default_stop_handlers();
        if (sig == 0) throw;
        std::fprintf(stderr, "zerotrain: %s (%s)\n", e.what(), stop_signal_name(sig));
        return 128 + sig;
      }
      restore_default_stop_handlers();
      std::fputs(report.c_str(), stdout);
      return 0;
    }
    // So does `convert`.
    if (!args.empty() && args[0] == "convert") {
      const ConvertArgs c = parse_convert_args({args.begin() + 1, args.end()});
      std::fputs(c.help ? convert_usage_text().c_str() : run_convert(c).c_str(), stdout);
      return 0;
    }
    const CliCommand cmd = parse_cli(args);
    switch (cmd.kind) {
      case CliCommand::Kind::kHelp: std::fputs(usage_text().c_str(), stdout); return 0;
      case CliCommand::Kind::kVersion: std::printf("zerotrain %s\n", kVersion); return 0;
      case CliCommand::Kind::kTrainHelp: std::fputs(train_usage_text().c_str(), stdout); return 0;
      case CliCommand::Kind::kTrain: return run_train(cmd);
      case CliCommand::Kind::kEstimateHelp: std::fputs(estimate_usage_text().c_str(), stdout); return 0;
      case CliCommand::Kind::kEstimate:
        std::fputs(run_estimate(parse_estimate_args(cmd.command_args)).c_str(), stdout);
        return 0;
      case CliCommand::Kind::kBenchHelp: std::fputs(bench_usage_text().c_str(), stdout); return 0;
      case CliCommand::Kind::kBench:
        std::fputs(run_bench(parse_bench_args(cmd.command_args)).c_str(), stdout);
        return 0;
    }
  } catch (const UserError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "zerotrain: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "zerotrain: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace zt::launch
