// The strict JSON reader (tests/support/json.h): values, exact integers, escapes, and every error
// with its byte offset; every JSON file of ../shared/models parses.
#include "support/json.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_env.h"

namespace attnkit {
namespace {

using ::testing::HasSubstr;

JsonValue ParseOk(const std::string& text) {
  auto value = JsonValue::Parse(text);
  EXPECT_TRUE(value.ok()) << text << ": " << value.status();
  return value.ok() ? *std::move(value) : JsonValue();
}

void ExpectError(const std::string& text, const std::string& part) {
  auto value = JsonValue::Parse(text);
  ASSERT_FALSE(value.ok()) << "accepted: " << text;
  EXPECT_EQ(value.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(value.status().message()), HasSubstr(part)) << text;
}

TEST(JsonTest, Values) {
  JsonValue v = ParseOk(
      R"( {"n": null, "t": true, "f": false, "i": -12, "x": 2.5e-1, "s": "hi", "a": [1, [2], {}],)"
      R"( "o": {"k": "v"}} )");
  ASSERT_TRUE(v.is_object());
  EXPECT_TRUE(v.Find("n")->is_null());
  EXPECT_TRUE(v.Find("t")->is_bool());
  EXPECT_TRUE(v.Find("t")->bool_value());
  EXPECT_FALSE(v.Find("f")->bool_value());
  EXPECT_DOUBLE_EQ(v.Find("i")->number(), -12);
  EXPECT_DOUBLE_EQ(v.Find("x")->number(), 0.25);
  EXPECT_EQ(v.Find("x")->number_text(), "2.5e-1");
  EXPECT_EQ(v.Find("s")->string(), "hi");
  ASSERT_EQ(v.Find("a")->array().size(), 3u);
  EXPECT_TRUE(v.Find("a")->array()[1].is_array());
  EXPECT_TRUE(v.Find("a")->array()[2].is_object());
  EXPECT_EQ(v.Find("o")->Find("k")->string(), "v");
  EXPECT_EQ(v.Find("missing"), nullptr);
  EXPECT_EQ(v.Find("s")->Find("k"), nullptr);  // not an object
  EXPECT_TRUE(ParseOk("[]").array().empty());
  EXPECT_TRUE(ParseOk("\"\"").string().empty());
  EXPECT_DOUBLE_EQ(ParseOk("0").number(), 0);
  EXPECT_DOUBLE_EQ(ParseOk("-0.0E+2").number(), 0);
}

TEST(JsonTest, ExactIntegers) {
  const JsonValue big = ParseOk("9223372036854775807");
  auto exact = JsonInt(big, "n");
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(*exact, INT64_MAX);  // beyond 2^53: not through double
  EXPECT_EQ(*JsonInt(ParseOk("-9223372036854775808"), "n"), INT64_MIN);
  EXPECT_EQ(*JsonInt(ParseOk("9007199254740993"), "n"), 9007199254740993);
  for (const char* not_int :
       {"1.5", "1e3", "1.0", "\"1\"", "true", "null", "[1]", "9223372036854775808"}) {
    SCOPED_TRACE(not_int);
    auto value = JsonInt(ParseOk(not_int), "offset");
    EXPECT_EQ(value.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(value.status().message()), HasSubstr("offset: expected an integer"));
  }
}

TEST(JsonTest, StringEscapes) {
  EXPECT_EQ(ParseOk(R"("a\"b\\c\/d\b\f\n\r\t")").string(), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(ParseOk(R"("\u0041\u00e9\u20ac")").string(), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(ParseOk(R"("\ud83d\ude00")").string(), "\xf0\x9f\x98\x80");  // surrogate pair
  EXPECT_EQ(ParseOk("\"\xe2\x96\x81raw utf8\"").string(), "\xe2\x96\x81raw utf8");
  EXPECT_EQ(ParseOk(R"("\u0000")").string(), std::string(1, '\0'));
}

TEST(JsonTest, ErrorsCarryTheirOffset) {
  ExpectError("", "JSON at byte 0: unexpected end of input");
  ExpectError("   ", "unexpected end of input");
  ExpectError("[1, 2", "JSON at byte 5: expected ',' or ']'");
  ExpectError("{\"a\" 1}", "JSON at byte 5: expected ':'");
  ExpectError("{1: 2}", "expected a key string");
  ExpectError("{\"a\": 1,}", "expected a key string");
  ExpectError("{\"a\": 1 \"b\": 2}", "expected ',' or '}'");
  ExpectError("[1] [2]", "JSON at byte 4: trailing characters");
  ExpectError("{\"a\": 1, \"a\": 1}", "duplicate key");
  ExpectError("\"abc", "unterminated string");
  ExpectError("\"abc\\", "unterminated escape");
  ExpectError("\"a\nb\"", "control character in string");
  ExpectError("\"\\x\"", "unknown escape");
  ExpectError("\"\\u12zz\"", "bad hex digit");
  ExpectError("\"\\u12", "short \\u escape");
  ExpectError("\"\\ud800\"", "unpaired surrogate");
  ExpectError("\"\\ud800\\u0041\"", "bad low surrogate");
  ExpectError("\"\\udc00\"", "unpaired low surrogate");
  ExpectError("nul", "expected a value");
  ExpectError("True", "expected a value");
  ExpectError("'a'", "expected a value");
}

TEST(JsonTest, NumbersFollowTheGrammar) {
  for (const char* bad : {"+1", "01", "-01", "1.", ".5", "-", "1e", "1e+", "--1", "1.2.3", "0x10",
                          "NaN", "Infinity", "-Infinity", "1e999", "-1e999"}) {
    SCOPED_TRACE(bad);
    auto value = JsonValue::Parse(bad);
    EXPECT_FALSE(value.ok()) << bad << " parsed as " << (value.ok() ? value->number() : 0);
  }
  for (const char* good :
       {"0", "-0", "10", "1.25", "1e5", "1E-5", "-2.5e+3", "123456789012345678901234567890"}) {
    SCOPED_TRACE(good);
    EXPECT_TRUE(JsonValue::Parse(good).ok()) << JsonValue::Parse(good).status();
  }
}

TEST(JsonTest, NestingIsBounded) {
  const auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_TRUE(JsonValue::Parse(nested(60)).ok());
  ExpectError(nested(100), "nested too deeply");
  ExpectError(nested(100000), "nested too deeply");  // no stack overflow
  std::string objects;
  for (int i = 0; i < 200; ++i) objects += "{\"k\":";
  ExpectError(objects + "0" + std::string(200, '}'), "nested too deeply");
}

TEST(JsonTest, EverySharedJsonFileParses) {
  const std::string dir = testing::ModelsDir();
  ATTNKIT_SKIP_IF_MISSING(dir);
  int parsed = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    auto value = JsonValue::Parse(text.str());
    EXPECT_TRUE(value.ok()) << entry.path() << ": " << value.status();
    ++parsed;
  }
  EXPECT_GE(parsed, 3) << "expected config.json, reference.json, tokenizer.json under " << dir;
  const std::string config = dir + "/tinystories-656k/config.json";
  if (testing::PathExists(config)) {
    std::ifstream in(config);
    std::stringstream text;
    text << in.rdbuf();
    auto value = JsonValue::Parse(text.str());
    ASSERT_TRUE(value.ok()) << value.status();
    const JsonValue* layers = value->Find("num_hidden_layers");
    ASSERT_NE(layers, nullptr);
    EXPECT_EQ(*JsonInt(*layers, "num_hidden_layers"), 2);
  }
}

}  // namespace
}  // namespace attnkit
