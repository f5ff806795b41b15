// `zerotrain tokenize`: GPT-2 BPE token ids of stdin (or, with --decode, the text of ids).
#include "launch/tokenize_cmd.h"

#include <algorithm>
#include <charconv>
#include <istream>
#include <ostream>
#include <sstream>

#include "datasets/bpe_tokenizer.h"
#include "launch/flags.h"
#include "runtime/error.h"

namespace zt::launch {

std::string tokenize_usage_text() {
  return "usage: zerotrain tokenize --tokenizer DIR [--decode] < INPUT\n"
         "\n"
         "Encodes all of stdin as one text with the GPT-2 byte-level BPE tokenizer and prints the\n"
         "token ids separated by spaces, then a newline. No end-of-text id is added, and\n"
         "\"<|endoftext|>\" in the input is encoded as ordinary text.\n"
         "\n"
         "  --tokenizer DIR  a directory holding vocab.json + merges.txt, encoder.json + "
         "vocab.bpe,\n"
         "                   or a Hugging Face tokenizer.json\n"
         "  --decode         read whitespace-separated ids from stdin and print their text\n"
         "\n"
         "example:\n"
         "  echo -n 'Hello world' | zerotrain tokenize --tokenizer tests/fixtures/gpt2-bpe\n"
         "  15496 995\n";
}

TokenizeArgs parse_tokenize_args(const std::vector<std::string>& args) {
  TokenizeArgs a;
  // One flag and one switch: tokenize names them in its own messages instead of pointing to --help.
  FlagReader r("tokenize", args);
  while (r.next()) {
    if (r.is_help()) {
      a.help = true;
      return a;
    }
    if (r.arg() == "--decode") {
      a.decode = true;
    } else if (r.flag() == "--tokenizer") {
      if (!r.has_value())
        throw_user_error(
            "--tokenizer needs a directory: --tokenizer DIR (e.g. --tokenizer "
            "tests/fixtures/gpt2-bpe)");
      a.tokenizer_dir = r.value();
    } else {
      throw_user_error("unknown argument \"", r.arg(),
                       "\" for `zerotrain tokenize`: the options are "
                       "--tokenizer DIR, --decode and --help");
    }
  }
  if (a.tokenizer_dir.empty())
    throw_user_error(
        "`zerotrain tokenize` needs --tokenizer DIR (a directory with vocab.json + "
        "merges.txt, encoder.json + vocab.bpe, or tokenizer.json)");
  return a;
}

void run_tokenize(const TokenizeArgs& args, std::istream& in, std::ostream& out) {
  const datasets::BpeTokenizer tok = datasets::BpeTokenizer::load(args.tokenizer_dir);
  std::ostringstream buffer;
  buffer << in.rdbuf();  // sets failbit on empty input, which is fine: the text is then ""
  const std::string input = std::move(buffer).str();

  if (!args.decode) {
    const std::vector<int32_t> ids = tok.encode(input);
    std::string text;
    text.reserve(ids.size() * 6 + 1);
    char num[16];
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) text += ' ';
      const auto r = std::to_chars(num, num + sizeof num, ids[i]);
      text.append(num, r.ptr);
    }
    text += '\n';
    out.write(text.data(), std::streamsize(text.size()));
    return;
  }

  std::vector<int32_t> ids;
  size_t pos = 0, count = 0;
  auto is_space = [](char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
  };
  while (pos < input.size()) {
    while (pos < input.size() && is_space(input[pos])) ++pos;
    if (pos >= input.size()) break;
    size_t end = pos;
    while (end < input.size() && !is_space(input[end])) ++end;
    ++count;
    long long id = 0;
    const auto r = std::from_chars(input.data() + pos, input.data() + end, id);
    if (r.ptr != input.data() + end ||
        (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
      throw_user_error("--decode: \"", input.substr(pos, std::min<size_t>(end - pos, 40)),
                       "\" (item ", count,
                       " of the input) is not a token id: the input must be integers "
                       "separated by whitespace");
    if (r.ec != std::errc() || id < 0 || id >= tok.vocab_size())
      throw_user_error("--decode: token id ", input.substr(pos, std::min<size_t>(end - pos, 40)),
                       " (item ", count, " of the input) is outside the vocabulary [0, ",
                       tok.vocab_size(), ") of tokenizer ", tok.id());
    ids.push_back(int32_t(id));
    pos = end;
  }
  const std::string text = tok.decode(ids);
  out.write(text.data(), std::streamsize(text.size()));
}

}  // namespace zt::launch
