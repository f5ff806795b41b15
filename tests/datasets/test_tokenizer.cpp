// The GPT-2 BPE tokenizer: encodings against an independent Python reference
// (tests/fixtures/tokenizer_cases.txt from scripts/tokenizer_fixture.py), byte-exact round trips
// of arbitrary bytes, merge order, thread safety, the three file formats and load errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "datasets/bpe_tokenizer.h"
#include "datasets/unicode_classes.h"
#include "runtime/error.h"
#include "tests/support/temp_dir.h"
#include "tests/support/user_error.h"

namespace zt::datasets {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;
using testing::read_file;
using testing::user_error_of;
using testing::write_file;

const std::string kGpt2Dir = std::string(ZT_SOURCE_DIR) + "/tests/fixtures/gpt2-bpe";

// Loaded once for the whole suite (about 0.1 s).
const BpeTokenizer& gpt2() {
  static const BpeTokenizer tok = BpeTokenizer::load(kGpt2Dir);
  return tok;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

struct Case {
  std::string name, text;
  std::vector<int32_t> ids;
};

std::vector<Case> fixture_cases() {
  std::ifstream in(std::string(ZT_SOURCE_DIR) + "/tests/fixtures/tokenizer_cases.txt");
  std::vector<Case> cases;
  std::string line, name;
  while (std::getline(in, line)) {
    if (line.rfind("# ", 0) == 0) {
      name = line.substr(2);
      continue;
    }
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    Case c{name, from_hex(line.substr(0, tab)), {}};
    std::istringstream ids(line.substr(tab + 1));
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

TEST(Tokenizer, KnownEncodings) {
  const BpeTokenizer& tok = gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eos_id(), 50256);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok.encode(" Hello"), (std::vector<int32_t>{18435}));
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.decode(std::vector<int32_t>{15496, 995, 50256}), "Hello world<|endoftext|>");
  // The id names the content: "gpt2-bpe:" and 16 hex digits.
  ASSERT_EQ(tok.id().size(), 9u + 16u);
  EXPECT_EQ(tok.id().substr(0, 9), "gpt2-bpe:");
  EXPECT_EQ(tok.id().find_first_not_of("0123456789abcdef", 9), std::string::npos);
}

TEST(Tokenizer, MatchesThePythonReference) {
  const std::vector<Case> cases = fixture_cases();
  ASSERT_GE(cases.size(), 90u) << "tests/fixtures/tokenizer_cases.txt missing or short";
  const BpeTokenizer& tok = gpt2();
  for (const Case& c : cases) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << "case: " << c.name;
    EXPECT_EQ(tok.decode(c.ids), c.text) << "case: " << c.name;
  }
  // encode_append appends.
  std::vector<int32_t> out{7};
  tok.encode_append("Hello world", out);
  EXPECT_EQ(out, (std::vector<int32_t>{7, 15496, 995}));
}

// Text that mixes ASCII words, multi-byte UTF-8, whitespace runs and random (often invalid) bytes.
std::string mixed_text(uint64_t seed, size_t bytes) {
  std::mt19937_64 rng(seed);
  const char* pieces[] = {" the",
                          " of",
                          "Hello",
                          " world",
                          "'s",
                          "'ll",
                          "n't",
                          " 42",
                          "3.14",
                          "  ",
                          "\n",
                          "\n\n",
                          "\t",
                          " ",
                          ".",
                          ",",
                          "!!",
                          "\xC3\xA9",
                          "\xE4\xB8\xAD",
                          "\xF0\x9F\x98\x80",
                          "\xE3\x80\x80",
                          "\xC2\xA0",
                          "<|endoftext|>",
                          "\xD0\xB6\xD0\xB8"};
  std::string s;
  while (s.size() < bytes) {
    const uint64_t r = rng();
    if (r % 8 == 0) {
      const size_t n = 1 + rng() % 12;  // random bytes: mostly invalid UTF-8
      for (size_t i = 0; i < n; ++i) s += char(rng() & 0xFF);
    } else if (r % 8 == 1) {
      const size_t n = 1 + rng() % 80;  // a long run of letters, sometimes past the heap threshold
      for (size_t i = 0; i < n; ++i) s += char('a' + rng() % 26);
    } else {
      s += pieces[rng() % std::size(pieces)];
    }
  }
  return s;
}

TEST(Tokenizer, RoundTripsAnyBytes) {
  const BpeTokenizer& tok = gpt2();
  size_t total = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const std::string text = mixed_text(seed, 1 << 20);
    const std::vector<int32_t> ids = tok.encode(text);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    ASSERT_EQ(tok.decode(ids), text) << "seed " << seed;
    total += text.size();
  }
  // Uniformly random bytes, and every single byte value on its own.
  std::mt19937_64 rng(99);
  std::string noise(1 << 19, '\0');
  for (char& c : noise) c = char(rng() & 0xFF);
  EXPECT_EQ(tok.decode(tok.encode(noise)), noise);
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, char(b));
    const std::vector<int32_t> ids = tok.encode(one);
    ASSERT_EQ(ids.size(), 1u) << "byte " << b;
    EXPECT_EQ(tok.decode(ids), one);
    EXPECT_EQ(tok.token_bytes(ids[0]), one);
  }
  EXPECT_GT(total + noise.size(), size_t(4) << 20);
}

TEST(Tokenizer, EncodesTheSameFromManyThreads) {
  const BpeTokenizer& tok = gpt2();
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> expect;
  for (uint64_t seed = 10; seed < 14; ++seed) {
    texts.push_back(mixed_text(seed, 1 << 17));
    expect.push_back(tok.encode(texts.back()));
  }
  std::vector<std::vector<std::vector<int32_t>>> got(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t round = 0; round < 3; ++round)
        for (size_t i = 0; i < texts.size(); ++i)
          got[t].push_back(tok.encode(texts[(i + t) % texts.size()]));
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < 4; ++t)
    for (size_t k = 0; k < got[t].size(); ++k)
      EXPECT_EQ(got[t][k], expect[(k % texts.size() + t) % texts.size()])
          << "thread " << t << " run " << k;
}

// GPT-2's vocabulary with a few merges of our own, to pin down the merge order.
BpeTokenizer with_merges(const std::string& name, const std::string& merges) {
  const fs::path d = fresh_dir(name);
  fs::copy_file(fs::path(kGpt2Dir) / "encoder.json", d / "vocab.json");
  write_file(d, "merges.txt", "#version: 0.2\n" + merges);
  return BpeTokenizer::load(d.string());
}

int32_t id_of(const BpeTokenizer& tok, std::string_view token) {
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.token_bytes(id) == token) return id;
  ADD_FAILURE() << "no token " << token;
  return -1;
}

TEST(Tokenizer, MergesLowestRankFirstAtEveryOccurrence) {
  // "a a" merges left to right without overlap: aaaaa -> aa aa a; also in long words (a heap).
  const BpeTokenizer aa = with_merges("aa", "a a\n");
  const int32_t a = id_of(aa, "a"), a2 = id_of(aa, "aa");
  EXPECT_EQ(aa.encode("aaaaa"), (std::vector<int32_t>{a2, a2, a}));
  std::vector<int32_t> want(50, a2);
  want.push_back(a);
  EXPECT_EQ(aa.encode(std::string(101, 'a')), want);

  // The lower rank wins wherever the pairs overlap: b c before a b gives a|bc, else ab|c.
  const BpeTokenizer bc_first = with_merges("bc_first", "b c\na b\n");
  const BpeTokenizer ab_first = with_merges("ab_first", "a b\nb c\n");
  const int32_t b = id_of(aa, "b"), c = id_of(aa, "c"), ab = id_of(aa, "ab"), bc = id_of(aa, "bc");
  EXPECT_EQ(bc_first.encode("abc"), (std::vector<int32_t>{a, bc}));
  EXPECT_EQ(ab_first.encode("abc"), (std::vector<int32_t>{ab, c}));
  std::vector<int32_t> long_bc, long_ab;
  for (int i = 0; i < 30; ++i)
    long_bc.insert(long_bc.end(), {a, bc}), long_ab.insert(long_ab.end(), {ab, c});
  std::string abc30;
  for (int i = 0; i < 30; ++i) abc30 += "abc";
  EXPECT_EQ(bc_first.encode(abc30), long_bc);
  EXPECT_EQ(ab_first.encode(abc30), long_ab);
  EXPECT_EQ(ab_first.encode("cab"), (std::vector<int32_t>{c, ab}));
  EXPECT_EQ(bc_first.encode("b"), (std::vector<int32_t>{b}));

  // Tokenizers with different merges on one thread do not share cached words.
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(bc_first.encode("abc"), (std::vector<int32_t>{a, bc}));
    EXPECT_EQ(ab_first.encode("abc"), (std::vector<int32_t>{ab, c}));
    EXPECT_EQ(gpt2().encode("abc"), (std::vector<int32_t>{39305}));
  }
  EXPECT_NE(aa.id(), gpt2().id());
  EXPECT_NE(bc_first.id(), ab_first.id());
}

TEST(Tokenizer, ReadsAllThreeFileFormatsAlike) {
  const BpeTokenizer& ref = gpt2();
  const std::string vocab = read_file(fs::path(kGpt2Dir) / "encoder.json");
  const std::string merges = read_file(fs::path(kGpt2Dir) / "vocab.bpe");

  const fs::path hf = fresh_dir("vocab_merges");
  write_file(hf, "vocab.json", vocab);
  write_file(hf, "merges.txt", merges);
  const BpeTokenizer a = BpeTokenizer::load(hf.string());

  // tokenizer.json: merges as "a b" strings, then as ["a", "b"] pairs (tokenizers >= 0.20).
  std::string as_strings, as_pairs;
  std::istringstream lines(merges);
  std::string line;
  std::getline(lines, line);  // #version
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (!as_strings.empty()) as_strings += ",", as_pairs += ",\n";
    as_strings += json_quote(line);
    as_pairs.append("[").append(json_quote(line.substr(0, sp))).append(", ");
    as_pairs.append(json_quote(line.substr(sp + 1))).append("]");
  }
  const std::string head =
      "{\"version\": \"1.0\", \"truncation\": null, \"added_tokens\": [{\"id\": 50256, "
      "\"content\": "
      "\"<|endoftext|>\", \"single_word\": false, \"special\": true}],\n \"normalizer\": null, "
      "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
      "true},\n"
      " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"fuse_unk\": "
      "false,\n"
      " \"vocab\": ";
  const fs::path j1 = fresh_dir("json_strings"), j2 = fresh_dir("json_pairs");
  write_file(j1, "tokenizer.json", head + vocab + ",\n \"merges\": [" + as_strings + "]}}\n");
  // The second has <|endoftext|> only among the added tokens.
  std::string vocab_without_eos = vocab;
  const std::string eos_entry = ", \"<|endoftext|>\": 50256";
  ASSERT_NE(vocab_without_eos.find(eos_entry), std::string::npos);
  vocab_without_eos.erase(vocab_without_eos.find(eos_entry), eos_entry.size());
  write_file(j2, "tokenizer.json",
             head + vocab_without_eos + ",\n \"merges\": [" + as_pairs + "]}, \"decoder\": {}}");
  const BpeTokenizer b = BpeTokenizer::load(j1.string());
  const BpeTokenizer c = BpeTokenizer::load(j2.string());

  const std::string text = mixed_text(5, 1 << 16);
  const std::vector<int32_t> ids = ref.encode(text);
  for (const BpeTokenizer* t : {&a, &b, &c}) {
    EXPECT_EQ(t->id(), ref.id());
    EXPECT_EQ(t->vocab_size(), 50257);
    EXPECT_EQ(t->eos_id(), 50256);
    EXPECT_EQ(t->encode(text), ids);
  }
}

TEST(Tokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  const BpeTokenizer& tok = gpt2();
  std::string msg = user_error_of([&] { tok.decode(std::vector<int32_t>{15496, 60000}); });
  EXPECT_NE(msg.find("60000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("50257"), std::string::npos) << msg;
  msg = user_error_of([&] { tok.decode(std::vector<int32_t>{-1}); });
  EXPECT_NE(msg.find("-1"), std::string::npos) << msg;
  EXPECT_EQ(user_error_of([&] { tok.decode(std::vector<int32_t>{50256}); }), "");
}

TEST(Tokenizer, LoadErrorsNameTheFileAndTheProblem) {
  // No such directory.
  std::string msg = user_error_of([] { BpeTokenizer::load("/nonexistent/zt-tokenizer"); });
  EXPECT_NE(msg.find("/nonexistent/zt-tokenizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

  // A directory without tokenizer files; vocab.json without merges.txt.
  const fs::path empty = fresh_dir("empty");
  msg = user_error_of([&] { BpeTokenizer::load(empty.string()); });
  EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;
  const fs::path half = fresh_dir("half");
  fs::copy_file(fs::path(kGpt2Dir) / "encoder.json", half / "vocab.json");
  msg = user_error_of([&] { BpeTokenizer::load(half.string()); });
  EXPECT_NE(msg.find("merges.txt"), std::string::npos) << msg;

  // A merges line that is not two tokens.
  const fs::path bad_line = fresh_dir("bad_line");
  fs::copy_file(fs::path(kGpt2Dir) / "encoder.json", bad_line / "vocab.json");
  write_file(bad_line, "merges.txt", "#version: 0.2\n\xC4\xA0 t\nabc\n");
  msg = user_error_of([&] { BpeTokenizer::load(bad_line.string()); });
  EXPECT_NE(msg.find("merges.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;

  // A merge whose result is not in the vocabulary: "the" removed from vocab.json.
  std::string vocab = read_file(fs::path(kGpt2Dir) / "encoder.json");
  const fs::path missing = fresh_dir("missing");
  const std::string the_entry = "\"the\": 1169, ";
  ASSERT_NE(vocab.find(the_entry), std::string::npos);
  std::string without_the = vocab;
  without_the.erase(without_the.find(the_entry), the_entry.size());
  write_file(missing, "vocab.json", without_the);
  write_file(missing, "merges.txt", "#version: 0.2\nt h\nth e\n");
  msg = user_error_of([&] { BpeTokenizer::load(missing.string()); });
  EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;  // ids now have a gap at 1169
  // The same with the ids kept dense (the last entry takes the freed id).
  std::string dense = without_the;
  const std::string last = "\"<|endoftext|>\": 50256";
  ASSERT_NE(dense.find(last), std::string::npos);
  dense.replace(dense.find(last), last.size(), "\"<|endoftext|>\": 1169");
  write_file(missing, "vocab.json", dense);
  msg = user_error_of([&] { BpeTokenizer::load(missing.string()); });
  EXPECT_NE(msg.find("merges.txt\" line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"the\""), std::string::npos) << msg;

  // A vocabulary without one of the 256 byte tokens, and one that is not JSON.
  const fs::path no_byte = fresh_dir("no_byte");
  std::string no_bang = vocab;
  no_bang.replace(no_bang.find("\"!\": 0"), 6, "\"zt-no-such-token\": 0");
  write_file(no_byte, "vocab.json", no_bang);
  write_file(no_byte, "merges.txt", "#version: 0.2\n");
  msg = user_error_of([&] { BpeTokenizer::load(no_byte.string()); });
  EXPECT_NE(msg.find("byte 33"), std::string::npos) << msg;
  write_file(no_byte, "vocab.json", "{\"a\": 0, \"b\": }");
  msg = user_error_of([&] { BpeTokenizer::load(no_byte.string()); });
  EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
}

TEST(Tokenizer, UnicodeClassTables) {
  using namespace unicode;
  EXPECT_TRUE(is_letter(U'a'));
  EXPECT_TRUE(is_letter(U'\u00e9'));
  EXPECT_TRUE(is_letter(U'\u4e2d'));
  EXPECT_TRUE(is_letter(U'\U00020000'));  // CJK Extension B
  EXPECT_FALSE(is_letter(U'1'));
  EXPECT_FALSE(is_letter(U'\u0301'));  // a combining mark (Mn) is not \p{L}
  EXPECT_TRUE(is_number(U'7'));
  EXPECT_TRUE(is_number(U'\u0663'));
  EXPECT_TRUE(is_number(U'\u216b'));  // Nl
  EXPECT_TRUE(is_number(U'\u00bd'));  // No
  EXPECT_FALSE(is_number(U'x'));
  for (char32_t c :
       {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00a0', U'\u2028', U'\u3000'})
    EXPECT_TRUE(is_space(c)) << uint32_t(c);
  EXPECT_FALSE(is_space(U'\u001c'));  // str.isspace() says yes; White_Space says no
  EXPECT_FALSE(is_space(U'\u200b'));  // zero-width space is not White_Space
  for (auto ranges : {kLetterRanges, kNumberRanges, kSpaceRanges}) {
    ASSERT_FALSE(ranges.empty());
    for (size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_LE(ranges[i].first, ranges[i].last);
      if (i > 0) {
        EXPECT_LT(ranges[i - 1].last + 1, ranges[i].first);
      }
    }
  }
}

}  // namespace
}  // namespace zt::datasets
