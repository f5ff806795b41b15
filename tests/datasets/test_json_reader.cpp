// JsonReader: string escapes and surrogates, integers, skipping nested values, object and array
// iteration, and errors that give the problem with its line and column.
#include "datasets/json_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace zt::datasets {
namespace {

std::string read_string(const std::string& json) {
  JsonReader r(json);
  std::string s = r.string();
  EXPECT_TRUE(r.at_end()) << json;
  return s;
}

// The JsonError that f throws, as "L:C problem" ("" if it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const JsonError& e) {
    return std::to_string(e.line()) + ":" + std::to_string(e.column()) + " " + e.problem();
  }
  return "";
}

std::string error_of_string(const std::string& json) {
  return error_of([&] { JsonReader(json).string(); });
}

std::string error_of_skip(const std::string& json) {
  return error_of([&] {
    JsonReader r(json);
    r.skip_value();
    if (!r.at_end()) r.fail("trailing text");
  });
}

TEST(JsonReader, DecodesEveryEscape) {
  EXPECT_EQ(read_string(R"("a\"b\\c\/d\b\f\n\r\t")"), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(read_string(R"("\u0041\u00e9\u20AC")"), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(read_string("\"raw \xc3\xa9 utf8\""), "raw \xc3\xa9 utf8");
  EXPECT_EQ(read_string(R"( "" )"), "");
}

TEST(JsonReader, JoinsSurrogatePairsAndReplacesLoneOnes) {
  EXPECT_EQ(read_string(R"("\ud83d\ude00")"), "\xf0\x9f\x98\x80");  // U+1F600
  EXPECT_EQ(read_string(R"("\uDBFF\uDFFF")"), "\xf4\x8f\xbf\xbf");  // U+10FFFF
  EXPECT_EQ(read_string(R"("\ud800x")"), "\xef\xbf\xbdx");          // lone high
  EXPECT_EQ(read_string(R"("\ud800")"), "\xef\xbf\xbd");            // lone high at the end
  EXPECT_EQ(read_string(R"("\udc00")"), "\xef\xbf\xbd");            // lone low
  EXPECT_EQ(read_string(R"("\ud800\u0041")"), "\xef\xbf\xbd" "A");  // high, then not a low
  EXPECT_EQ(read_string(R"("\ud800\ud800\udc00")"), "\xef\xbf\xbd\xf0\x90\x80\x80");
}

TEST(JsonReader, ReadsIntegers) {
  JsonReader r("[0, -17, 9223372036854775799]");
  std::vector<int64_t> got;
  r.array([&] { got.push_back(r.integer()); });
  EXPECT_EQ(got, (std::vector<int64_t>{0, -17, 9223372036854775799}));
  EXPECT_EQ(error_of([] { JsonReader("1.5").integer(); }), "1:1 expected an integer, found '1'");
  EXPECT_EQ(error_of([] { JsonReader("\"1\"").integer(); }),
            "1:1 expected an integer, found '\"'");
  EXPECT_NE(error_of([] { JsonReader("99999999999999999999").integer(); }).find("out of range"),
            std::string::npos);
}

TEST(JsonReader, IteratesObjectsAndSkipsWhatItDoesNotRead) {
  const std::string json = R"({
    "skip": {"a": [1, -2.5e+3, true, false, null, {"b": "\u00e9"}], "c": [[[]]], "d": {}},
    "want": {"x": 1, "y": 2},
    "list": ["p", "q"]
  })";
  JsonReader r(json);
  std::vector<std::string> keys, items;
  int64_t sum = 0;
  r.object([&](const std::string& key) {
    keys.push_back(key);
    if (key == "want") {
      r.object([&](const std::string&) { sum += r.integer(); });
    } else if (key == "list") {
      r.array([&] { items.push_back(r.string()); });
    } else {
      r.skip_value();
    }
  });
  EXPECT_TRUE(r.at_end());
  EXPECT_EQ(keys, (std::vector<std::string>{"skip", "want", "list"}));
  EXPECT_EQ(sum, 3);
  EXPECT_EQ(items, (std::vector<std::string>{"p", "q"}));

  // Nesting deeper than kMaxDepth is refused, not recursed into.
  const int n = JsonReader::kMaxDepth + 1;
  EXPECT_EQ(error_of_skip(std::string(size_t(n - 1), '[') + std::string(size_t(n - 1), ']')), "");
  EXPECT_NE(error_of_skip(std::string(size_t(n), '[') + std::string(size_t(n), ']'))
                .find("nesting too deep"),
            std::string::npos);
}

TEST(JsonReader, ErrorsGiveTheProblemAndItsPosition) {
  EXPECT_EQ(error_of_string(R"("abc)"), "1:5 unterminated string");
  EXPECT_EQ(error_of_string(R"("a\qb")"), "1:4 unknown escape \\q");
  EXPECT_EQ(error_of_string(R"("\u12")"), "1:4 incomplete \\u escape");
  EXPECT_EQ(error_of_string(R"("\u12x4")"), "1:6 bad hex digit in a \\u escape");
  EXPECT_EQ(error_of_string("\"tab\there\""),
            "1:5 raw control character in a string (it must be escaped)");
  EXPECT_EQ(error_of_string("5"), "1:1 expected a string, found '5'");
  EXPECT_EQ(error_of_skip("{\n  \"a\": 1,\n  \"b\" 2\n}"), "3:7 expected ':' after a key, found '2'");
  EXPECT_EQ(error_of_skip("{\"a\": 1 \"b\": 2}"), "1:9 expected ',' or '}', found '\"'");
  EXPECT_EQ(error_of_skip("[1, 2"), "1:6 expected ',' or ']', found the end of the text");
  EXPECT_EQ(error_of_skip("{1: 2}"), "1:2 expected a string key, found '1'");
  EXPECT_EQ(error_of_skip("[tru]"), "1:2 expected a value (true?), found 't'");
  EXPECT_EQ(error_of_skip("[-]"), "1:3 bad number");
  EXPECT_EQ(error_of_skip("1."), "1:3 bad number: digits must follow '.'");
  EXPECT_EQ(error_of_skip("1e+"), "1:4 bad number exponent");
  EXPECT_EQ(error_of_skip("[1] x"), "1:5 trailing text");
  EXPECT_EQ(error_of_skip(""), "1:1 expected a value, found the end of the text");

  // what() carries the position too, for callers that pass the error on unchanged.
  try {
    JsonReader("\n\n  ]").skip_value();
    FAIL() << "no error";
  } catch (const JsonError& e) {
    EXPECT_STREQ(e.what(), "line 3, column 3: expected a value, found ']'");
    EXPECT_FALSE(e.at_end());
  }
}

}  // namespace
}  // namespace zt::datasets
