// The GPT-2 byte-level BPE tokenizer: file loading, the hand-written pre-tokeniser, rank-ordered
// merges with a per-thread word cache, and decoding.
#include "datasets/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <unordered_map>

#include "runtime/json_reader.h"
#include "datasets/unicode_classes.h"
#include "runtime/error.h"
#include "runtime/file_io.h"
#include "runtime/rng.h"
#include "runtime/text.h"

namespace zt::datasets {

namespace {

constexpr const char* kEndOfText = "<|endoftext|>";

// ---------------------------------------------------------------------------------------------
// Files

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 onwards in byte order, so every token is a printable string in the files.
std::array<uint32_t, 256> bytes_to_unicode() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? b : next++;
  }
  return map;
}

// ---------------------------------------------------------------------------------------------
// Hashing

// For the word cache: reads 8 bytes at a time.
uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = fmix64(h ^ w);
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = fmix64(h ^ w ^ 0xA5A5A5A5ULL);
  }
  return h;
}

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ULL;
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  }
  void u32(uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 24)};
    bytes(b, 4);
  }
};

// ---------------------------------------------------------------------------------------------
// Character classes of the pre-tokeniser

enum CharClass : uint8_t { kLetter = 0, kNumber = 1, kSpace = 2, kOther = 3 };

CharClass classify_slow(uint32_t cp) {
  if (unicode::is_letter(cp)) return kLetter;
  if (unicode::is_number(cp)) return kNumber;
  if (unicode::is_space(cp)) return kSpace;
  return kOther;
}

// Classes of the Basic Multilingual Plane by direct lookup (64 KiB, built once); the rare code
// points above it go through the binary searches.
const std::array<uint8_t, 0x10000>& bmp_classes() {
  static const std::array<uint8_t, 0x10000> table = [] {
    std::array<uint8_t, 0x10000> t{};
    for (uint32_t cp = 0; cp < 0x10000; ++cp) t[cp] = classify_slow(cp);
    return t;
  }();
  return table;
}

// Class and length in bytes of the code point at p; a byte that begins no well-formed UTF-8
// sequence is a one-byte code point of class kOther (so any byte string can be encoded).
inline CharClass next_class(const unsigned char* p, const unsigned char* end, size_t* len,
                            const std::array<uint8_t, 0x10000>& bmp) {
  if (*p < 0x80) {
    *len = 1;
    return CharClass(bmp[*p]);
  }
  uint32_t cp;
  const size_t n = decode_utf8(p, end, &cp);
  if (n == 0) {
    *len = 1;
    return kOther;
  }
  *len = n;
  return cp < 0x10000 ? CharClass(bmp[cp]) : classify_slow(cp);
}

// Splits text into the words of the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// calling word(begin, length) for each, in order; the words cover the text exactly.
template <class F>
void split_words(std::string_view text, F&& word) {
  const auto& bmp = bmp_classes();
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char* end = base + text.size();
  const unsigned char* p = base;
  while (p < end) {
    const unsigned char* start = p;
    // Contractions, case-sensitive, only where a word starts.
    if (*p == '\'' && p + 1 < end) {
      const unsigned char c1 = p[1];
      size_t n = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        n = 2;
      } else if (p + 2 < end && ((c1 == 'r' && p[2] == 'e') || (c1 == 'v' && p[2] == 'e') ||
                                 (c1 == 'l' && p[2] == 'l'))) {
        n = 3;
      }
      if (n != 0) {
        word(size_t(start - base), n);
        p += n;
        continue;
      }
    }
    size_t len;
    CharClass cls = next_class(p, end, &len, bmp);
    if (*p == ' ' && p + 1 < end) {
      // " ?\p{L}+" and friends: one ASCII space joins the run of letters, numbers or other
      // characters that follows it.
      size_t len1;
      const CharClass next = next_class(p + 1, end, &len1, bmp);
      if (next != kSpace) {
        p += 1;
        cls = next;
        len = len1;
      }
    }
    if (cls != kSpace) {
      p += len;
      while (p < end) {
        const CharClass c = next_class(p, end, &len, bmp);
        if (c != cls) break;
        p += len;
      }
      word(size_t(start - base), size_t(p - start));
      continue;
    }
    // A run of whitespace. "\s+(?!\S)" takes all of it at the end of the text, else all but its
    // last code point (which may then start " word"); a run of one is taken by "\s+".
    const unsigned char* last = p;
    p += len;
    size_t count = 1;
    while (p < end) {
      const CharClass c = next_class(p, end, &len, bmp);
      if (c != kSpace) break;
      last = p;
      p += len;
      ++count;
    }
    if (p < end && count > 1) p = last;
    word(size_t(start - base), size_t(p - start));
  }
}

// ---------------------------------------------------------------------------------------------
// Merge table: (left id, right id) -> (rank, merged id), open addressing.

class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t merged = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t(0);

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    table_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Inserts or overwrites (a later duplicate merge wins, as in GPT-2's dict of ranks).
  void put(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    const uint64_t key = pack(a, b);
    size_t i = fmix64(key) & mask_;
    while (table_[i].key != kEmpty && table_[i].key != key) i = (i + 1) & mask_;
    table_[i] = Entry{key, rank, merged};
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = pack(a, b);
    size_t i = fmix64(key) & mask_;
    for (;;) {
      const Entry& e = table_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  std::vector<Entry> table_;
  size_t mask_ = 0;
};

std::atomic<uint64_t> g_next_serial{1};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::vector<std::string> tokens;  // id -> raw bytes
  std::array<int32_t, 256> byte_token{};
  MergeTable merges;
  int32_t eos = -1;
  std::string id;
  uint64_t serial = 0;  // tells the per-thread caches of different tokenizers apart

  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
};

namespace {

// Merges word's bytes by rank, as GPT-2's encoder does: while some adjacent pair has a rank, the
// pair of lowest rank is merged at each of its occurrences, left to right, not overlapping.
// Short words scan all pairs each round; long ones keep the candidate pairs in a heap ordered by
// (rank, position), which merges in the same order in O(n log n).
constexpr size_t kHeapFromBytes = 48;

struct BpeScratch {
  std::vector<int32_t> ids, prev, next;
  std::vector<uint64_t> heap;  // (rank << 32) | position of the left symbol
  std::vector<char> dead;      // symbol merged into its left neighbour
};

void bpe_short(const BpeTokenizer::Impl& t, std::vector<int32_t>& ids) {
  size_t n = ids.size();
  while (n >= 2) {
    const MergeTable::Entry* best = nullptr;
    for (size_t i = 0; i + 1 < n; ++i) {
      const MergeTable::Entry* e = t.merges.find(ids[i], ids[i + 1]);
      if (e != nullptr && (best == nullptr || e->rank < best->rank)) best = e;
    }
    if (best == nullptr) break;
    const int32_t a = int32_t(best->key >> 32), b = int32_t(uint32_t(best->key));
    size_t w = 0;
    for (size_t i = 0; i < n;) {
      if (i + 1 < n && ids[i] == a && ids[i + 1] == b) {
        ids[w++] = best->merged;
        i += 2;
      } else {
        ids[w++] = ids[i++];
      }
    }
    n = w;
  }
  ids.resize(n);
}

void bpe_long(const BpeTokenizer::Impl& t, BpeScratch& s) {
  const int32_t n = int32_t(s.ids.size());
  s.prev.resize(size_t(n));
  s.next.resize(size_t(n));
  for (int32_t i = 0; i < n; ++i)
    s.prev[size_t(i)] = i - 1, s.next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  s.heap.clear();
  const auto greater = std::greater<uint64_t>();
  auto push = [&](int32_t i) {
    const int32_t j = s.next[size_t(i)];
    if (j < 0) return;
    if (const MergeTable::Entry* e = t.merges.find(s.ids[size_t(i)], s.ids[size_t(j)])) {
      s.heap.push_back((uint64_t(uint32_t(e->rank)) << 32) | uint32_t(i));
      std::push_heap(s.heap.begin(), s.heap.end(), greater);
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<char>& dead = s.dead;
  dead.assign(size_t(n), 0);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), greater);
    const uint64_t top = s.heap.back();
    s.heap.pop_back();
    const int32_t i = int32_t(uint32_t(top)), rank = int32_t(top >> 32);
    if (dead[size_t(i)]) continue;
    const int32_t j = s.next[size_t(i)];
    if (j < 0) continue;
    const MergeTable::Entry* e = t.merges.find(s.ids[size_t(i)], s.ids[size_t(j)]);
    // Stale: the pair at i changed since this candidate was pushed.
    if (e == nullptr || e->rank != rank) continue;
    s.ids[size_t(i)] = e->merged;
    dead[size_t(j)] = 1;
    const int32_t k = s.next[size_t(j)];
    s.next[size_t(i)] = k;
    if (k >= 0) s.prev[size_t(k)] = i;
    if (s.prev[size_t(i)] >= 0) push(s.prev[size_t(i)]);
    push(i);
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0 && i < n; i = s.next[size_t(i)]) s.ids[w++] = s.ids[size_t(i)];
  s.ids.resize(w);
}

// A per-thread cache of word encodings: open addressing over arenas of key bytes and ids;
// cleared when full. Owned by one tokenizer at a time (its serial).
class WordCache {
 public:
  static constexpr size_t kSlots = size_t(1) << 16;
  static constexpr size_t kMaxEntries = kSlots / 2;
  static constexpr size_t kMaxWordBytes = 64;

  void claim(uint64_t serial) {
    if (serial_ != serial) {
      serial_ = serial;
      clear();
    }
  }
  // Appends the cached ids of word to out; false when absent.
  bool lookup(std::string_view word, uint64_t h, std::vector<int32_t>& out) const {
    if (slots_.empty()) return false;
    size_t i = h & (kSlots - 1);
    for (;;) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return false;
      if (s.hash == h && s.key_len == word.size() &&
          std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
        return true;
      }
      i = (i + 1) & (kSlots - 1);
    }
  }
  void insert(std::string_view word, uint64_t h, std::span<const int32_t> ids) {
    if (slots_.empty()) slots_.assign(kSlots, Slot{});
    if (entries_ >= kMaxEntries) clear();
    size_t i = h & (kSlots - 1);
    while (slots_[i].key_len != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = Slot{h, uint32_t(keys_.size()), uint32_t(ids_.size()), uint16_t(word.size()),
                     uint16_t(ids.size())};
    keys_.append(word);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    ++entries_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, ids_off = 0;
    uint16_t key_len = 0, ids_len = 0;  // key_len 0: empty (words of one byte are not cached)
  };
  void clear() {
    if (!slots_.empty()) std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    entries_ = 0;
  }
  uint64_t serial_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t entries_ = 0;
};

}  // namespace

void BpeTokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  thread_local BpeScratch scratch;
  scratch.ids.resize(word.size());
  for (size_t i = 0; i < word.size(); ++i)
    scratch.ids[i] = byte_token[static_cast<unsigned char>(word[i])];
  if (word.size() < kHeapFromBytes)
    bpe_short(*this, scratch.ids);
  else
    bpe_long(*this, scratch);
  out.insert(out.end(), scratch.ids.begin(), scratch.ids.end());
}

void BpeTokenizer::Impl::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  thread_local WordCache cache;
  cache.claim(serial);
  split_words(text, [&](size_t begin, size_t len) {
    const std::string_view word = text.substr(begin, len);
    if (len == 1) {
      out.push_back(byte_token[static_cast<unsigned char>(word[0])]);
      return;
    }
    if (len > WordCache::kMaxWordBytes) {
      bpe(word, out);
      return;
    }
    const uint64_t h = hash_bytes(word);
    if (cache.lookup(word, h, out)) return;
    const size_t before = out.size();
    bpe(word, out);
    cache.insert(word, h, std::span<const int32_t>(out).subspan(before));
  });
}

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

struct RawFiles {
  std::vector<std::pair<std::string, int64_t>> vocab;       // token (mapped form) -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<size_t> merge_lines;                          // source line of each merge
  std::string vocab_file, merges_file;
};

// Reads the JSON file at path with read(reader), which must consume its one top-level value;
// a problem in the JSON becomes a UserError naming the file, line and column.
template <class F>
void read_json_file(const std::filesystem::path& path, F&& read) {
  const std::string text = read_file(path, "tokenizer file");
  try {
    JsonReader r(text);
    read(r);
    if (!r.at_end()) r.fail("unexpected text after the top-level value");
  } catch (const JsonError& e) {
    throw_user_error("tokenizer file \"", path.string(), "\" is not valid here (line ", e.line(),
                     ", column ", e.column(), "): ", e.problem());
  }
}

void read_vocab_json(JsonReader& r, RawFiles& raw) {
  r.object([&](const std::string& key) { raw.vocab.emplace_back(key, r.integer()); });
}

void read_merges_txt(const std::filesystem::path& path, RawFiles& raw) {
  const std::string text = read_file(path, "tokenizer file");
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view l(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (line == 1 && l.starts_with("#version")) continue;
    if (l.empty()) continue;
    const size_t sp = l.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == l.size() ||
        l.find(' ', sp + 1) != std::string_view::npos)
      throw_user_error("tokenizer file \"", path.string(), "\" line ", line,
                       ": a merge must be two tokens separated by one space, got \"", l, "\"");
    raw.merges.emplace_back(std::string(l.substr(0, sp)), std::string(l.substr(sp + 1)));
    raw.merge_lines.push_back(line);
  }
}

void read_tokenizer_json(const std::filesystem::path& path, RawFiles& raw) {
  bool have_model = false, have_vocab = false, have_merges = false;
  std::vector<std::pair<std::string, int64_t>> added;
  read_json_file(path, [&](JsonReader& r) {
    r.object([&](const std::string& key) {
      if (key == "model") {
        have_model = true;
        r.object([&](const std::string& mkey) {
          if (mkey == "type") {
            const std::string type = r.string();
            if (type != "BPE") r.fail("model.type is \"" + type + "\", expected \"BPE\"");
          } else if (mkey == "vocab") {
            have_vocab = true;
            read_vocab_json(r, raw);
          } else if (mkey == "merges") {
            have_merges = true;
            r.array([&] {
              // "a b" (older files) or ["a", "b"] (tokenizers >= 0.20).
              if (r.peek() == '[') {
                r.expect('[');
                std::string a = r.string();
                r.expect(',');
                std::string b = r.string();
                r.expect(']');
                raw.merges.emplace_back(std::move(a), std::move(b));
              } else {
                const std::string m = r.string();
                const size_t sp = m.find(' ');
                if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
                    m.find(' ', sp + 1) != std::string::npos)
                  r.fail("merge \"" + m + "\" is not two tokens separated by one space");
                raw.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
              }
              raw.merge_lines.push_back(0);
            });
          } else {
            r.skip_value();
          }
        });
      } else if (key == "added_tokens") {
        r.array([&] {
          std::string content;
          int64_t id = -1;
          r.object([&](const std::string& akey) {
            if (akey == "content")
              content = r.string();
            else if (akey == "id")
              id = r.integer();
            else
              r.skip_value();
          });
          added.emplace_back(std::move(content), id);
        });
      } else {
        r.skip_value();
      }
    });
  });
  if (!have_model || !have_vocab || !have_merges)
    throw_user_error("tokenizer file \"", path.string(),
                     "\" has no model.vocab and model.merges: "
                     "is it a byte-level BPE tokenizer.json?");
  // Added tokens that the model's vocabulary lacks. Their content is plain text, while vocabulary
  // entries are written in bytes_to_unicode form: map it the same way.
  const std::array<uint32_t, 256> b2u = bytes_to_unicode();
  std::unordered_map<std::string, int64_t> have;
  for (const auto& [tok, id] : raw.vocab) have.emplace(tok, id);
  for (const auto& [content, id] : added) {
    std::string mapped;
    for (char c : content) append_utf8(mapped, b2u[static_cast<unsigned char>(c)]);
    auto it = have.find(mapped);
    if (it == have.end())
      raw.vocab.emplace_back(mapped, id);
    else if (it->second != id)
      throw_user_error("tokenizer file \"", path.string(), "\": added token \"", content,
                       "\" has id ", id, " but model.vocab gives it ", it->second);
  }
}

// The raw bytes of a token written in bytes_to_unicode form; false if it has a character
// outside that mapping.
bool unmap_token(std::string_view mapped, const std::array<int16_t, 324>& inverse,
                 std::string& out) {
  out.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(mapped.data());
  const auto* end = p + mapped.size();
  while (p < end) {
    uint32_t cp;
    const size_t n = decode_utf8(p, end, &cp);
    if (n == 0 || cp >= inverse.size() || inverse[cp] < 0) return false;
    out += char(inverse[cp]);
    p += n;
  }
  return true;
}

std::string merge_where(const RawFiles& raw, size_t m) {
  std::ostringstream os;
  os << "tokenizer file \"" << raw.merges_file << "\"";
  if (raw.merge_lines[m] != 0)
    os << " line " << raw.merge_lines[m];
  else
    os << " merge " << m;
  return os.str();
}

}  // namespace

BpeTokenizer BpeTokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw_user_error("tokenizer directory \"", dir, "\" ",
                     fs::exists(dir, ec) ? "is not a directory" : "does not exist",
                     ": it should hold vocab.json + merges.txt, encoder.json + vocab.bpe, or "
                     "tokenizer.json");
  const fs::path d(dir);
  RawFiles raw;
  auto load_pair = [&](const char* vocab_name, const char* merges_name) {
    const fs::path v = d / vocab_name, m = d / merges_name;
    if (!fs::exists(m, ec))
      throw_user_error("tokenizer directory \"", dir, "\" has ", vocab_name, " but no ",
                       merges_name);
    raw.vocab_file = v.string();
    raw.merges_file = m.string();
    read_json_file(v, [&](JsonReader& r) { read_vocab_json(r, raw); });
    read_merges_txt(m, raw);
  };
  if (fs::exists(d / "vocab.json", ec)) {
    load_pair("vocab.json", "merges.txt");
  } else if (fs::exists(d / "encoder.json", ec)) {
    load_pair("encoder.json", "vocab.bpe");
  } else if (fs::exists(d / "tokenizer.json", ec)) {
    raw.vocab_file = raw.merges_file = (d / "tokenizer.json").string();
    read_tokenizer_json(d / "tokenizer.json", raw);
  } else {
    throw_user_error("tokenizer directory \"", dir,
                     "\" holds none of vocab.json + merges.txt, "
                     "encoder.json + vocab.bpe, tokenizer.json");
  }

  auto impl = std::make_shared<Impl>();
  const std::array<uint32_t, 256> b2u = bytes_to_unicode();
  std::array<int16_t, 324> inverse;
  inverse.fill(-1);
  for (int b = 0; b < 256; ++b) inverse[b2u[size_t(b)]] = int16_t(b);

  // Vocabulary: ids must be exactly 0..N-1.
  const int64_t n = int64_t(raw.vocab.size());
  if (n == 0) throw_user_error("tokenizer file \"", raw.vocab_file, "\" has an empty vocabulary");
  impl->tokens.assign(size_t(n), std::string());
  std::vector<char> seen(size_t(n), 0);
  std::unordered_map<std::string, int32_t> by_bytes;
  by_bytes.reserve(size_t(n));
  std::string bytes;
  for (const auto& [tok, id] : raw.vocab) {
    if (id < 0 || id >= n)
      throw_user_error("tokenizer file \"", raw.vocab_file, "\": token \"", tok, "\" has id ", id,
                       ", outside [0, ", n, ") (the ids of ", n, " entries must be 0..", n - 1,
                       ")");
    if (seen[size_t(id)])
      throw_user_error("tokenizer file \"", raw.vocab_file, "\": id ", id,
                       " is given to two tokens");
    seen[size_t(id)] = 1;
    if (!unmap_token(tok, inverse, bytes))
      throw_user_error("tokenizer file \"", raw.vocab_file, "\": token \"", tok, "\" (id ", id,
                       ") has a character outside GPT-2's bytes_to_unicode mapping");
    if (!by_bytes.emplace(bytes, int32_t(id)).second)
      throw_user_error("tokenizer file \"", raw.vocab_file, "\": token \"", tok,
                       "\" appears twice");
    impl->tokens[size_t(id)] = bytes;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = by_bytes.find(std::string(1, char(b)));
    if (it == by_bytes.end()) {
      std::string mapped;
      append_utf8(mapped, b2u[size_t(b)]);
      throw_user_error("tokenizer file \"", raw.vocab_file, "\" is missing an entry for byte ", b,
                       " (token \"", mapped, "\"): a byte-level vocabulary needs all 256");
    }
    impl->byte_token[size_t(b)] = it->second;
  }
  auto eos = by_bytes.find(kEndOfText);
  if (eos == by_bytes.end())
    throw_user_error("tokenizer file \"", raw.vocab_file, "\" has no entry for ", kEndOfText);
  impl->eos = eos->second;

  // Merges, rank = order.
  std::vector<std::array<int32_t, 3>> merge_ids;
  merge_ids.reserve(raw.merges.size());
  impl->merges.reserve(raw.merges.size());
  std::string a_bytes, b_bytes;
  for (size_t m = 0; m < raw.merges.size(); ++m) {
    const auto& [a, b] = raw.merges[m];
    if (!unmap_token(a, inverse, a_bytes) || !unmap_token(b, inverse, b_bytes))
      throw_user_error(merge_where(raw, m), ": merge \"", a, " ", b,
                       "\" has a character outside GPT-2's bytes_to_unicode mapping");
    auto ia = by_bytes.find(a_bytes), ib = by_bytes.find(b_bytes),
         im = by_bytes.find(a_bytes + b_bytes);
    if (ia == by_bytes.end() || ib == by_bytes.end() || im == by_bytes.end())
      throw_user_error(merge_where(raw, m), ": merge \"", a, " ", b, "\" needs the token \"",
                       ia == by_bytes.end()   ? a
                       : ib == by_bytes.end() ? b
                                              : a + b,
                       "\", which ", raw.vocab_file, " lacks");
    merge_ids.push_back({ia->second, ib->second, im->second});
    impl->merges.put(ia->second, ib->second, int32_t(m), im->second);
  }

  Fnv1a h;
  for (const std::string& t : impl->tokens) {
    h.u32(uint32_t(t.size()));
    h.bytes(t.data(), t.size());
  }
  for (const auto& m : merge_ids)
    for (int32_t v : m) h.u32(uint32_t(v));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.h));
  impl->id = std::string("gpt2-bpe:") + hex;
  impl->serial = g_next_serial.fetch_add(1);
  return BpeTokenizer(std::move(impl));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  impl_->encode_append(text, out);
  return out;
}

void BpeTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  impl_->encode_append(text, out);
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  const int32_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= n)
      throw_user_error("token id ", id, " (at index ", i, ") is outside the vocabulary [0, ", n,
                       ") of tokenizer ", impl_->id);
    out += impl_->tokens[size_t(id)];
  }
  return out;
}

int32_t BpeTokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }
int32_t BpeTokenizer::eos_id() const { return impl_->eos; }
const std::string& BpeTokenizer::id() const { return impl_->id; }

std::string_view BpeTokenizer::token_bytes(int32_t id) const {
  ZT_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " outside [0, ", vocab_size(), ")");
  return impl_->tokens[size_t(id)];
}

}  // namespace zt::datasets
