// Flags and report of `zerotrain estimate`.
#include "launch/estimate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "launch/config.h"
#include "launch/flags.h"
#include "runtime/error.h"

namespace zt::launch {

namespace {

constexpr int64_t kMaxGpus = int64_t(1) << 20;

bool parse_on_off(const std::string& flag, const std::string& text) {
  if (text == "on" || text == "true") return true;
  if (text == "off" || text == "false") return false;
  throw_user_error(flag, " ", text, ": expected on or off");
}

}  // namespace

int64_t parse_byte_size(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v) || v <= 0)
    throw_user_error(flag, " ", text, ": expected a size such as 80GiB, 512GB or 1.5TiB");
  std::string unit(end);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.front()))) unit.erase(0, 1);
  const struct {
    const char* name;
    double factor;
  } units[] = {{"", 1},           {"B", 1},           {"KB", 1e3},        {"MB", 1e6},
               {"GB", 1e9},       {"TB", 1e12},       {"KiB", 1024.0},    {"MiB", 1048576.0},
               {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto& u : units) {
    if (unit != u.name) continue;
    const double bytes = std::round(v * u.factor);
    if (bytes < 1 || bytes > 0x1p60)
      throw_user_error(flag, " ", text, ": must be between 1 byte and 1 EiB");
    return int64_t(bytes);
  }
  throw_user_error(flag, " ", text, ": unknown unit \"", unit,
                   "\"; use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB");
}

std::string estimate_usage_text() {
  return "usage: zerotrain estimate [--model gptj-6b|gptj-tiny] [--config RUN.toml [--set KEY=VALUE]]\n"
         "                          [--gpus N] [--gpus-per-node 8] [--gpu-mem 80GiB] [--cpu-mem 512GiB]\n"
         "                          [--micro-batch B] [--seq-len T] [--precision bf16|fp16]\n"
         "                          [--activation-checkpointing on|off] [--keep-activations N|auto]\n"
         "                          [--offload]\n"
         "\n"
         "Prints, for ZeRO stages 0-3 (and with --offload stages 1-3 with the fp32 master and Adam\n"
         "state in host memory, and stage 3 with its 16-bit parameter shard there too), the bytes\n"
         "each GPU holds for parameters, gradients, optimizer state, activations and transient\n"
         "buffers, the host memory per node, and whether the run fits. The model state\n"
         "comes from the same flat layout a run uses, so it equals what a run reports.\n"
         "--keep-activations N: with checkpointing on, the last N blocks keep their activations\n"
         "(model.keep_activations), so each one costs a block's activations and saves its recompute;\n"
         "auto (as a run with model.keep_activations = \"auto\" does) keeps each row's max keep.\n"
         "--config takes the model shape, micro-batch, sequence length, precision, activation\n"
         "checkpointing, kept blocks and bucket size from a training config; flags given after it\n"
         "override. --set KEY=VALUE (repeatable) changes a config key first, as `zerotrain train`\n"
         "does. Defaults: gptj-6b, 1 GPU, 80GiB per GPU, 512GiB per node, micro-batch 1 x 2048\n"
         "tokens, bf16, activation checkpointing on, no kept blocks.\n";
}

void apply_run_config(const RunConfig& c, zero::EstimateInput& in) {
  in.model = c.model.shape;
  in.micro_batch = c.train.micro_batch_size;
  in.seq_len = c.train.seq_len;
  in.activation_checkpointing = c.model.activation_checkpointing;
  in.keep_activations = c.model.keep_activations == kKeepActivationsAuto ? 0 : c.model.keep_activations;
  in.bucket_elements = c.zero.bucket_elements;
  in.delayed_update = c.zero.delayed_update_from_step > 0;
  if (c.train.precision != DType::kF32) in.precision = c.train.precision;
}

RunMemory estimate_run_memory(const RunConfig& c, int world, int64_t gpu_bytes) {
  zero::EstimateInput in;
  apply_run_config(c, in);
  in.gpus = world;
  in.gpu_bytes = gpu_bytes;
  const bool offload = c.zero.offload_optimizer == "cpu", offload_params = c.zero.offload_params == "cpu";
  auto row = [&] {
    for (const zero::StageEstimate& e : zero::estimate_memory(in, /*with_offload=*/true))
      if (e.stage == c.zero.stage && e.offload == offload && e.offload_params == offload_params)
        return e;
    throw_user_error("zero.stage = ", c.zero.stage, " with zero.offload_optimizer = \"",
                     c.zero.offload_optimizer, "\" and zero.offload_params = \"",
                     c.zero.offload_params, "\" has no memory estimate");
  };
  RunMemory out;
  out.keep = in.keep_activations;
  if (c.model.keep_activations == kKeepActivationsAuto && c.model.activation_checkpointing)
    out.keep = std::max<int64_t>(0, row().max_keep_activations);
  in.keep_activations = out.keep;
  const zero::StageEstimate e = row();
  out.gpu_total = e.gpu_total();
  out.fits = e.fits_gpu;
  return out;
}

EstimateArgs parse_estimate_args(const std::vector<std::string>& args) {
  EstimateArgs a;
  a.input.model = model::gptj_preset("gptj-6b");
  bool keep_given = false;  // --keep-activations on the command line (not only from --config)
  // --set values apply to --config wherever they stand, as in `zerotrain train`.
  std::vector<std::string> overrides;
  bool config_given = false;
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--set") overrides.push_back(args[++i]);
  FlagReader r("estimate", args, FlagReader::Values::kNextOnly);
  while (r.next()) {
    if (r.arg() == "--offload") {
      a.offload = true;
      continue;
    }
    if (!r.is_flag()) r.unexpected_argument();
    const std::string flag = r.flag();
    const std::string value = r.value();
    zero::EstimateInput& in = a.input;
    if (flag == "--model") {
      in.model = model::gptj_preset(value);
    } else if (flag == "--set") {
      continue;  // collected above
    } else if (flag == "--config") {
      config_given = true;
      const RunConfig config = load_config(value, overrides);
      apply_run_config(config, in);
      a.keep_auto = config.model.keep_activations == kKeepActivationsAuto;
    } else if (flag == "--gpus") {
      in.gpus = int(parse_int_flag(flag, value, 1, kMaxGpus));
    } else if (flag == "--gpus-per-node") {
      in.gpus_per_node = int(parse_int_flag(flag, value, 1, kMaxGpus));
    } else if (flag == "--gpu-mem") {
      in.gpu_bytes = parse_byte_size(flag, value);
    } else if (flag == "--cpu-mem") {
      in.cpu_bytes = parse_byte_size(flag, value);
    } else if (flag == "--micro-batch") {
      in.micro_batch = parse_int_flag(flag, value, 1);
    } else if (flag == "--seq-len") {
      in.seq_len = parse_int_flag(flag, value, 1);
    } else if (flag == "--precision") {
      if (value == "bf16") {
        in.precision = DType::kBF16;
      } else if (value == "fp16") {
        in.precision = DType::kF16;
      } else {
        throw_user_error("--precision ", value, ": GPU runs use bf16 or fp16");
      }
    } else if (flag == "--activation-checkpointing") {
      in.activation_checkpointing = parse_on_off(flag, value);
    } else if (flag == "--keep-activations") {
      a.keep_auto = value == "auto";
      if (!a.keep_auto && (value.empty() || value.find_first_not_of("+-0123456789") != std::string::npos))
        throw_user_error(flag, " ", value, ": expected an integer or auto");
      in.keep_activations = a.keep_auto ? 0 : parse_int_flag(flag, value, 0);
      keep_given = true;
    } else {
      r.unknown_option();
    }
  }
  if (!overrides.empty() && !config_given)
    throw_user_error("--set ", overrides.front(), " changes a training config: give it with --config RUN.toml");
  if (a.input.keep_activations > a.input.model.n_layer)
    throw_user_error("--keep-activations ", a.input.keep_activations, " exceeds the model's ",
                     a.input.model.n_layer, " blocks");
  if (keep_given && (a.input.keep_activations > 0 || a.keep_auto) && !a.input.activation_checkpointing)
    throw_user_error("--keep-activations ", a.keep_auto ? "auto" : std::to_string(a.input.keep_activations),
                     " needs activation checkpointing on: without it every block keeps its "
                     "activations");
  if (a.input.seq_len > a.input.model.n_positions)
    throw_user_error("--seq-len ", a.input.seq_len, " exceeds the model's n_positions ",
                     a.input.model.n_positions);
  // As parse_config bounds a run's: a micro-batch's largest activation within 2^48 elements.
  if (model::gptj_widest_activation(a.input.model, a.input.micro_batch, a.input.seq_len) >
      model::kMaxElements)
    throw_user_error("--micro-batch ", a.input.micro_batch, " x --seq-len ", a.input.seq_len,
                     ": a micro-batch's activations would pass 2^48 elements");
  return a;
}

std::string run_estimate(const EstimateArgs& args) {
  std::vector<zero::StageEstimate> rows = zero::estimate_memory(args.input, args.offload);
  // "auto": each row as its run would be, with its own max keep (the rows come in the same order
  // for any keep, and max keep does not depend on it).
  if (args.keep_auto) {
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].max_keep_activations <= 0) continue;
      zero::EstimateInput kept = args.input;
      kept.keep_activations = rows[i].max_keep_activations;
      rows[i] = zero::estimate_memory(kept, args.offload)[i];
    }
  }
  std::string out = zero::format_estimate_table(args.input, rows);
  bool any = false;
  for (const zero::StageEstimate& e : rows) any = any || (e.fits_gpu && e.fits_cpu);
  if (args.keep_auto)
    out += "\nmodel.keep_activations = \"auto\": each row keeps its max keep blocks (its activations and\n"
           "total include them), as a run on GPUs of --gpu-mem would; a run uses its GPUs' own memory.\n";
  if (args.input.delayed_update)
    out += "\nzero.delayed_update_from_step: CPU/node of the cpu rows includes a second host copy of\n"
           "each rank's gradient shard, which the delayed update needs.\n";
  out += any ? "\n" : "\nNothing fits: add GPUs, lower --micro-batch or --seq-len, turn activation "
                      "checkpointing on, or try --offload.\n";
  return out;
}

}  // namespace zt::launch
