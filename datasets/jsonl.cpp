// The one-key JSON string extractor for jsonl inputs: a small recursive-descent parser that
// checks the whole line and decodes only the wanted string.
#include "datasets/jsonl.h"

#include <cstdint>
#include <optional>

namespace zt::datasets {

namespace {

constexpr int kMaxDepth = 512;  // nesting beyond this is refused rather than recursed into

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  // Fills *error and returns false on the first problem.
  bool object(std::string_view key, std::optional<std::string>* value, bool* not_string) {
    ws();
    if (!eat('{')) return fail("expected '{' (each line must be one JSON object)");
    ws();
    if (eat('}')) return end();
    for (;;) {
      ws();
      std::string name;
      if (peek() != '"') return fail("expected a string key");
      if (!string(&name)) return false;
      ws();
      if (!eat(':')) return fail("expected ':' after a key");
      ws();
      if (name == key) {
        if (peek() == '"') {
          std::string v;
          if (!string(&v)) return false;
          *value = std::move(v);
          *not_string = false;
        } else {
          if (!skip_value(1)) return false;
          value->reset();
          *not_string = true;
        }
      } else if (!skip_value(1)) {
        return false;
      }
      ws();
      if (eat('}')) return end();
      if (!eat(',')) return fail("expected ',' or '}'");
    }
  }

  const std::string& error() const { return error_; }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }
  bool eat(char c) {
    if (at_end() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n')) ++pos_;
  }
  bool fail(const std::string& what) {
    if (error_.empty())
      error_ = what + " at column " + std::to_string(pos_ + 1) + (at_end() ? " (end of line)" : "");
    return false;
  }
  bool end() {
    ws();
    return at_end() ? true : fail("unexpected text after the object");
  }

  static void put_utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += char(cp);
    } else if (cp < 0x800) {
      *out += char(0xc0 | (cp >> 6));
      *out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      *out += char(0xe0 | (cp >> 12));
      *out += char(0x80 | ((cp >> 6) & 0x3f));
      *out += char(0x80 | (cp & 0x3f));
    } else {
      *out += char(0xf0 | (cp >> 18));
      *out += char(0x80 | ((cp >> 12) & 0x3f));
      *out += char(0x80 | ((cp >> 6) & 0x3f));
      *out += char(0x80 | (cp & 0x3f));
    }
  }

  bool hex4(uint32_t* out) {
    if (pos_ + 4 > s_.size()) return fail("incomplete \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_ + size_t(i)];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
      else return fail("bad hex digit in a \\u escape");
    }
    pos_ += 4;
    *out = v;
    return true;
  }

  // A JSON string at pos_ (which is '"'); decoded into *out when out is not null.
  bool string(std::string* out) {
    ++pos_;  // the opening quote
    for (;;) {
      if (at_end()) return fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return fail("raw control character in a string (it must be escaped)");
      if (c != '\\') {
        // Copy the run of plain bytes at once.
        size_t end = pos_;
        while (end < s_.size() && s_[end] != '"' && s_[end] != '\\' && static_cast<unsigned char>(s_[end]) >= 0x20) ++end;
        if (out) out->append(s_.substr(pos_, end - pos_));
        pos_ = end;
        continue;
      }
      ++pos_;
      if (at_end()) return fail("unterminated escape");
      const char e = s_[pos_++];
      char plain = 0;
      switch (e) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xd800 && cp <= 0xdbff) {
            // A high surrogate: a low one must follow to make one code point.
            if (pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
              const size_t save = pos_;
              pos_ += 2;
              uint32_t low = 0;
              if (!hex4(&low)) return false;
              if (low >= 0xdc00 && low <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
              } else {
                pos_ = save;  // not a pair: the high one is lone, the next escape stands alone
                cp = 0xfffd;
              }
            } else {
              cp = 0xfffd;
            }
          } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            cp = 0xfffd;  // a lone low surrogate
          }
          if (out) put_utf8(cp, out);
          continue;
        }
        default: --pos_; return fail(std::string("unknown escape \\") + e);
      }
      if (out) *out += plain;
    }
  }

  bool digits() {
    const size_t start = pos_;
    while (!at_end() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }

  bool number() {
    eat('-');
    if (!digits()) return fail("bad number");
    if (eat('.') && !digits()) return fail("bad number: digits must follow '.'");
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digits()) return fail("bad number exponent");
    }
    return true;
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return fail("unexpected character");
    pos_ += word.size();
    return true;
  }

  bool skip_value(int depth) {
    if (depth > kMaxDepth) return fail("nesting too deep");
    ws();
    const char c = peek();
    if (c == '"') return string(nullptr);
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      ws();
      if (eat(close)) return true;
      for (;;) {
        ws();
        if (c == '{') {
          if (peek() != '"') return fail("expected a string key");
          if (!string(nullptr)) return false;
          ws();
          if (!eat(':')) return fail("expected ':' after a key");
        }
        if (!skip_value(depth + 1)) return false;
        ws();
        if (eat(close)) return true;
        if (!eat(',')) return fail(std::string("expected ',' or '") + close + "'");
      }
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return fail(at_end() ? "expected a value" : "unexpected character");
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

JsonExtract extract_json_string(std::string_view line, std::string_view key, std::string* out, std::string* error) {
  Parser p(line);
  std::optional<std::string> value;
  bool not_string = false;
  if (!p.object(key, &value, &not_string)) {
    *error = "malformed JSON: " + p.error();
    return JsonExtract::kMalformed;
  }
  if (not_string) {
    *error = "the value of \"" + std::string(key) + "\" is not a string";
    return JsonExtract::kNotString;
  }
  if (!value) {
    *error = "no \"" + std::string(key) + "\" key in the object";
    return JsonExtract::kMissingKey;
  }
  *out = std::move(*value);
  return JsonExtract::kOk;
}

}  // namespace zt::datasets
