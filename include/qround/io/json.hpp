// A small JSON value with a strict parser and a writer: enough for reports, manifests and the
// safetensors header. Objects keep insertion order so written files read in a stable order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qround::json {

class Value {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::kBool), bool_(b) {}
  Value(double d) : type_(Type::kNumber), number_(d) {}
  Value(int i) : Value(static_cast<double>(i)) {}
  Value(long i) : Value(static_cast<double>(i)) {}
  Value(long long i) : Value(static_cast<double>(i)) {}
  Value(unsigned long i) : Value(static_cast<double>(i)) {}
  Value(unsigned long long i) : Value(static_cast<double>(i)) {}
  Value(const char* s) : type_(Type::kString), string_(s) {}
  Value(std::string s) : type_(Type::kString), string_(std::move(s)) {}
  Value(std::string_view s) : type_(Type::kString), string_(s) {}
  Value(Array a) : type_(Type::kArray), array_(std::move(a)) {}

  static Value object() {
    Value v;
    v.type_ = Type::kObject;
    return v;
  }
  static Value array() { return Value(Array{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Typed access; each throws IoError naming the expected and actual type.
  bool as_bool() const;
  double as_number() const;
  // The number as an integer; throws unless it is integral and within [lo, hi].
  std::int64_t as_int(std::int64_t lo = INT64_MIN / 2, std::int64_t hi = INT64_MAX / 2) const;
  const std::string& as_string() const;
  const Array& as_array() const;
  Array& as_array();
  const Object& as_object() const;
  Object& as_object();

  // Object access (a linear scan: index a large object yourself). find() returns nullptr when
  // absent; at() throws IoError naming the key.
  const Value* find(std::string_view key) const;
  const Value& at(std::string_view key) const;
  // Inserts or replaces (keeping the original position when replacing); a linear scan too.
  Value& set(std::string key, Value value);
  // Array append.
  Value& push_back(Value value);
  std::size_t size() const;

 private:
  void require(Type t) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

const char* to_string(Value::Type t);

// Strict RFC 8259 parse (no comments, no trailing commas, nesting at most 256 deep). Throws
// IoError naming the byte offset and what was expected.
Value parse(std::string_view text);
// Compact when indent < 0, otherwise pretty-printed. Non-finite numbers are written as null.
std::string dump(const Value& value, int indent = 2);

}  // namespace qround::json
