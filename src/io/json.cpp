#include "qround/io/json.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "qround/error.hpp"

namespace qround::json {

const char* to_string(Value::Type t) {
  switch (t) {
    case Value::Type::kNull: return "null";
    case Value::Type::kBool: return "boolean";
    case Value::Type::kNumber: return "number";
    case Value::Type::kString: return "string";
    case Value::Type::kArray: return "array";
    case Value::Type::kObject: return "object";
  }
  return "?";
}

void Value::require(Type t) const {
  if (type_ != t)
    throw IoError(fmt::format("JSON: expected {}, found {}", to_string(t), to_string(type_)));
}

bool Value::as_bool() const {
  require(Type::kBool);
  return bool_;
}
double Value::as_number() const {
  require(Type::kNumber);
  return number_;
}
std::int64_t Value::as_int(std::int64_t lo, std::int64_t hi) const {
  require(Type::kNumber);
  if (number_ != std::floor(number_) || number_ < static_cast<double>(lo) ||
      number_ > static_cast<double>(hi))
    throw IoError(fmt::format("JSON: expected an integer in [{}, {}], found {}", lo, hi,
                              number_));
  return static_cast<std::int64_t>(number_);
}
const std::string& Value::as_string() const {
  require(Type::kString);
  return string_;
}
const Value::Array& Value::as_array() const {
  require(Type::kArray);
  return array_;
}
Value::Array& Value::as_array() {
  require(Type::kArray);
  return array_;
}
const Value::Object& Value::as_object() const {
  require(Type::kObject);
  return object_;
}

Value::Object& Value::as_object() {
  require(Type::kObject);
  return object_;
}

const Value* Value::find(std::string_view key) const {
  require(Type::kObject);
  for (const auto& [k, v] : object_)
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw IoError(fmt::format("JSON: missing key \"{}\"", key));
  return *v;
}

Value& Value::set(std::string key, Value value) {
  require(Type::kObject);
  for (auto& [k, v] : object_)
    if (k == key) return v = std::move(value);
  object_.emplace_back(std::move(key), std::move(value));
  return object_.back().second;
}

Value& Value::push_back(Value value) {
  require(Type::kArray);
  array_.push_back(std::move(value));
  return array_.back();
}

std::size_t Value::size() const {
  if (type_ == Type::kArray) return array_.size();
  if (type_ == Type::kObject) return object_.size();
  throw IoError(fmt::format("JSON: size() of a {}", to_string(type_)));
}

namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("end of input");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* expected) const {
    if (pos_ >= s_.size())
      throw IoError(fmt::format("JSON: expected {} at offset {}, found end of input", expected,
                                pos_));
    throw IoError(fmt::format("JSON: expected {} at offset {}, found '{}'", expected, pos_,
                              s_[pos_]));
  }
  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool consume(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (s_.substr(pos_, n) != word) fail(word);
    pos_ += n;
  }

  Value value(int depth) {
    if (depth > 256) fail("nesting at most 256 deep");
    skip_ws();
    if (pos_ >= s_.size()) fail("a value");
    const char c = s_[pos_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value(string());
    if (c == 't') return literal("true"), Value(true);
    if (c == 'f') return literal("false"), Value(false);
    if (c == 'n') return literal("null"), Value();
    if (c == '-' || (c >= '0' && c <= '9')) return Value(number());
    fail("a value");
  }

  Value object(int depth) {
    ++pos_;
    Value obj = Value::object();
    if (consume('}')) return obj;
    // Duplicate keys are refused with a hash set: O(1) per key, so a hostile header with many
    // keys parses in linear time (a scan of the members would make it quadratic).
    std::unordered_set<std::string> keys;
    Value::Object& members = obj.as_object();
    do {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') fail("a string key");
      std::string key = string();
      if (!keys.insert(key).second) throw IoError(fmt::format("JSON: duplicate key \"{}\"", key));
      if (!consume(':')) fail("':'");
      Value v = value(depth + 1);
      members.emplace_back(std::move(key), std::move(v));
    } while (consume(','));
    if (!consume('}')) fail("',' or '}'");
    return obj;
  }

  Value array(int depth) {
    ++pos_;
    Value arr = Value::array();
    if (consume(']')) return arr;
    do {
      arr.push_back(value(depth + 1));
    } while (consume(','));
    if (!consume(']')) fail("',' or ']'");
    return arr;
  }

  double number() {
    const std::size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    auto digits = [&] {
      const std::size_t d = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == d) fail("a digit");
    };
    if (pos_ < s_.size() && s_[pos_] == '0')
      ++pos_;
    else
      digits();
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    const std::string text(s_.substr(start, pos_ - start));
    return std::strtod(text.c_str(), nullptr);
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("4 hex digits");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else { --pos_; fail("a hex digit"); }
    }
    return v;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("a closing '\"'");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        fail("no control character inside a string");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("an escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (s_.substr(pos_, 2) != "\\u") fail("a low surrogate");
            pos_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("a high surrogate first");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          fail("a valid escape");
      }
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else
          out += c;
    }
  }
  out += '"';
}

void dump_value(std::string& out, const Value& v, int indent, int level) {
  const auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent * lvl), ' ');
  };
  switch (v.type()) {
    case Value::Type::kNull: out += "null"; break;
    case Value::Type::kBool: out += v.as_bool() ? "true" : "false"; break;
    case Value::Type::kNumber: {
      const double d = v.as_number();
      if (!std::isfinite(d))
        out += "null";
      else if (d == std::floor(d) && std::fabs(d) < 1e15)
        out += fmt::format("{}", static_cast<long long>(d));
      else
        out += fmt::format("{}", d);  // shortest round-trip form
      break;
    }
    case Value::Type::kString: dump_string(out, v.as_string()); break;
    case Value::Type::kArray: {
      const auto& a = v.as_array();
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_value(out, a[i], indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      break;
    }
    case Value::Type::kObject: {
      const auto& o = v.as_object();
      out += '{';
      for (std::size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_string(out, o[i].first);
        out += indent < 0 ? ":" : ": ";
        dump_value(out, o[i].second, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      break;
    }
  }
}

}  // namespace

Value parse(std::string_view text) { return Parser(text).document(); }

std::string dump(const Value& value, int indent) {
  std::string out;
  dump_value(out, value, indent, 0);
  return out;
}

}  // namespace qround::json
