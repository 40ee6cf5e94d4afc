// safetensors files: an 8-byte little-endian header length N, N bytes of JSON
//   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "string value", ...}}
// then the tensor data (offsets relative to its start, row-major, little-endian).
//
// Reading validates everything before use: the header length against the file size, the JSON,
// each dtype, shape (no overflow) and offset pair (in bounds, end − begin = elements × item size,
// no two tensors overlapping). A malformed, truncated or hostile file raises IoError.
//
// Quantized layers are stored as (for a layer NAME, see save_quantized):
//   NAME.qweight  U8  [bytes]         PackedMatrix bytes in its canonical layout (packed.hpp)
//   NAME.scales   F32 [rows, groups]
//   NAME.zeros    I32 [rows, groups]
//   NAME.exponent F32 [rows]          NUPES grids only
// and in __metadata__: "format" = "qround.packed.v1", "NAME" = JSON of the grid and report
// summary (method, bits, group_size, granularity, symmetric, restricted, container, rows, cols).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "qround/packed.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround::io {

enum class SafetensorsDtype { kF32, kF16, kBF16, kI32, kI8, kU8 };
const char* to_string(SafetensorsDtype d);  // "F32", "F16", …
std::size_t item_size(SafetensorsDtype d);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte range inside the data section
  std::int64_t elements() const;
};

class SafetensorsFile {
 public:
  static SafetensorsFile load(const std::string& path);
  // Parses a whole file image (tests, memory buffers); `what` names it in errors.
  static SafetensorsFile parse(std::vector<unsigned char> bytes, const std::string& what);

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const;
  const SafetensorsTensor& tensor(const std::string& name) const;  // IoError if absent

  // A 1-D (→ 1 × n) or 2-D F32 / F16 / BF16 tensor as float; other dtypes are an IoError.
  MatrixF read_float(const std::string& name) const;
  // Raw bytes of a tensor whose dtype must be `expect` (IoError otherwise).
  const unsigned char* raw(const std::string& name, SafetensorsDtype expect) const;

 private:
  std::string what_;
  std::vector<unsigned char> bytes_;
  std::size_t data_start_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::unordered_map<std::string, std::size_t> index_;  // name → position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Builds a safetensors file in memory and writes it atomically (temporary name, then rename).
class SafetensorsWriter {
 public:
  void add(const std::string& name, SafetensorsDtype dtype, std::vector<std::int64_t> shape,
           const void* data, std::size_t bytes);
  void add_float(const std::string& name, const MatrixFRef& m);  // F32 [rows, cols]
  void set_metadata(const std::string& key, const std::string& value);
  std::vector<unsigned char> serialize() const;
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    SafetensorsDtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One quantized layer as written to / read from a file.
struct NamedPackedLayer {
  std::string name;
  PackedMatrix packed;
  std::string method;  // metadata only
};

// Writes packed layers (with grid metadata and `extra_metadata`) atomically.
void save_quantized(const std::string& path, const std::vector<NamedPackedLayer>& layers,
                    const std::map<std::string, std::string>& extra_metadata = {});
// Reads them back: the same PackedMatrix objects bit for bit (the stored bytes are re-derived
// from the decoded codes and compared; any mismatch is an IoError).
std::vector<NamedPackedLayer> load_quantized(const std::string& path);

}  // namespace qround::io
