#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "qround/error.hpp"
#include "qround/io/json.hpp"

namespace qround::json {
namespace {

TEST(Json, ParsesEveryType) {
  const Value v = parse(R"( {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\"y\\z\n"},
                          "u": "\u00e9\ud83d\ude00"} )");
  ASSERT_TRUE(v.is_object());
  const auto& a = v.at("a").as_array();
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[0].as_number(), 1.0);
  EXPECT_EQ(a[1].as_number(), -2500.0);
  EXPECT_TRUE(a[2].as_bool());
  EXPECT_FALSE(a[3].as_bool());
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(v.at("b").at("c").as_string(), "x\"y\\z\n");
  EXPECT_EQ(v.at("u").as_string(), "\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(Json, DumpParsesBackToTheSameValue) {
  Value v = Value::object();
  v.set("name", "layer \"0\"\t");
  v.set("pi", 3.141592653589793);
  v.set("tiny", 1e-300);
  v.set("big", 123456789012.0);
  v.set("list", Value::Array{1, 2.5, "three", nullptr, true});
  v.set("empty", Value::object());
  for (int indent : {-1, 0, 2}) {
    const Value back = parse(dump(v, indent));
    EXPECT_EQ(back.at("name").as_string(), "layer \"0\"\t");
    EXPECT_EQ(back.at("pi").as_number(), 3.141592653589793);  // shortest round-trip digits
    EXPECT_EQ(back.at("tiny").as_number(), 1e-300);
    EXPECT_EQ(back.at("big").as_int(), 123456789012);
    EXPECT_EQ(back.at("list").size(), 5u);
    EXPECT_EQ(back.at("empty").size(), 0u);
  }
}

TEST(Json, ObjectsKeepInsertionOrderAndSetReplacesInPlace) {
  Value v = Value::object();
  v.set("z", 1);
  v.set("a", 2);
  v.set("z", 3);
  ASSERT_EQ(v.as_object().size(), 2u);
  EXPECT_EQ(v.as_object()[0].first, "z");
  EXPECT_EQ(v.as_object()[0].second.as_number(), 3.0);
  EXPECT_EQ(dump(v, -1), R"({"z":3,"a":2})");
}

TEST(Json, NonFiniteNumbersAreWrittenAsNull) {
  Value v = Value::Array{std::nan(""), INFINITY};
  EXPECT_EQ(dump(v, -1), "[null,null]");
}

TEST(Json, MalformedInputRaisesIoErrorWithOffset) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\":1,}", "{'a':1}", "[1 2]", "01", "1.", "-",
                          "tru", "\"abc", "\"\\x\"", "\"\\ud800\"", "{\"a\":1,\"a\":2}",
                          "[1] x", "\"a\nb\"", "nul"}) {
    EXPECT_THROW(parse(bad), IoError) << bad;
  }
  try {
    parse("[1, 2, }");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("offset 7"), std::string::npos) << e.what();
  }
}

TEST(Json, DeepNestingIsRejectedNotACrash) {
  const std::string deep(100000, '[');
  EXPECT_THROW(parse(deep), IoError);
}

TEST(Json, TypedAccessNamesTheMismatch) {
  const Value v = parse(R"({"n": 2.5, "s": "x"})");
  EXPECT_THROW(v.at("n").as_string(), IoError);
  EXPECT_THROW(v.at("n").as_int(), IoError);  // not integral
  EXPECT_THROW(v.at("missing"), IoError);
  EXPECT_EQ(parse("7").as_int(0, 10), 7);
  EXPECT_THROW(parse("70").as_int(0, 10), IoError);
  try {
    v.at("s").as_number();
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("expected number, found string"), std::string::npos);
  }
}

// Regression (issue 15): duplicate keys were found by a linear scan, so an object of n keys took
// O(n²) to parse (80 000 keys: about a minute). With a hash set it is linear; no timing is
// asserted here, the size is what makes a quadratic parser conspicuous.
TEST(Json, ObjectWithManyKeysParsesAndStillRefusesDuplicates) {
  constexpr int kKeys = 100000;
  std::string text = "{";
  for (int i = 0; i < kKeys; ++i)
    text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":" + std::to_string(i);
  const Value v = parse(text + "}");
  ASSERT_EQ(v.size(), static_cast<std::size_t>(kKeys));
  EXPECT_EQ(v.as_object().front().first, "k0");
  EXPECT_EQ(v.as_object().back().first, "k99999");
  EXPECT_EQ(v.at("k12345").as_int(), 12345);
  // The same keys with one repeated at the end: refused, naming the key.
  try {
    parse(text + ",\"k4242\":0}");
    ADD_FAILURE() << "a duplicate key was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate key \"k4242\""), std::string::npos) << e.what();
  }
  // Duplicates in nested objects are independent: the same key in two objects is fine.
  EXPECT_NO_THROW(parse(R"({"a":{"x":1},"b":{"x":2}})"));
  EXPECT_THROW(parse(R"({"a":{"x":1,"x":2}})"), IoError);
}

}  // namespace
}  // namespace qround::json
