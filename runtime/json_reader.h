// JsonReader: a small pull reader over JSON text (no document tree), shared by the tokenizer
// loader (vocab.json, tokenizer.json), the jsonl extractor of `zerotrain prepare`, safetensors
// headers (runtime/safetensors.h) and Hugging Face config.json files (model/hf_gptj.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace zt {

// Appends code point cp (at most U+10FFFF) to out as UTF-8.
void append_utf8(std::string& out, uint32_t cp);

// A problem in the JSON text. what() is "line L, column C: problem"; callers that know the
// file (or the jsonl line) catch it and word their own message from the parts.
class JsonError : public std::runtime_error {
 public:
  JsonError(std::string problem, size_t line, size_t column, bool at_end);
  const std::string& problem() const { return problem_; }
  size_t line() const { return line_; }      // 1-based
  size_t column() const { return column_; }  // 1-based, in bytes
  bool at_end() const { return at_end_; }    // the problem is at the end of the text
 private:
  std::string problem_;
  size_t line_, column_;
  bool at_end_;
};

// Reads values in order from text, which must outlive the reader. Every method skips the
// whitespace before what it reads and throws JsonError at the first problem. Strings decode
// every JSON escape; \uXXXX surrogate pairs join into one code point and a lone surrogate
// becomes U+FFFD (as Python's json reads it, then encodes it with errors="replace").
class JsonReader {
 public:
  static constexpr int kMaxDepth = 512;  // skip_value refuses deeper nesting rather than recurse

  explicit JsonReader(std::string_view text) : s_(text) {}

  // The next character after whitespace ('\0' at the end); nothing is consumed.
  char peek();
  // True when only whitespace is left.
  bool at_end();
  // Consumes c if it is next.
  bool accept(char c);
  // Consumes c, or fails with "expected 'c'<what>, found ...".
  void expect(char c, std::string_view what = {});

  std::string string();
  int64_t integer();  // an integer without fraction or exponent, in int64 range
  // Any JSON number, rounded once to the nearest double (std::from_chars, so "1e-05" reads as
  // exactly what Python's float("1e-05") gives); a magnitude beyond double's range is an error.
  double number();
  bool boolean();  // true or false
  // Consumes null if it is next (config.json writes absent optional values as null).
  bool accept_null();
  // Checks and skips one value of any type (strings are not decoded).
  void skip_value();

  // Calls f(key) for each member of an object; f must consume the member's value.
  template <class F>
  void object(F&& f) {
    expect('{');
    if (accept('}')) return;
    do {
      if (peek() != '"') fail("expected a string key" + found());
      const std::string key = string();
      expect(':', " after a key");
      f(key);
    } while (accept(','));
    expect_close('}');
  }
  // Calls f() for each element of an array; f must consume the element.
  template <class F>
  void array(F&& f) {
    expect('[');
    if (accept(']')) return;
    do f();
    while (accept(','));
    expect_close(']');
  }

  // Throws JsonError for what at the current position.
  [[noreturn]] void fail(const std::string& what) const;
  // ", found 'c'" or ", found the end of the text", for messages about the next character.
  std::string found() const;

 private:
  void skip_ws();
  void expect_close(char close);  // after a member or element: close, or fails naming ','
  void string_into(std::string* out);  // the string at pos_, decoded into *out unless null
  uint32_t hex4();
  void skip_value(int depth);
  void skip_number();
  void skip_literal(std::string_view word);

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace zt
