#include "qround/io/safetensors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "file_bytes.hpp"
#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"

namespace qround::io {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own recommended cap
constexpr std::uint64_t kMaxFileBytes = std::uint64_t{1} << 40;
constexpr const char* kFormat = "qround.packed.v1";

SafetensorsDtype parse_dtype(const std::string& s, const std::string& what,
                             const std::string& tensor) {
  for (auto d : {SafetensorsDtype::kF32, SafetensorsDtype::kF16, SafetensorsDtype::kBF16,
                 SafetensorsDtype::kI32, SafetensorsDtype::kI8, SafetensorsDtype::kU8})
    if (s == to_string(d)) return d;
  throw IoError(fmt::format("{}: tensor '{}' has dtype '{}': expected one of F32, F16, BF16, I32, "
                            "I8, U8",
                            what, tensor, s));
}

float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::int64_t checked_elements(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

}  // namespace

const char* to_string(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF32: return "F32";
    case SafetensorsDtype::kF16: return "F16";
    case SafetensorsDtype::kBF16: return "BF16";
    case SafetensorsDtype::kI32: return "I32";
    case SafetensorsDtype::kI8: return "I8";
    case SafetensorsDtype::kU8: return "U8";
  }
  return "?";
}

std::size_t item_size(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF32:
    case SafetensorsDtype::kI32: return 4;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16: return 2;
    case SafetensorsDtype::kI8:
    case SafetensorsDtype::kU8: return 1;
  }
  return 1;
}

std::int64_t SafetensorsTensor::elements() const { return checked_elements(shape); }

SafetensorsFile SafetensorsFile::load(const std::string& path) {
  return parse(io_detail::read_file_bytes(path, "safetensors file", kMaxFileBytes),
               fmt::format("safetensors file '{}'", path));
}

SafetensorsFile SafetensorsFile::parse(std::vector<unsigned char> bytes, const std::string& what) {
  SafetensorsFile f;
  f.what_ = what;
  f.bytes_ = std::move(bytes);
  io_detail::ByteCursor in(f.bytes_.data(), f.bytes_.size(), what);
  const auto header_len = in.read<std::uint64_t>("the 8-byte header length");
  if (header_len > kMaxHeaderBytes || header_len > in.remaining())
    throw IoError(fmt::format("{}: header length {} exceeds the {} bytes after it (or the {} MiB "
                              "cap)",
                              what, header_len, in.remaining(), kMaxHeaderBytes >> 20));
  const unsigned char* h = in.take(static_cast<std::size_t>(header_len), "header");
  f.data_start_ = 8 + static_cast<std::size_t>(header_len);
  const std::uint64_t data_size = f.bytes_.size() - f.data_start_;
  json::Value header;
  try {
    header = json::parse(std::string_view(reinterpret_cast<const char*>(h), header_len));
  } catch (const IoError& e) {
    throw IoError(fmt::format("{}: header is not valid JSON: {}", what, e.what()));
  }
  if (!header.is_object())
    throw IoError(fmt::format("{}: header is a JSON {}, expected an object", what,
                              json::to_string(header.type())));
  for (const auto& [name, v] : header.as_object()) {
    if (name == "__metadata__") {
      if (!v.is_object())
        throw IoError(fmt::format("{}: __metadata__ must be an object of strings", what));
      for (const auto& [k, mv] : v.as_object()) {
        if (!mv.is_string())
          throw IoError(fmt::format("{}: __metadata__['{}'] is a {}, expected a string", what, k,
                                    json::to_string(mv.type())));
        f.metadata_[k] = mv.as_string();
      }
      continue;
    }
    if (!v.is_object())
      throw IoError(fmt::format("{}: entry '{}' must be an object", what, name));
    SafetensorsTensor t;
    t.name = name;
    const json::Value* dtype = v.find("dtype");
    const json::Value* shape = v.find("shape");
    const json::Value* offsets = v.find("data_offsets");
    if (!dtype || !shape || !offsets || !dtype->is_string() || !shape->is_array() ||
        !offsets->is_array() || offsets->size() != 2)
      throw IoError(fmt::format("{}: tensor '{}' needs a string dtype, an array shape and "
                                "data_offsets [begin, end]",
                                what, name));
    t.dtype = parse_dtype(dtype->as_string(), what, name);
    for (const auto& d : shape->as_array()) t.shape.push_back(d.as_int(0, INT64_MAX / 2));
    t.begin = static_cast<std::uint64_t>(offsets->as_array()[0].as_int(0, INT64_MAX / 2));
    t.end = static_cast<std::uint64_t>(offsets->as_array()[1].as_int(0, INT64_MAX / 2));
    const std::int64_t n = t.elements();
    if (n < 0 || static_cast<std::uint64_t>(n) > data_size)
      throw IoError(fmt::format("{}: tensor '{}' has an impossible shape", what, name));
    const std::uint64_t expect = static_cast<std::uint64_t>(n) * item_size(t.dtype);
    if (t.begin > t.end || t.end > data_size || t.end - t.begin != expect)
      throw IoError(fmt::format("{}: tensor '{}' ({} {} elements = {} bytes) has data_offsets [{}, "
                                "{}] in a data section of {} bytes",
                                what, name, n, to_string(t.dtype), expect, t.begin, t.end,
                                data_size));
    f.index_.emplace(t.name, f.tensors_.size());  // names are unique: the JSON refuses repeats
    f.tensors_.push_back(std::move(t));
  }
  std::vector<const SafetensorsTensor*> by_offset;
  for (const auto& t : f.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw IoError(fmt::format("{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", what,
                                by_offset[i - 1]->name, by_offset[i - 1]->begin,
                                by_offset[i - 1]->end, by_offset[i]->name, by_offset[i]->begin,
                                by_offset[i]->end));
  return f;
}

bool SafetensorsFile::has(const std::string& name) const { return index_.count(name) != 0; }

const SafetensorsTensor& SafetensorsFile::tensor(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw IoError(fmt::format("{}: no tensor named '{}'", what_, name));
  return tensors_[it->second];
}

const unsigned char* SafetensorsFile::raw(const std::string& name, SafetensorsDtype expect) const {
  const auto& t = tensor(name);
  if (t.dtype != expect)
    throw IoError(fmt::format("{}: tensor '{}' is {}, expected {}", what_, name,
                              to_string(t.dtype), to_string(expect)));
  return bytes_.data() + data_start_ + t.begin;
}

MatrixF SafetensorsFile::read_float(const std::string& name) const {
  const auto& t = tensor(name);
  if (t.shape.size() > 2)
    throw IoError(fmt::format("{}: tensor '{}' has {} dimensions, expected 1 or 2", what_, name,
                              t.shape.size()));
  const Index rows = t.shape.size() == 2 ? t.shape[0] : 1;
  const Index cols = t.shape.empty() ? 1 : t.shape.back();
  MatrixF m(rows, cols);
  const unsigned char* p = bytes_.data() + data_start_ + t.begin;
  const Index n = rows * cols;
  switch (t.dtype) {
    case SafetensorsDtype::kF32:
      std::memcpy(m.data(), p, static_cast<std::size_t>(n) * 4);
      break;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
      for (Index i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        m.data()[i] = t.dtype == SafetensorsDtype::kF16 ? half_to_float(h) : bf16_to_float(h);
      }
      break;
    default:
      throw IoError(fmt::format("{}: tensor '{}' is {}, expected a float dtype (F32, F16, BF16)",
                                what_, name, to_string(t.dtype)));
  }
  return m;
}

void SafetensorsWriter::add(const std::string& name, SafetensorsDtype dtype,
                            std::vector<std::int64_t> shape, const void* data, std::size_t bytes) {
  if (name.empty() || name == "__metadata__")
    throw InvalidArgument(fmt::format("invalid tensor name '{}'", name));
  for (const auto& e : entries_)
    if (e.name == name) throw InvalidArgument(fmt::format("tensor '{}' added twice", name));
  const std::int64_t n = checked_elements(shape);
  if (n < 0 || static_cast<std::uint64_t>(n) * item_size(dtype) != bytes)
    throw InvalidArgument(fmt::format("tensor '{}': {} bytes do not match its shape and {}", name,
                                      bytes, to_string(dtype)));
  const auto* p = static_cast<const unsigned char*>(data);
  entries_.push_back({name, dtype, std::move(shape), std::vector<unsigned char>(p, p + bytes)});
}

void SafetensorsWriter::add_float(const std::string& name, const MatrixFRef& m) {
  const MatrixF copy = m;  // a Ref may have an outer stride
  add(name, SafetensorsDtype::kF32, {copy.rows(), copy.cols()}, copy.data(),
      static_cast<std::size_t>(copy.size()) * 4);
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::vector<unsigned char> SafetensorsWriter::serialize() const {
  json::Value header = json::Value::object();
  if (!metadata_.empty()) {
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : metadata_) meta.set(k, v);
    header.set("__metadata__", std::move(meta));
  }
  std::uint64_t offset = 0;
  for (const auto& e : entries_) {
    json::Value t = json::Value::object();
    t.set("dtype", to_string(e.dtype));
    json::Value shape = json::Value::array();
    for (auto d : e.shape) shape.push_back(static_cast<long long>(d));
    t.set("shape", std::move(shape));
    json::Value off = json::Value::array();
    off.push_back(static_cast<unsigned long long>(offset));
    off.push_back(static_cast<unsigned long long>(offset + e.data.size()));
    t.set("data_offsets", std::move(off));
    header.set(e.name, std::move(t));
    offset += e.data.size();
  }
  std::string text = json::dump(header, -1);
  text.append((8 - text.size() % 8) % 8, ' ');  // data section 8-byte aligned
  const std::uint64_t n = text.size();
  std::vector<unsigned char> out(8 + text.size() + offset);
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t at = 8 + text.size();
  for (const auto& e : entries_) {
    if (!e.data.empty()) std::memcpy(out.data() + at, e.data.data(), e.data.size());
    at += e.data.size();
  }
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  const auto bytes = serialize();
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()),
                                           bytes.size()));
}

// ---- quantized layers ---------------------------------------------------------------------

namespace {

Granularity parse_granularity(const std::string& s, const std::string& what) {
  for (auto g : {Granularity::kPerTensor, Granularity::kPerRow, Granularity::kPerGroup})
    if (s == to_string(g)) return g;
  throw IoError(fmt::format("{}: unknown granularity '{}'", what, s));
}

// Codes from the canonical packed bytes (layout in packed.hpp).
MatrixI8 decode_codes(const unsigned char* bytes, const Grid& grid, Container container,
                      Index padded_cols) {
  MatrixI8 codes(grid.rows, grid.cols);
  const bool int4 = container == Container::kInt4;
  const Index block_bytes = (int4 ? 8 : 16) * padded_cols;
  const Index step_inputs = int4 ? 8 : 4;
  for (Index r = 0; r < grid.rows; ++r)
    for (Index c = 0; c < grid.cols; ++c) {
      const Index block = r / 16, step = c / step_inputs, in_step = c % step_inputs;
      const Index j = (r % 16) * 4 + in_step % 4;
      const unsigned char byte = bytes[block * block_bytes + step * 64 + j];
      const std::int32_t z = grid.zeros(r, grid.group_of(c));
      std::int32_t q;
      if (int4) {
        const int nibble = in_step < 4 ? (byte & 0x0F) : (byte >> 4);
        q = grid.symmetric ? nibble - 8 : nibble;
      } else {
        q = static_cast<std::int8_t>(byte) + z;
      }
      codes(r, c) = static_cast<std::int8_t>(q);
    }
  return codes;
}

}  // namespace

void save_quantized(const std::string& path, const std::vector<NamedPackedLayer>& layers,
                    const std::map<std::string, std::string>& extra_metadata) {
  SafetensorsWriter w;
  for (const auto& [k, v] : extra_metadata) w.set_metadata(k, v);
  w.set_metadata("format", kFormat);
  for (const auto& l : layers) {
    const PackedMatrix& p = l.packed;
    const Grid& g = p.grid();
    w.add(l.name + ".qweight", SafetensorsDtype::kU8, {static_cast<std::int64_t>(p.bytes())},
          p.data(), p.bytes());
    w.add_float(l.name + ".scales", g.scales);
    w.add(l.name + ".zeros", SafetensorsDtype::kI32, {g.zeros.rows(), g.zeros.cols()},
          g.zeros.data(), static_cast<std::size_t>(g.zeros.size()) * 4);
    if (!g.is_uniform())
      w.add(l.name + ".exponent", SafetensorsDtype::kF32, {g.exponent.size()}, g.exponent.data(),
            static_cast<std::size_t>(g.exponent.size()) * 4);
    json::Value m = json::Value::object();
    m.set("method", l.method);
    m.set("bits", g.bits);
    m.set("group_size", static_cast<long long>(g.group_size));
    m.set("granularity", to_string(g.granularity));
    m.set("symmetric", g.symmetric);
    m.set("restricted", g.restricted);
    m.set("nupes", !g.is_uniform());
    m.set("container", static_cast<int>(p.container()));
    m.set("rows", static_cast<long long>(g.rows));
    m.set("cols", static_cast<long long>(g.cols));
    w.set_metadata(l.name, json::dump(m, -1));
  }
  w.write(path);
}

std::vector<NamedPackedLayer> load_quantized(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::load(path);
  const std::string what = fmt::format("quantized model '{}'", path);
  const auto fmt_it = f.metadata().find("format");
  if (fmt_it == f.metadata().end() || fmt_it->second != kFormat)
    throw IoError(fmt::format("{}: __metadata__.format is not '{}'", what, kFormat));
  std::vector<NamedPackedLayer> out;
  for (const auto& t : f.tensors()) {
    const std::string suffix = ".qweight";
    if (t.name.size() <= suffix.size() ||
        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    NamedPackedLayer layer;
    layer.name = t.name.substr(0, t.name.size() - suffix.size());
    const auto meta_it = f.metadata().find(layer.name);
    if (meta_it == f.metadata().end())
      throw IoError(fmt::format("{}: no metadata for layer '{}'", what, layer.name));
    const json::Value m = json::parse(meta_it->second);
    layer.method = m.at("method").as_string();
    Grid g;
    g.bits = static_cast<int>(m.at("bits").as_int(2, 8));
    g.symmetric = m.at("symmetric").as_bool();
    g.restricted = m.at("restricted").as_bool();
    g.granularity = parse_granularity(m.at("granularity").as_string(), what);
    g.rows = m.at("rows").as_int(1, 1 << 24);
    g.cols = m.at("cols").as_int(1, 1 << 24);
    g.group_size = m.at("group_size").as_int(1, g.cols);
    const auto container = static_cast<Container>(m.at("container").as_int(4, 8));
    if (container != Container::kInt4 && container != Container::kInt8)
      throw IoError(fmt::format("{}: layer '{}' has container {}, expected 4 or 8", what,
                                layer.name, static_cast<int>(container)));
    const Index groups = (g.cols + g.group_size - 1) / g.group_size;
    auto expect_shape = [&](const std::string& name, std::vector<std::int64_t> shape) {
      if (f.tensor(name).shape != shape)
        throw IoError(fmt::format("{}: tensor '{}' has the wrong shape for a {}×{} layer with {} "
                                  "groups",
                                  what, name, g.rows, g.cols, groups));
    };
    expect_shape(layer.name + ".scales", {g.rows, groups});
    expect_shape(layer.name + ".zeros", {g.rows, groups});
    g.scales = f.read_float(layer.name + ".scales");
    g.zeros.resize(g.rows, groups);
    std::memcpy(g.zeros.data(), f.raw(layer.name + ".zeros", SafetensorsDtype::kI32),
                static_cast<std::size_t>(g.zeros.size()) * 4);
    if (m.at("nupes").as_bool()) {
      expect_shape(layer.name + ".exponent", {g.rows});
      g.exponent = f.read_float(layer.name + ".exponent").transpose();
    }
    try {
      g.validate(g.rows, g.cols);
    } catch (const InvalidArgument& e) {
      throw IoError(fmt::format("{}: layer '{}' has an invalid grid: {}", what, layer.name,
                                e.what()));
    }
    const Index step = container == Container::kInt4 ? 8 : 4;
    const Index padded_cols = (g.cols + step - 1) / step * step;
    const std::uint64_t expect_bytes = static_cast<std::uint64_t>((g.rows + 15) / 16) *
                                       static_cast<std::uint64_t>(padded_cols) *
                                       (container == Container::kInt4 ? 8 : 16);
    if (t.end - t.begin != expect_bytes)
      throw IoError(fmt::format("{}: '{}' holds {} bytes, a {}×{} int{} layer packs to {}", what,
                                t.name, t.end - t.begin, g.rows, g.cols, static_cast<int>(container),
                                expect_bytes));
    const unsigned char* bytes = f.raw(t.name, SafetensorsDtype::kU8);
    const MatrixI8 codes = decode_codes(bytes, g, container, padded_cols);
    PackOptions po;
    po.container = container;
    try {
      layer.packed = PackedMatrix(codes, g, po);
    } catch (const InvalidArgument& e) {
      throw IoError(fmt::format("{}: layer '{}' does not pack: {}", what, layer.name, e.what()));
    }
    if (layer.packed.bytes() != expect_bytes ||
        std::memcmp(layer.packed.data(), bytes, expect_bytes) != 0)
      throw IoError(fmt::format("{}: the packed bytes of '{}' are not canonical (padding or a "
                                "code outside its grid)",
                                what, layer.name));
    out.push_back(std::move(layer));
  }
  return out;
}

}  // namespace qround::io
