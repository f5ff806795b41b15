// `zerotrain prepare`: flags, the GPT-2 tokenizer, and the closing report.
#include "launch/prepare_cmd.h"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include "datasets/bpe_tokenizer.h"
#include "datasets/token_format.h"
#include "launch/flags.h"
#include "runtime/error.h"

namespace zt::launch {

namespace {

double parse_fraction(const std::string& flag, const std::string& text) {
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !(v >= 0 && v < 1))
    throw_user_error(flag, " ", text, ": expected a fraction in [0, 1), e.g. 0.01");
  return v;
}

}  // namespace

std::string prepare_usage_text() {
  return "usage: zerotrain prepare --tokenizer DIR --out DATASET_DIR [options] FILES...\n"
         "\n"
         "Tokenizes documents with the GPT-2 BPE tokenizer in DIR (vocab.json + merges.txt,\n"
         "encoder.json + vocab.bpe, or tokenizer.json), appends <|endoftext|> after each, and\n"
         "writes HDF5 shards (train-*.h5, val-*.h5) and manifest.toml to DATASET_DIR. Train on it\n"
         "with data.source = \"hdf5\" and data.path = DATASET_DIR (see docs/data.md).\n"
         "\n"
         "options:\n"
         "  --format text|jsonl   text: each file is one document (default); jsonl: each line is a\n"
         "                        JSON object and one document\n"
         "  --jsonl-key KEY       the jsonl field holding the text (default \"text\")\n"
         "  --val-fraction F      share of documents for the validation split (default 0.01)\n"
         "  --seed N              seed of the validation split (default 1234)\n"
         "  --shard-tokens N      tokens per shard before a new one starts (default 100M)\n"
         "  --compress LEVEL      gzip level 1-9 for the token data (default 0: none, fastest reads)\n"
         "  --threads N           tokenizer threads (default: one per core)\n"
         "  --overwrite           replace the dataset already in DATASET_DIR (kept until the new\n"
         "                        one is complete)\n"
         "  --quiet               no progress line\n"
         "\n"
         "example:\n"
         "  zerotrain prepare --tokenizer tests/fixtures/gpt2-bpe --out data/mytext books/*.txt\n"
         "  zerotrain train examples/tiny-cpu.toml --set data.source=hdf5 --set data.path=data/mytext \\\n"
         "      --set model.vocab_size=50257\n";
}

PrepareArgs parse_prepare_args(const std::vector<std::string>& args) {
  PrepareArgs out;
  datasets::PrepareOptions& o = out.options;
  FlagReader r("prepare", args);
  while (r.next()) {
    if (r.is_help()) {
      out.help = true;
      return out;
    }
    if (r.arg() == "--overwrite") {
      o.overwrite = true;
      continue;
    }
    if (r.arg() == "--quiet") {
      o.progress = false;
      continue;
    }
    if (!r.is_flag()) {  // an input file ("-" and "-x" too)
      o.inputs.push_back(r.arg());
      continue;
    }
    const std::string a = r.flag();
    const std::string value = r.value();
    if (a == "--tokenizer") {
      out.tokenizer_dir = value;
    } else if (a == "--out") {
      o.out_dir = value;
    } else if (a == "--format") {
      if (value == "text") o.format = datasets::InputFormat::kText;
      else if (value == "jsonl") o.format = datasets::InputFormat::kJsonl;
      else throw_user_error("--format ", value, ": use text or jsonl");
    } else if (a == "--jsonl-key") {
      o.jsonl_key = value;
    } else if (a == "--val-fraction") {
      o.val_fraction = parse_fraction(a, value);
    } else if (a == "--seed") {
      o.split_seed = parse_int_flag(a, value, 0, INT64_MAX, true);
    } else if (a == "--shard-tokens") {
      o.shard_tokens = parse_int_flag(a, value, 1, INT64_MAX, true);
    } else if (a == "--compress") {
      o.compression = int(parse_int_flag(a, value, 0, INT32_MAX, true));
      if (o.compression > 9) throw_user_error("--compress ", value, ": use a gzip level 0-9");
    } else if (a == "--threads") {
      o.threads = int(parse_int_flag(a, value, 1, 4096, true));  // as train.threads
    } else {
      r.unknown_option();
    }
  }
  if (out.tokenizer_dir.empty())
    throw_user_error("`zerotrain prepare` needs --tokenizer DIR (a folder with vocab.json + merges.txt or "
                     "encoder.json + vocab.bpe)");
  if (o.out_dir.empty()) throw_user_error("`zerotrain prepare` needs --out DATASET_DIR");
  if (o.inputs.empty()) throw_user_error("`zerotrain prepare` needs input FILES to tokenize");
  return out;
}

std::string run_prepare(const PrepareArgs& args) {
  const datasets::BpeTokenizer tok = datasets::BpeTokenizer::load(args.tokenizer_dir);
  datasets::TokenizerRef ref;
  ref.id = tok.id();
  ref.vocab_size = tok.vocab_size();
  ref.eos_id = tok.eos_id();
  ref.encode_append = [&tok](std::string_view text, std::vector<int32_t>& out) { tok.encode_append(text, out); };
  const datasets::PrepareSummary s = datasets::prepare_dataset(args.options, ref);
  const datasets::Manifest& m = s.manifest;
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "prepared %s: %lld documents, %lld train tokens in %zu shards, %lld val tokens in %zu shards "
                "(%s, %s) from %.1f MB in %.1f s\n",
                args.options.out_dir.c_str(), (long long)s.documents, (long long)m.tokens(datasets::Split::kTrain),
                m.train.size(), (long long)m.tokens(datasets::Split::kVal), m.val.size(), m.tokenizer.c_str(),
                std::string(datasets::token_dtype_name(m.token_dtype)).c_str(), double(s.bytes_read) / 1e6,
                s.seconds);
  return std::string(buf) + "train on it with: --set data.source=hdf5 --set data.path=" + args.options.out_dir +
         " (model.vocab_size >= " + std::to_string(m.vocab_size) + ")\n";
}

}  // namespace zt::launch
