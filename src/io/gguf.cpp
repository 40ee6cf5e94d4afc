#include "qround/io/gguf.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "file_bytes.hpp"
#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"

namespace qround::io {
namespace {

// gguf.h: GGUF_MAGIC "GGUF", GGUF_VERSION 3; gguf.cpp refuses version 1 (32-bit counts).
constexpr unsigned char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

template <typename T>
constexpr std::size_t wire_size() {
  if constexpr (std::is_same_v<T, bool>)
    return 1;  // gguf.h: bools are stored as int8_t
  else
    return sizeof(T);
}

std::uint64_t pad_to(std::uint64_t n, std::uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

// The checks a tensor's name, shape and type must pass, shared by the reader (IoError) and
// add_tensor (InvalidArgument): an empty string when fine, else what is wrong.
std::string shape_problem(const std::string& name, GgmlType type,
                          const std::vector<std::int64_t>& shape, std::uint64_t* bytes) {
  if (name.empty()) return "tensor name is empty";
  if (name.size() > kGgufMaxNameBytes)
    return fmt::format("tensor name '{}…' has {} bytes: expected fewer than 64 (GGML_MAX_NAME)",
                       name.substr(0, 32), name.size());
  if (shape.empty() || shape.size() > kMaxDims)
    return fmt::format("tensor '{}' has {} dimensions: expected 1 to {}", name, shape.size(),
                       kMaxDims);
  std::uint64_t elements = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0)
      return fmt::format("tensor '{}' dimension {} is {}: expected a non-negative size", name, d,
                         shape[d]);
    const auto n = static_cast<std::uint64_t>(shape[d]);
    if (n != 0 &&
        elements > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / n)
      return fmt::format("tensor '{}' has more than 2^63 elements", name);
    elements *= n;
  }
  if (!is_known_ggml_type(static_cast<std::uint32_t>(type)))
    return fmt::format(
        "tensor '{}' has ggml type {}: expected one qround knows (f32, f16, bf16, "
        "q4_0, q4_1, q5_0, q5_1, q8_0, q2_k … q6_k)",
        name, static_cast<std::uint32_t>(type));
  const GgmlTypeTraits& t = ggml_traits(type);
  if (shape[0] % t.block != 0)
    return fmt::format("tensor '{}' has rows of {} elements: {} needs a multiple of its block {}",
                       name, shape[0], t.name, t.block);
  const std::uint64_t row = ggml_row_bytes(type, static_cast<std::uint64_t>(shape[0]));
  const std::uint64_t rows = shape[0] == 0 ? 0 : elements / static_cast<std::uint64_t>(shape[0]);
  if (rows != 0 && row > std::numeric_limits<std::uint64_t>::max() / 2 / rows)
    return fmt::format("tensor '{}' has a byte size that overflows 64 bits", name);
  *bytes = row * rows;
  return {};
}

// Little-endian reader over the file image with field-naming errors.
class Reader {
 public:
  Reader(const std::vector<unsigned char>& bytes, const std::string& what)
      : cur_(bytes.data(), bytes.size(), what), what_(what) {}

  template <typename T>
  T read(const std::string& field) {
    static_assert(!std::is_same_v<T, bool>);
    return cur_.read<T>(field.c_str());
  }
  bool read_bool(const std::string& field) {
    const auto b = cur_.read<std::uint8_t>(field.c_str());
    if (b > 1) fail(fmt::format("{} is a bool stored as {}: expected 0 or 1", field, b));
    return b == 1;
  }
  std::string read_string(const std::string& field) {
    const auto n = cur_.read<std::uint64_t>((field + " length").c_str());
    if (n > cur_.remaining())
      fail(fmt::format("{} has length {}: more than the {} bytes left in the file", field, n,
                       cur_.remaining()));
    const unsigned char* p = cur_.take(static_cast<std::size_t>(n), field.c_str());
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }
  // Refuses a count of items of at least `min_bytes` each that cannot fit in the rest of the file,
  // before anything is allocated for them.
  void check_count(std::uint64_t n, std::uint64_t min_bytes, const std::string& field) {
    if (n > cur_.remaining() / min_bytes)
      fail(fmt::format("{} is {}: {} items of at least {} bytes cannot fit in the {} bytes left",
                       field, n, n, min_bytes, cur_.remaining()));
  }
  std::size_t offset() const { return cur_.offset(); }
  [[noreturn]] void fail(const std::string& msg) const {
    throw IoError(fmt::format("{}: {}", what_, msg));
  }

 private:
  io_detail::ByteCursor cur_;
  const std::string& what_;
};

template <typename T>
GgufValue::Storage read_elements(Reader& r, std::uint64_t n, const std::string& field) {
  // Strings need at least their 8-byte length each; everything else its fixed size.
  if (n > 1)
    r.check_count(n, std::is_same_v<T, std::string> ? 8 : wire_size<T>(), field + " element count");
  std::vector<T> v;
  v.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    // Fixed-size elements fit (checked above), so only strings need a per-element field name.
    if constexpr (std::is_same_v<T, std::string>)
      v.push_back(r.read_string(n == 1 ? field : fmt::format("{}[{}]", field, i)));
    else if constexpr (std::is_same_v<T, bool>)
      v.push_back(r.read_bool(field));
    else
      v.push_back(r.read<T>(field));
  }
  return GgufValue::Storage(std::move(v));
}

GgufValue::Storage read_typed(Reader& r, std::uint32_t type, std::uint64_t n,
                              const std::string& field) {
  switch (static_cast<GgufType>(type)) {
    case GgufType::kUint8:
      return read_elements<std::uint8_t>(r, n, field);
    case GgufType::kInt8:
      return read_elements<std::int8_t>(r, n, field);
    case GgufType::kUint16:
      return read_elements<std::uint16_t>(r, n, field);
    case GgufType::kInt16:
      return read_elements<std::int16_t>(r, n, field);
    case GgufType::kUint32:
      return read_elements<std::uint32_t>(r, n, field);
    case GgufType::kInt32:
      return read_elements<std::int32_t>(r, n, field);
    case GgufType::kFloat32:
      return read_elements<float>(r, n, field);
    case GgufType::kBool:
      return read_elements<bool>(r, n, field);
    case GgufType::kString:
      return read_elements<std::string>(r, n, field);
    case GgufType::kUint64:
      return read_elements<std::uint64_t>(r, n, field);
    case GgufType::kInt64:
      return read_elements<std::int64_t>(r, n, field);
    case GgufType::kFloat64:
      return read_elements<double>(r, n, field);
    case GgufType::kArray:
      break;
  }
  r.fail(
      fmt::format("{} has value type {}: expected 0 to 12 (an array element type other than "
                  "9, gguf.cpp allows no nested arrays)",
                  field, type));
}

// Little-endian writer into a growing buffer.
class Writer {
 public:
  template <typename T>
  void put(T v) {
    if constexpr (std::is_same_v<T, bool>) {
      out_.push_back(v ? 1 : 0);
    } else {
      const std::size_t at = out_.size();
      out_.resize(at + sizeof(T));
      std::memcpy(out_.data() + at, &v, sizeof(T));
    }
  }
  void put_string(const std::string& s) {
    put<std::uint64_t>(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void put_bytes(const unsigned char* p, std::size_t n) { out_.insert(out_.end(), p, p + n); }
  void pad(std::size_t alignment) { out_.resize(pad_to(out_.size(), alignment), 0); }
  std::size_t size() const { return out_.size(); }
  std::vector<unsigned char> take() { return std::move(out_); }

 private:
  std::vector<unsigned char> out_;
};

void put_value(Writer& w, const GgufValue& v) {
  w.put<std::uint32_t>(static_cast<std::uint32_t>(v.type()));
  if (v.is_array()) {
    w.put<std::uint32_t>(static_cast<std::uint32_t>(v.element_type()));
    w.put<std::uint64_t>(v.size());
  }
  std::visit(
      [&](const auto& values) {
        using T = typename std::decay_t<decltype(values)>::value_type;
        for (const auto& x : values) {
          if constexpr (std::is_same_v<T, std::string>)
            w.put_string(x);
          else
            w.put<T>(x);
        }
      },
      v.storage());
}

template <typename T>
bool same_bits(const T& a, const T& b) {
  if constexpr (std::is_floating_point_v<T>)
    return std::memcmp(&a, &b, sizeof(T)) == 0;
  else
    return a == b;
}

}  // namespace

// ---- GgufValue -----------------------------------------------------------------------------

const char* to_string(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "?";
}

GgufValue GgufValue::from_storage(Storage values, bool is_array) {
  GgufValue v(std::move(values), is_array);
  if (!is_array && v.size() != 1)
    throw InvalidArgument(
        fmt::format("a scalar GGUF value holds exactly one element, not {}", v.size()));
  return v;
}

std::size_t GgufValue::size() const {
  return std::visit([](const auto& values) { return values.size(); }, values_);
}

bool GgufValue::get_bool() const {
  if (is_array_ || !std::holds_alternative<std::vector<bool>>(values_)) mismatch(false);
  return std::get<std::vector<bool>>(values_).front();
}

void GgufValue::mismatch(bool want_array) const {
  throw IoError(fmt::format("GGUF value is {}: expected {} of the requested type", describe(),
                            want_array ? "an array" : "a scalar"));
}

bool GgufValue::operator==(const GgufValue& other) const {
  if (is_array_ != other.is_array_ || values_.index() != other.values_.index()) return false;
  return std::visit(
      [&](const auto& a) {
        const auto& b = std::get<std::decay_t<decltype(a)>>(other.values_);
        if (a.size() != b.size()) return false;
        for (std::size_t i = 0; i < a.size(); ++i)
          if (!same_bits<typename std::decay_t<decltype(a)>::value_type>(a[i], b[i])) return false;
        return true;
      },
      values_);
}

std::string GgufValue::describe() const {
  if (is_array_) return fmt::format("array[{}] of {}", size(), to_string(element_type()));
  return std::visit(
      [&](const auto& a) -> std::string {
        using T = typename std::decay_t<decltype(a)>::value_type;
        if constexpr (std::is_same_v<T, std::string>)
          return fmt::format("string '{}'", a.front().substr(0, 64));
        else if constexpr (std::is_same_v<T, bool>)
          return a.front() ? "bool true" : "bool false";
        else if constexpr (sizeof(T) == 1)
          return fmt::format("{} {}", to_string(element_type()), static_cast<int>(a.front()));
        else
          return fmt::format("{} {}", to_string(element_type()), a.front());
      },
      values_);
}

// ---- GgufTensor / GgufFile -----------------------------------------------------------------

std::int64_t GgufTensor::rows() const {
  std::int64_t r = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) r *= shape[d];
  return r;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : metadata_)
    if (k == key) return &v;
  return nullptr;
}

const GgufValue& GgufFile::get(const std::string& key) const {
  if (const GgufValue* v = find(key)) return *v;
  throw IoError(fmt::format("GGUF metadata has no key '{}'", key));
}

void GgufFile::set(const std::string& key, GgufValue value) {
  if (key.empty()) throw InvalidArgument("GGUF metadata key is empty");
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(key, std::move(value));
}

bool GgufFile::erase(const std::string& key) {
  const auto it = std::find_if(metadata_.begin(), metadata_.end(),
                               [&](const auto& kv) { return kv.first == key; });
  if (it == metadata_.end()) return false;
  metadata_.erase(it);
  return true;
}

std::uint32_t GgufFile::alignment() const {
  const GgufValue* v = find(kGgufKeyAlignment);
  return v ? v->get<std::uint32_t>() : kGgufAlignment;
}

bool GgufFile::has_tensor(const std::string& name) const {
  return std::any_of(tensors_.begin(), tensors_.end(),
                     [&](const GgufTensor& t) { return t.name == name; });
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  for (const GgufTensor& t : tensors_)
    if (t.name == name) return t;
  throw IoError(fmt::format("GGUF file has no tensor '{}'", name));
}

void GgufFile::add_tensor(const std::string& name, GgmlType type, std::vector<std::int64_t> shape,
                          const void* data, std::size_t bytes) {
  std::uint64_t expected = 0;
  if (std::string problem = shape_problem(name, type, shape, &expected); !problem.empty())
    throw InvalidArgument(problem);
  if (has_tensor(name))
    throw InvalidArgument(fmt::format("tensor '{}' is already in the file", name));
  if (bytes != expected)
    throw InvalidArgument(fmt::format("tensor '{}' ({} × {} {}) has {} bytes of data: expected {}",
                                      name, shape.size() > 1 ? shape[1] : 1, shape[0],
                                      to_string(type), bytes, expected));
  GgufTensor t;
  t.name = name;
  t.type = type;
  t.shape = std::move(shape);
  const auto* p = static_cast<const unsigned char*>(data);
  t.storage_ = std::make_shared<const std::vector<unsigned char>>(p, p + bytes);
  t.size_ = bytes;
  tensors_.push_back(std::move(t));
}

void set_standard_metadata(GgufFile& file, const std::string& architecture) {
  file.set(kGgufKeyArchitecture, GgufValue::string(architecture));
  file.set(kGgufKeyQuantizationVersion, GgufValue::scalar<std::uint32_t>(kGgufQuantizationVersion));
  file.set(kGgufKeyAlignment, GgufValue::scalar<std::uint32_t>(kGgufAlignment));
}

// ---- reading -------------------------------------------------------------------------------

GgufFile read_gguf(const std::string& path, const GgufReadOptions& options) {
  return parse_gguf(io_detail::read_file_bytes(path, "GGUF file", options.max_file_bytes),
                    fmt::format("GGUF file '{}'", path), options);
}

GgufFile parse_gguf(std::vector<unsigned char> bytes, const std::string& what,
                    const GgufReadOptions& options) {
  if (bytes.size() > options.max_file_bytes)
    throw IoError(fmt::format("{} has {} bytes, more than the limit of {}", what, bytes.size(),
                              options.max_file_bytes));
  auto image = std::make_shared<const std::vector<unsigned char>>(std::move(bytes));
  Reader r(*image, what);
  GgufFile file;

  const auto magic = r.read<std::uint32_t>("magic");
  if (std::memcmp(&magic, kMagic, 4) != 0)
    r.fail(fmt::format("magic is 0x{:08x}: expected \"GGUF\" (0x46554747)", magic));
  file.version = r.read<std::uint32_t>("version");
  if (file.version != 2 && file.version != 3)
    r.fail(fmt::format("version is {}: expected 2 or 3 (little-endian; version 1 is obsolete)",
                       file.version));
  const auto n_tensors = r.read<std::int64_t>("tensor count");
  const auto n_kv = r.read<std::int64_t>("metadata count");
  if (n_tensors < 0) r.fail(fmt::format("tensor count is {}: expected ≥ 0", n_tensors));
  if (n_kv < 0) r.fail(fmt::format("metadata count is {}: expected ≥ 0", n_kv));
  // A key/value needs ≥ 13 bytes (8 length + 1 key byte + 4 type), a tensor info ≥ 25.
  r.check_count(static_cast<std::uint64_t>(n_kv), 13, "metadata count");
  r.check_count(static_cast<std::uint64_t>(n_tensors), 25, "tensor count");

  std::unordered_set<std::string> keys;
  file.metadata_.reserve(static_cast<std::size_t>(n_kv));
  for (std::int64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string(fmt::format("metadata key {}", i));
    if (key.empty()) r.fail(fmt::format("metadata key {} is empty", i));
    if (!keys.insert(key).second) r.fail(fmt::format("metadata key '{}' appears twice", key));
    const std::string field = fmt::format("metadata '{}'", key);
    const auto type = r.read<std::uint32_t>(field + " value type");
    GgufValue value;
    if (type == static_cast<std::uint32_t>(GgufType::kArray)) {
      const auto element = r.read<std::uint32_t>(field + " array element type");
      const auto n = r.read<std::uint64_t>(field + " array length");
      value = GgufValue::from_storage(read_typed(r, element, n, field), true);
    } else {
      value = GgufValue::from_storage(read_typed(r, type, 1, field), false);
    }
    file.metadata_.emplace_back(std::move(key), std::move(value));
  }

  std::uint32_t alignment = kGgufAlignment;
  if (const GgufValue* a = file.find(kGgufKeyAlignment)) {
    // gguf.cpp: general.alignment must be a uint32 power of two.
    if (a->type() != GgufType::kUint32)
      r.fail(fmt::format("general.alignment is {}: expected a uint32", a->describe()));
    alignment = a->get<std::uint32_t>();
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
      r.fail(fmt::format("general.alignment is {}: expected a power of two", alignment));
  }

  std::unordered_set<std::string> names;
  file.tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::int64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.read_string(fmt::format("tensor {} name", i));
    if (!names.insert(t.name).second) r.fail(fmt::format("tensor name '{}' appears twice", t.name));
    const std::string field = fmt::format("tensor '{}'", t.name.substr(0, 64));
    const auto n_dims = r.read<std::uint32_t>(field + " dimension count");
    if (n_dims > kMaxDims)
      r.fail(fmt::format("{} dimension count is {}: expected at most {}", field, n_dims, kMaxDims));
    for (std::uint32_t d = 0; d < n_dims; ++d)
      t.shape.push_back(r.read<std::int64_t>(fmt::format("{} dimension {}", field, d)));
    if (t.shape.empty()) t.shape.push_back(1);  // gguf.cpp: missing dimensions are 1
    const auto type = r.read<std::uint32_t>(field + " type");
    t.type = static_cast<GgmlType>(type);
    std::uint64_t nbytes = 0;
    if (std::string problem = shape_problem(t.name, t.type, t.shape, &nbytes); !problem.empty())
      r.fail(problem);
    t.offset = r.read<std::uint64_t>(field + " offset");
    if (t.offset % alignment != 0)
      r.fail(fmt::format("{} offset is {}: expected a multiple of the alignment {}", field,
                         t.offset, alignment));
    t.size_ = static_cast<std::size_t>(nbytes);
    file.tensors_.push_back(std::move(t));
  }

  if (n_tensors > 0) {
    const std::uint64_t start = pad_to(r.offset(), alignment);
    if (start > image->size())
      r.fail(
          fmt::format("data section starts at {} (tensor infos padded to {}): past the end "
                      "of the file ({} bytes)",
                      start, alignment, image->size()));
    const std::uint64_t data_bytes = image->size() - start;
    for (GgufTensor& t : file.tensors_) {
      if (t.offset > data_bytes || t.size_ > data_bytes - t.offset)
        r.fail(fmt::format("tensor '{}' data [{}, {}) lies outside the data section of {} bytes",
                           t.name, t.offset, t.offset + t.size_, data_bytes));
      t.begin_ = static_cast<std::size_t>(start + t.offset);
      t.storage_ = image;
    }
    std::vector<const GgufTensor*> by_offset;
    for (const GgufTensor& t : file.tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensor& a = *by_offset[i - 1];
      const GgufTensor& b = *by_offset[i];
      if (a.offset + a.bytes() > b.offset)
        r.fail(fmt::format("tensor '{}' data [{}, {}) overlaps tensor '{}' at offset {}", a.name,
                           a.offset, a.offset + a.bytes(), b.name, b.offset));
    }
  }
  return file;
}

// ---- writing -------------------------------------------------------------------------------

std::vector<unsigned char> serialize_gguf(const GgufFile& file) {
  std::vector<std::pair<std::string, GgufValue>> metadata = file.metadata();
  const GgufValue want = GgufValue::scalar<std::uint32_t>(kGgufAlignment);
  if (const GgufValue* a = file.find(kGgufKeyAlignment)) {
    if (*a != want)
      throw InvalidArgument(fmt::format("general.alignment is {}: the writer uses uint32 {}",
                                        a->describe(), kGgufAlignment));
  } else {
    metadata.insert(metadata.begin(), {kGgufKeyAlignment, want});
  }
  Writer w;
  w.put_bytes(kMagic, 4);
  w.put<std::uint32_t>(3);
  w.put<std::int64_t>(static_cast<std::int64_t>(file.tensors().size()));
  w.put<std::int64_t>(static_cast<std::int64_t>(metadata.size()));
  for (const auto& [key, value] : metadata) {
    w.put_string(key);
    put_value(w, value);
  }
  std::uint64_t offset = 0;
  for (const GgufTensor& t : file.tensors()) {
    w.put_string(t.name);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(t.shape.size()));
    for (std::int64_t d : t.shape) w.put<std::int64_t>(d);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(t.type));
    w.put<std::uint64_t>(offset);
    offset += pad_to(t.bytes(), kGgufAlignment);
  }
  w.pad(kGgufAlignment);
  for (const GgufTensor& t : file.tensors()) {
    w.put_bytes(t.data(), t.bytes());
    w.pad(kGgufAlignment);
  }
  return w.take();
}

void write_gguf(const std::string& path, const GgufFile& file) {
  const std::vector<unsigned char> bytes = serialize_gguf(file);
  AtomicFile out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

}  // namespace qround::io
