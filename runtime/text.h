// Small text helpers shared by the libraries above runtime/ (header-only): TOML spellings of
// strings and floats for the files zerotrain writes (config.toml, manifest.toml, docs/config.md).
#pragma once

#include <charconv>
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

}  // namespace zt
