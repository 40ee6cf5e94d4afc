// GGUF files, the container llama.cpp loads: a header, ordered typed metadata, tensor infos and an
// aligned data section of ggml-typed tensors (layout: ggml/include/gguf.h, ggml/src/gguf.cpp).
//
//   "GGUF"  u32 version  i64 n_tensors  i64 n_kv
//   n_kv × (string key, i32 value type, value | i32 element type, u64 count, count × element)
//   n_tensors × (string name, u32 n_dims, n_dims × i64 ne, i32 ggml type, u64 offset)
//   padding to general.alignment (default 32), then the data section; offsets are relative to it.
//   Strings are a u64 length and the bytes; bools one byte; everything little-endian.
//
// Reading validates every count, length, type, dimension, offset and the alignment before use and
// before allocating (each count is checked against the bytes left in the file), so a truncated or
// hostile file raises IoError naming the field and what was expected. Versions 2 and 3 share the
// little-endian layout; version 1 (32-bit counts) is refused as gguf.cpp refuses it.
//
// Writing produces version 3 with general.alignment = 32, offsets consecutive in tensor order each
// padded to 32 (the data of the last tensor too, as gguf.cpp writes it), atomically.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "qround/format.hpp"

namespace qround::io {

// GGUF metadata value types, with the ids the file stores (gguf.h enum gguf_type).
enum class GgufType : std::uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* to_string(GgufType type);  // "uint8", …, "array"

// One metadata value: a scalar or an array of one element type (gguf.cpp allows no nested arrays).
// The C++ types are uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
// std::string, uint64_t, int64_t, double. Typed getters throw IoError on a type mismatch, since a
// mismatch means the file holds something other than what the caller's key requires.
class GgufValue {
 public:
  using Storage =
      std::variant<std::vector<std::uint8_t>, std::vector<std::int8_t>, std::vector<std::uint16_t>,
                   std::vector<std::int16_t>, std::vector<std::uint32_t>, std::vector<std::int32_t>,
                   std::vector<float>, std::vector<bool>, std::vector<std::string>,
                   std::vector<std::uint64_t>, std::vector<std::int64_t>, std::vector<double>>;

  GgufValue() : GgufValue(scalar<std::uint8_t>(0)) {}

  template <typename T>
  static GgufValue scalar(T v) {
    return GgufValue(Storage(std::vector<T>{std::move(v)}), false);
  }
  static GgufValue string(std::string s) { return scalar<std::string>(std::move(s)); }
  template <typename T>
  static GgufValue array(std::vector<T> v) {
    return GgufValue(Storage(std::move(v)), true);
  }
  // An array whose element type is given at run time (the reader's case); `values` must match.
  static GgufValue from_storage(Storage values, bool is_array);

  bool is_array() const { return is_array_; }
  // The stored value type: kArray for arrays (see element_type()).
  GgufType type() const { return is_array_ ? GgufType::kArray : element_type(); }
  GgufType element_type() const { return static_cast<GgufType>(kTypeIds[values_.index()]); }
  std::size_t size() const;  // elements (1 for a scalar)

  template <typename T>
  const T& get() const {
    static_assert(!std::is_same_v<T, bool>, "use get_bool(): vector<bool> holds no bool objects");
    if (is_array_ || !std::holds_alternative<std::vector<T>>(values_)) mismatch(false);
    return std::get<std::vector<T>>(values_).front();
  }
  bool get_bool() const;  // get<bool>() cannot return a reference into vector<bool>
  template <typename T>
  const std::vector<T>& get_array() const {
    if (!is_array_ || !std::holds_alternative<std::vector<T>>(values_)) mismatch(true);
    return std::get<std::vector<T>>(values_);
  }
  const Storage& storage() const { return values_; }

  // Same type and the same bits (floats compare by bit pattern, so NaNs and −0 round-trip).
  bool operator==(const GgufValue& other) const;
  bool operator!=(const GgufValue& other) const { return !(*this == other); }
  std::string describe()
      const;  // short text for messages and reports: "uint32 32", "array[5] of string"

 private:
  static constexpr std::uint32_t kTypeIds[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12};
  GgufValue(Storage values, bool is_array) : values_(std::move(values)), is_array_(is_array) {}
  [[noreturn]] void mismatch(bool want_array) const;

  Storage values_;
  bool is_array_ = false;
};

class GgufFile;
struct GgufReadOptions;

// A tensor: ggml's dimension order (shape[0] = ne0 = the length of one row, the fastest-varying
// index), its type and its bytes (opaque ggml blocks, row after row).
struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<std::int64_t> shape;  // 1 to 4 entries (a 0-dimensional tensor reads as {1})
  std::uint64_t offset = 0;         // in the data section, as read (the writer recomputes it)

  std::int64_t cols() const { return shape.empty() ? 1 : shape[0]; }  // ne0
  std::int64_t rows() const;                                          // ne1·ne2·ne3
  std::int64_t elements() const { return cols() * rows(); }
  const unsigned char* data() const { return storage_ ? storage_->data() + begin_ : nullptr; }
  std::size_t bytes() const { return size_; }

 private:
  friend class GgufFile;
  friend GgufFile parse_gguf(std::vector<unsigned char> bytes, const std::string& what,
                             const GgufReadOptions& options);
  std::shared_ptr<const std::vector<unsigned char>> storage_;  // shared with the file image
  std::size_t begin_ = 0, size_ = 0;
};

struct GgufReadOptions {
  std::uint64_t max_file_bytes = std::uint64_t{1} << 40;  // refuse larger files before reading
};

class GgufFile {
 public:
  std::uint32_t version = 3;  // as read; the writer always writes 3

  // ---- metadata, in file order ----
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr when absent
  const GgufValue& get(const std::string& key) const;   // IoError naming the key when absent
  // Replaces the value of an existing key in place, else appends it. The key must be non-empty.
  void set(const std::string& key, GgufValue value);
  bool erase(const std::string& key);
  // The alignment of the data section: general.alignment, else 32.
  std::uint32_t alignment() const;

  // ---- tensors, in file order ----
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const;
  const GgufTensor& tensor(const std::string& name) const;  // IoError naming it when absent
  // Appends a tensor, copying its bytes. InvalidArgument unless the name is non-empty, shorter
  // than 64 bytes (GGML_MAX_NAME) and new, the shape has 1 to 4 non-negative entries, ne0 is a
  // multiple of the type's block and `bytes` = ggml_row_bytes(type, ne0) · rows.
  void add_tensor(const std::string& name, GgmlType type, std::vector<std::int64_t> shape,
                  const void* data, std::size_t bytes);

 private:
  friend GgufFile parse_gguf(std::vector<unsigned char> bytes, const std::string& what,
                             const GgufReadOptions& options);
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensor> tensors_;
};

// The keys every file qround writes carries (gguf.cpp, llama.cpp's conventions).
constexpr const char* kGgufKeyAlignment = "general.alignment";
constexpr const char* kGgufKeyArchitecture = "general.architecture";
constexpr const char* kGgufKeyQuantizationVersion = "general.quantization_version";
constexpr std::uint32_t kGgufAlignment = 32;           // GGUF_DEFAULT_ALIGNMENT
constexpr std::uint32_t kGgufQuantizationVersion = 2;  // GGML_QNT_VERSION
constexpr std::size_t kGgufMaxNameBytes = 63;          // names < GGML_MAX_NAME (64)

// Sets general.architecture, general.quantization_version = 2 and general.alignment = 32 (uint32).
void set_standard_metadata(GgufFile& file, const std::string& architecture);

GgufFile read_gguf(const std::string& path, const GgufReadOptions& options = {});
// Parses a whole file image (tests, fuzzing, memory buffers); `what` names it in errors.
GgufFile parse_gguf(std::vector<unsigned char> bytes, const std::string& what,
                    const GgufReadOptions& options = {});

// The file image: version 3, general.alignment = 32 (added first when absent; another value or
// type is InvalidArgument), tensor data consecutive and each padded to 32.
std::vector<unsigned char> serialize_gguf(const GgufFile& file);
// Writes serialize_gguf(file) atomically (temporary name, then rename).
void write_gguf(const std::string& path, const GgufFile& file);

}  // namespace qround::io
