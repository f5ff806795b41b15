// Small text helpers shared by the libraries above runtime/ (header-only): TOML spellings of
// strings and floats for the files zerotrain writes (config.toml, manifest.toml, docs/config.md),
// and UTF-8 decoding (the tokenizer, config strings).
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace zt {

// s as a TOML basic string, quotes included: escapes what would end it or break the line
// (", \, control characters and DEL); other bytes, UTF-8 included, pass through.
inline std::string toml_quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", unsigned(ch));
          out += buf;
        } else {
          out += char(ch);
        }
    }
  }
  return out + "\"";
}

// v as a TOML float that reads back to exactly v: the shortest such digits in %g style
// (0.0003, not the shorter but odd 3e-04; 1e-08 and 1e+20 past %g's exponent limits), with
// ".0" added where they would read as an integer. nan and inf come out as TOML spells them.
inline std::string toml_float(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general);
  std::string s(buf, end);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "1" would read as an int
  return s;
}

// Decodes one well-formed UTF-8 sequence (Unicode Table 3-7: no overlong forms, no surrogates,
// nothing above U+10FFFF) at p. Returns its length in bytes, or 0 when the byte at p does not
// begin one; *cp receives the code point.
inline size_t decode_utf8(const unsigned char* p, const unsigned char* end, uint32_t* cp) {
  const unsigned b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  const size_t left = size_t(end - p);
  auto cont = [](unsigned b) { return (b & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left < 2 || !cont(p[1])) return 0;
    *cp = ((b0 & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3) return 0;
    const unsigned b1 = p[1];
    const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    if (b1 < lo || b1 > hi || !cont(p[2])) return 0;
    *cp = ((b0 & 0x0Fu) << 12) | ((b1 & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 4) return 0;
    const unsigned b1 = p[1];
    const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (b1 < lo || b1 > hi || !cont(p[2]) || !cont(p[3])) return 0;
    *cp = ((b0 & 0x07u) << 18) | ((b1 & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
    return 4;
  }
  return 0;
}

// True when `s` is well-formed UTF-8 throughout (decode_utf8 accepts every sequence).
inline bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char* end = p + s.size();
  uint32_t cp = 0;
  while (p < end) {
    const size_t n = decode_utf8(p, end, &cp);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

}  // namespace zt
