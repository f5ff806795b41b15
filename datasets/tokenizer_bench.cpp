// tokenizer_bench DIR [FILE] [THREADS]: BpeTokenizer::encode throughput (MB/s of input text) on
// one thread and on THREADS threads (default: the hardware's), over FILE or, without one, about
// 32 MB of generated English-like text. Prints figures; asserts nothing beyond equal output.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "datasets/bpe_tokenizer.h"

namespace {

using zt::datasets::BpeTokenizer;

// Documents of words drawn Zipf-like from the vocabulary's " word" tokens, with punctuation,
// digits, line and paragraph breaks: a stand-in for web text when no FILE is given.
std::string generated_text(const BpeTokenizer& tok, size_t bytes) {
  std::vector<std::string> words;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    const std::string_view t = tok.token_bytes(id);
    if (t.size() >= 2 && t[0] == ' ' && std::all_of(t.begin() + 1, t.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        }))
      words.emplace_back(t);
  }
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::string text;
  text.reserve(bytes + 4096);
  const char* punct[] = {".", ",", ";", "!", "?", ":", " -", "'s", "n't"};
  while (text.size() < bytes) {
    const int sentences = 3 + int(u(rng) * 8);
    for (int s = 0; s < sentences; ++s) {
      const int n = 5 + int(u(rng) * 20);
      for (int w = 0; w < n; ++w) {
        // Zipf-like rank: frequent words dominate, as in real text.
        const size_t r = size_t(std::pow(double(words.size()), u(rng) * u(rng))) - 1;
        const std::string& word = words[std::min(r, words.size() - 1)];
        text.append(word, text.empty() || text.back() == '\n' ? 1 : 0);  // lines start a word
        const double x = u(rng);
        if (x < 0.08)
          text += punct[size_t(u(rng) * 9)];
        else if (x < 0.10)
          text.append(" ").append(std::to_string(int(u(rng) * 2030)));
      }
      text += ".";
      if (u(rng) < 0.2) text += "\n";
    }
    text += "\n\n";
  }
  return text;
}

// Splits text into n pieces (documents or lines) where the tokenization of the pieces equals
// that of the whole: after a "\n" that follows and precedes printable ASCII. A longer run of
// whitespace would end a piece differently ("\s+(?!\S)" takes all of it at the end of a text).
std::vector<std::string_view> split(std::string_view text, int n) {
  auto graphic = [](char c) { return c > ' ' && c < 0x7F; };
  std::vector<std::string_view> parts;
  size_t begin = 0;
  for (int i = 1; i < n; ++i) {
    size_t cut = std::max(begin + 2, text.size() * size_t(i) / size_t(n));
    while (cut < text.size() &&
           !(text[cut - 1] == '\n' && graphic(text[cut - 2]) && graphic(text[cut])))
      ++cut;
    cut = std::min(cut, text.size());
    parts.push_back(text.substr(begin, cut - begin));
    begin = cut;
  }
  parts.push_back(text.substr(begin));
  return parts;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER_DIR [FILE|-] [THREADS]\n");
    return 2;
  }
  try {
    const BpeTokenizer tok = BpeTokenizer::load(argv[1]);
    std::string text;
    if (argc >= 3 && std::string(argv[2]) != "-") {
      std::ifstream in(argv[2], std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "tokenizer_bench: cannot open %s\n", argv[2]);
        return 2;
      }
      std::ostringstream ss;
      ss << in.rdbuf();
      text = std::move(ss).str();
    } else {
      text = generated_text(tok, size_t(32) << 20);
    }
    const int threads =
        argc >= 4 ? std::atoi(argv[3]) : int(std::max(1u, std::thread::hardware_concurrency()));
    const double mb = double(text.size()) / 1e6;
    std::printf("tokenizer %s, text %.1f MB (%s)\n", tok.id().c_str(), mb,
                argc >= 3 && std::string(argv[2]) != "-" ? argv[2] : "generated");

    // Each run starts fresh threads, so every thread begins with an empty word cache; the best of
    // three runs is reported (the machine may be shared).
    auto timed = [&](const std::vector<std::string_view>& parts, std::vector<int32_t>& ids) {
      std::vector<std::vector<int32_t>> out(parts.size());
      std::vector<std::thread> pool;
      double t = 1e30;
      for (int run = 0; run < 3; ++run) {
        pool.clear();
        const auto t0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i < parts.size(); ++i)
          pool.emplace_back([&, i] { out[i] = tok.encode(parts[i]); });
        for (auto& th : pool) th.join();
        t = std::min(t, seconds_since(t0));
      }
      ids.clear();
      for (const auto& o : out) ids.insert(ids.end(), o.begin(), o.end());
      return t;
    };
    std::vector<int32_t> ids, joined;
    const double t1 = timed({text}, ids);
    std::printf("1 thread:  %8.2f MB/s  (%zu tokens, %.2f bytes/token, %.2f s)\n", mb / t1,
                ids.size(), double(text.size()) / double(ids.size()), t1);
    const double tn = timed(split(text, threads), joined);
    std::printf("%d threads: %8.2f MB/s  (%.2fx; output %s the 1-thread output)\n", threads,
                mb / tn, t1 / tn, joined == ids ? "equals" : "DIFFERS FROM");
    if (tok.decode(ids) != text) {
      std::fprintf(stderr, "tokenizer_bench: decode(encode(text)) != text\n");
      return 1;
    }
    return joined == ids ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 2;
  }
}
