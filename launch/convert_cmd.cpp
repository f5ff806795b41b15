// `zerotrain convert`: flags, and the two directions through model::WeightSource.
#include "launch/convert_cmd.h"

#include <sstream>

#include "launch/flags.h"
#include "launch/init_weights.h"
#include "model/hf_gptj.h"
#include "model/params.h"
#include "runtime/error.h"
#include "runtime/timer.h"
#include "zero/weights.h"

namespace zt::launch {

std::string convert_usage_text() {
  return "usage: zerotrain convert hf-to-zt --in HF_DIR --out CHECKPOINT_DIR [--overwrite]\n"
         "       zerotrain convert zt-to-hf --in CHECKPOINT --out HF_DIR [--dtype fp32|bf16|fp16]\n"
         "                                  [--overwrite]\n"
         "\n"
         "hf-to-zt reads Hugging Face GPT-J weights (config.json with model.safetensors or a\n"
         "sharded model.safetensors.index.json; fp32, fp16 or bf16; the old attn.bias and\n"
         "attn.masked_bias buffers are skipped) and writes a weights-only zerotrain checkpoint.\n"
         "Train from it (or straight from the Hugging Face folder) with model.init_from = \"DIR\".\n"
         "\n"
         "zt-to-hf reads a zerotrain checkpoint (a step-NNNNNNNN folder, a train.checkpoint_dir\n"
         "whose `latest` names one, or an hf-to-zt output) saved at any world size and ZeRO stage,\n"
         "and writes model.safetensors and config.json for GPTJForCausalLM.from_pretrained. The\n"
         "weights are the fp32 master weights, written in --dtype (default fp32: exact).\n"
         "\n"
         "Output folders are written under a temporary name and renamed when complete; an existing\n"
         "one is replaced only with --overwrite, and only when it holds nothing but an earlier\n"
         "output of the same kind (a checkpoint, or config.json and safetensors files).\n"
         "\n"
         "examples:\n"
         "  zerotrain convert hf-to-zt --in models/gpt-j-6b --out ckpt/gptj-6b-init\n"
         "  zerotrain convert zt-to-hf --in runs/ckpt --out exported --dtype bf16\n";
}

ConvertArgs parse_convert_args(const std::vector<std::string>& args) {
  ConvertArgs out;
  FlagReader r("convert", args);
  while (r.next()) {
    if (r.is_help()) {
      out.help = true;
      return out;
    }
    if (r.arg() == "--overwrite") {
      out.overwrite = true;
      continue;
    }
    if (r.is_flag()) {
      // Named before its value is looked for: a trailing unknown flag is unknown, not valueless.
      const std::string flag = r.flag();
      if (flag != "--in" && flag != "--out" && flag != "--dtype") r.unknown_option();
      const std::string value = r.value();
      if (flag == "--in") {
        out.in_dir = value;
      } else if (flag == "--out") {
        out.out_dir = value;
      } else {  // --dtype
        if (!parse_dtype(value, &out.dtype) || out.dtype == DType::kF64)
          throw_user_error("--dtype ", value, ": use fp32, bf16 or fp16");
      }
      continue;
    }
    // The one positional argument: the direction.
    const std::string& a = r.arg();
    if (!out.direction.empty()) r.unexpected_argument();
    if (a != "hf-to-zt" && a != "zt-to-hf")
      throw_user_error("`zerotrain convert ", a, "`: the directions are hf-to-zt and zt-to-hf");
    out.direction = a;
  }
  if (out.direction.empty())
    throw_user_error("`zerotrain convert` needs a direction: hf-to-zt or zt-to-hf (see `zerotrain convert --help`)");
  if (out.in_dir.empty()) throw_user_error("`zerotrain convert ", out.direction, "` needs --in DIR");
  if (out.out_dir.empty()) throw_user_error("`zerotrain convert ", out.direction, "` needs --out DIR");
  if (out.direction == "hf-to-zt" && out.dtype != DType::kF32)
    throw_user_error("--dtype is for zt-to-hf: hf-to-zt keeps the weights as fp32 master weights");
  return out;
}

std::string run_convert(const ConvertArgs& args) {
  const Timer timer;
  std::unique_ptr<model::WeightSource> in;
  if (args.direction == "hf-to-zt") {
    const std::string what = "--in \"" + args.in_dir + "\"";
    if (!model::is_hf_gptj_dir(args.in_dir)) {
      in = open_weights(args.in_dir, what);  // throws, saying what the folder holds, unless it is a checkpoint
      throw_user_error(what, " is a ", in->describe(), ", not Hugging Face weights: hf-to-zt reads "
                       "Hugging Face folders (a zerotrain checkpoint goes the other way, with zt-to-hf)");
    }
    in = model::open_hf_gptj(args.in_dir);
    zero::save_weights_checkpoint(args.out_dir, *in, DType::kF32, args.overwrite);
  } else {
    in = open_weights(args.in_dir, "--in \"" + args.in_dir + "\"");
    model::write_hf_gptj(args.out_dir, *in, args.dtype, args.overwrite);
  }
  const model::GptjConfig& c = in->config();
  std::ostringstream report;
  report << "converted " << in->describe() << ": " << model::gptj_param_count(c) << " parameters ("
         << c.n_layer << " layers, d_model " << c.d_model << ", vocab " << c.vocab_size << ")\n"
         << "wrote " << (args.direction == "hf-to-zt" ? "zerotrain checkpoint " : "Hugging Face GPT-J ")
         << args.out_dir;
  if (args.direction == "zt-to-hf") report << " (model.safetensors in " << dtype_name(args.dtype) << ", config.json)";
  report << " in " << timer.seconds() << " s\n";
  if (args.direction == "hf-to-zt")
    report << "train from it with model.init_from = \"" << args.out_dir << "\"\n";
  return report.str();
}

}  // namespace zt::launch
