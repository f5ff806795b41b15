// JsonReader: reading, decoding and skipping JSON values, and the positions in its errors.
#include "runtime/json_reader.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <system_error>

namespace zt {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

JsonError::JsonError(std::string problem, size_t line, size_t column, bool at_end)
    : std::runtime_error("line " + std::to_string(line) + ", column " + std::to_string(column) +
                         ": " + problem),
      problem_(std::move(problem)),
      line_(line),
      column_(column),
      at_end_(at_end) {}

void JsonReader::fail(const std::string& what) const {
  // Line and column are only needed here, so they are counted from the start on failure.
  const size_t pos = std::min(pos_, s_.size());
  const std::string_view before = s_.substr(0, pos);
  const size_t line = size_t(std::count(before.begin(), before.end(), '\n')) + 1;
  const size_t nl = before.rfind('\n');
  const size_t column = pos - (nl == std::string_view::npos ? 0 : nl + 1) + 1;
  throw JsonError(what, line, column, pos >= s_.size());
}

std::string JsonReader::found() const {
  if (pos_ >= s_.size()) return ", found the end of the text";
  return std::string(", found '") + s_[pos_] + "'";
}

void JsonReader::skip_ws() {
  while (pos_ < s_.size() &&
         (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t'))
    ++pos_;
}

char JsonReader::peek() {
  skip_ws();
  return pos_ < s_.size() ? s_[pos_] : '\0';
}

bool JsonReader::at_end() {
  skip_ws();
  return pos_ >= s_.size();
}

bool JsonReader::accept(char c) {
  if (peek() != c || pos_ >= s_.size()) return false;
  ++pos_;
  return true;
}

void JsonReader::expect(char c, std::string_view what) {
  if (!accept(c)) fail(std::string("expected '") + c + "'" + std::string(what) + found());
}

void JsonReader::expect_close(char close) {
  if (!accept(close)) fail(std::string("expected ',' or '") + close + "'" + found());
}

std::string JsonReader::string() {
  if (peek() != '"') fail("expected a string" + found());
  std::string out;
  string_into(&out);
  return out;
}

uint32_t JsonReader::hex4() {
  if (pos_ + 4 > s_.size()) fail("incomplete \\u escape");
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) {
    const char h = s_[pos_ + i];
    v <<= 4;
    if (h >= '0' && h <= '9') {
      v |= uint32_t(h - '0');
    } else if (h >= 'a' && h <= 'f') {
      v |= uint32_t(h - 'a' + 10);
    } else if (h >= 'A' && h <= 'F') {
      v |= uint32_t(h - 'A' + 10);
    } else {
      pos_ += i;
      fail("bad hex digit in a \\u escape");
    }
  }
  pos_ += 4;
  return v;
}

void JsonReader::string_into(std::string* out) {
  ++pos_;  // the opening quote
  for (;;) {
    if (pos_ >= s_.size()) fail("unterminated string");
    const unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c == '"') {
      ++pos_;
      return;
    }
    if (c < 0x20) fail("raw control character in a string (it must be escaped)");
    if (c != '\\') {
      // Copy the run of plain bytes at once.
      size_t end = pos_;
      while (end < s_.size() && s_[end] != '"' && s_[end] != '\\' &&
             static_cast<unsigned char>(s_[end]) >= 0x20)
        ++end;
      if (out) out->append(s_.substr(pos_, end - pos_));
      pos_ = end;
      continue;
    }
    ++pos_;
    if (pos_ >= s_.size()) fail("unterminated escape");
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
        uint32_t cp = hex4();
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          // A high surrogate: a low one must follow to make one code point.
          const uint32_t high = cp;
          cp = 0xFFFD;
          if (s_.substr(pos_, 2) == "\\u") {
            const size_t save = pos_;
            pos_ += 2;
            const uint32_t low = hex4();
            if (low >= 0xDC00 && low <= 0xDFFF)
              cp = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            else
              pos_ = save;  // not a pair: the high one is lone, the next escape stands alone
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          cp = 0xFFFD;  // a lone low surrogate
        }
        if (out) append_utf8(*out, cp);
        continue;
      }
      default:
        --pos_;
        fail(std::string("unknown escape \\") + e);
    }
    if (out) *out += plain;
  }
}

int64_t JsonReader::integer() {
  skip_ws();
  const size_t start = pos_;
  const bool negative = pos_ < s_.size() && s_[pos_] == '-';
  if (negative) ++pos_;
  int64_t v = 0;
  size_t digits = 0;
  while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
    if (v > (INT64_MAX - 9) / 10) fail("integer out of range");
    v = v * 10 + (s_[pos_++] - '0');
    ++digits;
  }
  if (digits == 0 ||
      (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E'))) {
    pos_ = start;
    fail("expected an integer" + found());
  }
  return negative ? -v : v;
}

namespace {

// k such that the non-zero JSON number `text` (grammar already checked) lies in
// [10^k, 10^(k+1)), from the place of its first non-zero digit and its exponent; saturates far outside double's range.
int64_t decimal_exponent(std::string_view text) {
  size_t i = text[0] == '-' ? 1 : 0;
  int64_t place = 0;  // significant digits before the point, or minus the zeros after it
  bool seen_nonzero = false, after_point = false;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] == '.') {
      after_point = true;
    } else if (!seen_nonzero && text[i] == '0') {
      if (after_point) --place;
    } else {
      seen_nonzero = true;
      if (!after_point) ++place;
    }
  }
  if (!seen_nonzero) return INT32_MIN;  // zero
  int64_t exponent = 0;
  if (i < text.size()) {
    ++i;
    const bool negative = text[i] == '-';
    if (text[i] == '-' || text[i] == '+') ++i;
    for (; i < text.size(); ++i)
      exponent = std::min<int64_t>(exponent * 10 + (text[i] - '0'), int64_t(1) << 40);
    if (negative) exponent = -exponent;
  }
  return place - 1 + exponent;
}

}  // namespace

double JsonReader::number() {
  const char c = peek();
  if (c != '-' && !(c >= '0' && c <= '9')) fail("expected a number" + found());
  // skip_number checks the JSON grammar (no '+', no leading '.', no hex, no inf/nan), which
  // std::from_chars alone would not; from_chars then rounds the checked text exactly once.
  const size_t start = pos_;
  skip_number();
  double v = 0;
  const auto [end, ec] = std::from_chars(s_.data() + start, s_.data() + pos_, v);
  if (ec == std::errc::result_out_of_range) {
    // from_chars reports underflow too; Python's json rounds those to zero, and so do we.
    const std::string_view text = s_.substr(start, pos_ - start);
    if (decimal_exponent(text) < 0) return text[0] == '-' ? -0.0 : 0.0;
    pos_ = start;
    fail("number out of range of a double");
  }
  if (ec != std::errc() || end != s_.data() + pos_) {
    pos_ = start;
    fail("bad number");
  }
  return v;
}

bool JsonReader::boolean() {
  const char c = peek();
  if (c == 't') {
    skip_literal("true");
    return true;
  }
  if (c == 'f') {
    skip_literal("false");
    return false;
  }
  fail("expected true or false" + found());
}

bool JsonReader::accept_null() {
  if (peek() != 'n') return false;
  skip_literal("null");
  return true;
}

void JsonReader::skip_value() { skip_value(1); }

void JsonReader::skip_value(int depth) {
  if (depth > kMaxDepth) fail("nesting too deep");
  const char c = peek();
  if (c == '"') {
    string_into(nullptr);
  } else if (c == '{') {
    object([&](const std::string&) { skip_value(depth + 1); });
  } else if (c == '[') {
    array([&] { skip_value(depth + 1); });
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    skip_number();
  } else if (c == 't') {
    skip_literal("true");
  } else if (c == 'f') {
    skip_literal("false");
  } else if (c == 'n') {
    skip_literal("null");
  } else {
    fail("expected a value" + found());
  }
}

void JsonReader::skip_number() {
  auto digits = [&] {
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    return pos_ > start;
  };
  auto next_is = [&](char c) { return pos_ < s_.size() && s_[pos_] == c; };
  if (next_is('-')) ++pos_;
  if (!digits()) fail("bad number");
  if (next_is('.')) {
    ++pos_;
    if (!digits()) fail("bad number: digits must follow '.'");
  }
  if (next_is('e') || next_is('E')) {
    ++pos_;
    if (next_is('+') || next_is('-')) ++pos_;
    if (!digits()) fail("bad number exponent");
  }
}

void JsonReader::skip_literal(std::string_view word) {
  if (s_.substr(pos_, word.size()) != word)
    fail("expected a value (" + std::string(word) + "?)" + found());
  pos_ += word.size();
}

}  // namespace zt
