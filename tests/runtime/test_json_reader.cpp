// JsonReader: string escapes and surrogates, integers, skipping nested values, object and array
// iteration, numbers, booleans and null, and errors that give the problem with its line and column.
#include "runtime/json_reader.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace zt {
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

// The bits of a double, so that -0.0 and 0.0 differ and equality is exact.
uint64_t bits_of(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u;
}

TEST(JsonReader, ReadsNumbersRoundedOnceToTheNearestDouble) {
  JsonReader r(R"([0, -0, 17, -2.5, 1e-05, 0.02, 1E+2, 6.02214076e23, 0.1, 5e-324,
                   1.7976931348623157e308, 1e-400, -1e-400, 0.0000, 9007199254740993])");
  std::vector<double> got;
  r.array([&] { got.push_back(r.number()); });
  EXPECT_TRUE(r.at_end());
  // Each expectation is the C++ literal of the same text: both round the decimal once to the
  // nearest double, as Python's float() does for config.json's layer_norm_epsilon and friends.
  const std::vector<double> want = {0.0, -0.0, 17.0, -2.5, 1e-05, 0.02, 1e2, 6.02214076e23, 0.1,
                                    5e-324, 1.7976931348623157e308,
                                    0.0, -0.0,  // underflow rounds to a signed zero, as in Python
                                    0.0, 9007199254740992.0};  // 2^53 + 1 ties to even
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(bits_of(got[i]), bits_of(want[i])) << "element " << i << ": " << got[i];

  EXPECT_EQ(error_of([] { JsonReader("1e999").number(); }), "1:1 number out of range of a double");
  EXPECT_EQ(error_of([] { JsonReader("-1e400").number(); }), "1:1 number out of range of a double");
  EXPECT_EQ(error_of([] { JsonReader("+1").number(); }), "1:1 expected a number, found '+'");
  EXPECT_EQ(error_of([] { JsonReader(".5").number(); }), "1:1 expected a number, found '.'");
  EXPECT_EQ(error_of([] { JsonReader(" \"1\"").number(); }), "1:2 expected a number, found '\"'");
  EXPECT_EQ(error_of([] { JsonReader("nan").number(); }), "1:1 expected a number, found 'n'");
  EXPECT_EQ(error_of([] { JsonReader("1.e5").number(); }),
            "1:3 bad number: digits must follow '.'");
}

TEST(JsonReader, ReadsBooleansAndNull) {
  JsonReader r(R"({"a": true, "b": false, "c": null, "d": 3})");
  std::vector<std::string> seen;
  r.object([&](const std::string& key) {
    if (key == "a" || key == "b") {
      seen.push_back(key + "=" + (r.boolean() ? "true" : "false"));
    } else if (r.accept_null()) {
      seen.push_back(key + "=null");
    } else {
      seen.push_back(key + "=" + std::to_string(r.integer()));
    }
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"a=true", "b=false", "c=null", "d=3"}));
  EXPECT_EQ(error_of([] { JsonReader("1").boolean(); }), "1:1 expected true or false, found '1'");
  EXPECT_EQ(error_of([] { JsonReader("tru").boolean(); }),
            "1:1 expected a value (true?), found 't'");
  EXPECT_EQ(error_of([] { JsonReader("nul").accept_null(); }),
            "1:1 expected a value (null?), found 'n'");
  JsonReader not_null("\"null\"");
  EXPECT_FALSE(not_null.accept_null());  // nothing consumed
  EXPECT_EQ(not_null.string(), "null");
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
}  // namespace zt
