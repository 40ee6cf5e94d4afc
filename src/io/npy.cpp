#include "qround/io/npy.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string_view>

#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/memory_limit.hpp"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the npy reader/writer copies little-endian bytes directly: big-endian hosts are "
              "not supported");
#endif

namespace qround::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;
constexpr std::size_t kHeaderAlign = 64;
constexpr std::uint64_t kMaxHeader = 1 << 20;  // a bound before allocating the header text
// The largest product of the non-zero dimensions a zero-size array may declare (see open_npy).
constexpr std::uint64_t kMaxEmptyExtent = std::uint64_t{1} << 24;
constexpr const char* kSupported = "<f4, <f2, <f8, |i1 or <i4";

struct Header {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<Index> shape;
  bool fortran_order = false;
  std::uint64_t data_offset = 0;
};

// ---- header dict parsing --------------------------------------------------------------------
// The header is a Python dict literal as numpy writes it, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// This parser accepts exactly that grammar (any spacing, trailing commas, either quote style,
// Python 2 "L" suffixes on shape entries) and nothing else.
class DictParser {
 public:
  DictParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  Header parse() {
    Header h;
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) fail("duplicate key 'descr'");
        h.dtype = parse_dtype(parse_string());
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_order) fail("duplicate key 'fortran_order'");
        h.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        if (have_shape) fail("duplicate key 'shape'");
        h.shape = parse_shape();
        have_shape = true;
      } else {
        fail(fmt::format("unexpected key '{}' (expected descr, fortran_order, shape)", key));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != '}') {
        fail("expected ',' or '}' after a value");
      }
    }
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the closing '}'");
    if (!have_descr || !have_order || !have_shape)
      fail("the header must have the keys descr, fortran_order and shape");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw IoError(fmt::format("'{}': malformed npy header at offset {}: {} (header: {})", path_,
                              pos_, what, printable()));
  }
  std::string printable() const {
    std::string out;
    for (char c : s_.substr(0, 200)) out += (c >= 32 && c < 127) ? c : '?';
    while (!out.empty() && (out.back() == ' ' || out.back() == '?')) out.pop_back();
    return out;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }
  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail("expected a quoted string");
    ++pos_;
    const std::size_t end = s_.find(quote, pos_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("fortran_order must be True or False");
  }
  std::vector<Index> parse_shape() {
    std::vector<Index> shape;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') {
        ++pos_;
        break;
      }
      if (peek() < '0' || peek() > '9') fail("shape entries must be non-negative integers");
      std::uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const std::uint64_t digit = static_cast<std::uint64_t>(peek() - '0');
        if (v > (static_cast<std::uint64_t>(std::numeric_limits<Index>::max()) - digit) / 10)
          fail("a shape entry overflows");
        v = v * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;
      shape.push_back(static_cast<Index>(v));
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        fail("expected ',' or ')' in the shape");
      }
      if (shape.size() > 32) fail("more than 32 dimensions");
    }
    return shape;
  }
  NpyDtype parse_dtype(const std::string& descr) const {
    if (descr == "<f4") return NpyDtype::kFloat32;
    if (descr == "<f2") return NpyDtype::kFloat16;
    if (descr == "<f8") return NpyDtype::kFloat64;
    if (descr == "|i1" || descr == "<i1" || descr == ">i1" || descr == "i1") return NpyDtype::kInt8;
    if (descr == "<i4") return NpyDtype::kInt32;
    if (!descr.empty() && descr[0] == '>')
      throw IoError(fmt::format("'{}': big-endian dtype '{}' is not supported: expected {}", path_,
                                descr, kSupported));
    throw IoError(
        fmt::format("'{}': unsupported dtype '{}': expected {}", path_, descr, kSupported));
  }

  std::string_view s_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

std::string shape_string(const std::vector<Index>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i)
    out += fmt::format("{}{}", i ? ", " : "", shape[i]);
  if (shape.size() == 1) out += ",";
  return out + ")";
}

std::uint64_t read_le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// An open .npy file whose header was validated against the file size.
struct OpenNpy {
  std::ifstream in;
  Header header;
  std::uint64_t data_bytes = 0;
};

void read_exact(std::ifstream& in, void* dst, std::uint64_t n, const std::string& path,
                const char* what) {
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
  if (static_cast<std::uint64_t>(in.gcount()) != n)
    throw IoError(fmt::format("'{}': file is truncated while reading the {}", path, what));
}

void open_npy(OpenNpy& f, const std::string& path) {
  f.in.open(path, std::ios::binary);
  if (!f.in)
    throw IoError(fmt::format("cannot open '{}' for reading: {}", path, std::strerror(errno)));
  f.in.seekg(0, std::ios::end);
  const std::streamoff end = f.in.tellg();
  f.in.seekg(0, std::ios::beg);
  if (end < 0) throw IoError(fmt::format("cannot determine the size of '{}'", path));
  const auto file_size = static_cast<std::uint64_t>(end);

  unsigned char pre[12];
  if (file_size < 10)
    throw IoError(
        fmt::format("'{}' is {} bytes: too short for an npy file (expected at least "
                    "a 10-byte preamble)",
                    path, file_size));
  read_exact(f.in, pre, 8, path, "preamble");
  if (std::memcmp(pre, kMagic, kMagicSize) != 0)
    throw IoError(fmt::format("'{}' is not an npy file: bad magic (expected \\x93NUMPY)", path));
  const int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    throw IoError(
        fmt::format("'{}': unsupported npy format version {}.{} (expected 1.0, 2.0 or "
                    "3.0)",
                    path, major, minor));
  const int len_bytes = major == 1 ? 2 : 4;
  read_exact(f.in, pre + 8, static_cast<std::uint64_t>(len_bytes), path, "header length");
  const std::uint64_t header_len = read_le(pre + 8, len_bytes);
  const std::uint64_t prefix = 8 + static_cast<std::uint64_t>(len_bytes);
  if (header_len > kMaxHeader)
    throw IoError(
        fmt::format("'{}': header length {} exceeds the {}-byte limit (numpy writes a "
                    "few hundred bytes)",
                    path, header_len, kMaxHeader));
  if (header_len > file_size - prefix)
    throw IoError(
        fmt::format("'{}': header length {} exceeds the {} bytes left in the file "
                    "(truncated header?)",
                    path, header_len, file_size - prefix));
  std::string text(static_cast<std::size_t>(header_len), '\0');
  read_exact(f.in, text.data(), header_len, path, "header");
  f.header = DictParser(text, path).parse();
  f.header.data_offset = prefix + header_len;

  // elements × item size, with overflow checked, must be exactly what the file holds.
  const std::uint64_t available = file_size - f.header.data_offset;
  std::uint64_t bytes = item_size(f.header.dtype);
  bool overflow = false;
  for (Index d : f.header.shape) {
    const auto ud = static_cast<std::uint64_t>(d);
    if (ud != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / ud) overflow = true;
    bytes *= ud;
  }
  bool zero = false;
  for (Index d : f.header.shape) zero = zero || d == 0;
  if (overflow && !zero)
    throw IoError(fmt::format("'{}': shape {} of {} is too large (its byte size overflows)", path,
                              shape_string(f.header.shape), to_string(f.header.dtype)));
  if (zero) {
    // A zero-size array holds no data, so the file bounds nothing: without a cap a 128-byte
    // file could declare (2^62, 0) and every consumer that loops over or allocates per row
    // (scales, row norms, copies) would spin or run out of memory. The other dimensions of an
    // empty array must multiply to at most kMaxEmptyExtent.
    std::uint64_t extent = 1;
    bool too_large = false;
    for (Index d : f.header.shape) {
      const auto ud = static_cast<std::uint64_t>(d);
      if (ud == 0) continue;
      if (ud > kMaxEmptyExtent / extent) {
        too_large = true;
        break;
      }
      extent *= ud;
    }
    if (too_large)
      throw IoError(fmt::format(
          "'{}': shape {} of {} holds no elements, but its non-zero dimensions multiply to more "
          "than {}, the most an empty array may declare",
          path, shape_string(f.header.shape), to_string(f.header.dtype), kMaxEmptyExtent));
    bytes = 0;
  }
  if (bytes != available)
    throw IoError(
        fmt::format("'{}': shape {} of {} needs {} data bytes, but the file has {} "
                    "after the header ({})",
                    path, shape_string(f.header.shape), to_string(f.header.dtype), bytes, available,
                    bytes > available ? "truncated" : "trailing bytes"));
  f.data_bytes = bytes;
}

std::vector<unsigned char> read_data(OpenNpy& f, const std::string& path) {
  std::vector<unsigned char> data(static_cast<std::size_t>(f.data_bytes));
  if (!data.empty()) read_exact(f.in, data.data(), f.data_bytes, path, "data");
  return data;
}

// rows × cols of a 0/1/2-D array; anything else is an IoError naming the shape.
void matrix_shape(const Header& h, const std::string& path, Index& rows, Index& cols) {
  switch (h.shape.size()) {
    case 0:
      rows = cols = 1;
      return;
    case 1:
      rows = 1;
      cols = h.shape[0];
      return;
    case 2:
      rows = h.shape[0];
      cols = h.shape[1];
      return;
    default:
      throw IoError(
          fmt::format("'{}' holds a {}-D array of shape {}: expected a 1-D or 2-D "
                      "matrix",
                      path, h.shape.size(), shape_string(h.shape)));
  }
}

template <typename T>
T element_at(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads a 0/1/2-D array and stores convert(element pointer, row, col) at (row, col).
template <typename Out, typename Convert>
RowMatrix<Out> load_matrix(const std::string& path, const char* expected, bool (*accept)(NpyDtype),
                           Convert convert) {
  OpenNpy f;
  open_npy(f, path);
  if (!accept(f.header.dtype))
    throw IoError(
        fmt::format("'{}' has dtype {}: expected {}", path, to_string(f.header.dtype), expected));
  Index rows = 0, cols = 0;
  matrix_shape(f.header, path, rows, cols);
  // The file's bytes and the converted matrix live together for a moment.
  const std::uint64_t matrix =
      bytes_for(static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols), sizeof(Out));
  require_memory(matrix > UINT64_MAX - f.data_bytes ? UINT64_MAX : matrix + f.data_bytes,
                 fmt::format("'{}' (shape {} of {}, read as a {}×{} matrix)", path,
                             shape_string(f.header.shape), to_string(f.header.dtype), rows, cols));
  const std::vector<unsigned char> data = read_data(f, path);
  const std::size_t item = item_size(f.header.dtype);
  RowMatrix<Out> m(rows, cols);
  if (m.size() == 0) return m;
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const Index k = f.header.fortran_order ? c * rows + r : r * cols + c;
      m(r, c) = convert(f.header.dtype, data.data() + static_cast<std::size_t>(k) * item, r, c);
    }
  return m;
}

std::int64_t integer_at(NpyDtype dtype, const unsigned char* p) {
  return dtype == NpyDtype::kInt8 ? element_at<std::int8_t>(p) : element_at<std::int32_t>(p);
}

template <typename T>
void save_matrix(const std::string& path, const Eigen::Ref<const RowMatrix<T>>& m, NpyDtype dtype) {
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}, {}), }}",
                                   to_string(dtype), m.rows(), m.cols());
  // numpy pads with spaces so that the data starts at a multiple of 64, then ends with '\n'.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((kHeaderAlign - unpadded % kHeaderAlign) % kHeaderAlign, ' ');
  header += '\n';
  if (header.size() > 65535)
    throw IoError(fmt::format("'{}': npy header too long ({} bytes)", path, header.size()));
  unsigned char pre[10] = {0x93,
                           'N',
                           'U',
                           'M',
                           'P',
                           'Y',
                           1,
                           0,
                           static_cast<unsigned char>(header.size() & 0xff),
                           static_cast<unsigned char>(header.size() >> 8)};
  AtomicFile file(path);
  file.write(pre, sizeof pre);
  file.write(header.data(), header.size());
  for (Index r = 0; r < m.rows(); ++r)
    file.write(m.row(r).data(), static_cast<std::size_t>(m.cols()) * sizeof(T));
  file.commit();
}

}  // namespace

const char* to_string(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kFloat16:
      return "<f2";
    case NpyDtype::kFloat32:
      return "<f4";
    case NpyDtype::kFloat64:
      return "<f8";
    case NpyDtype::kInt8:
      return "|i1";
    case NpyDtype::kInt32:
      return "<i4";
  }
  return "?";
}

std::size_t item_size(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kFloat16:
      return 2;
    case NpyDtype::kFloat32:
      return 4;
    case NpyDtype::kFloat64:
      return 8;
    case NpyDtype::kInt8:
      return 1;
    case NpyDtype::kInt32:
      return 4;
  }
  return 0;
}

Index NpyArray::elements() const {
  for (Index d : shape)
    if (d == 0) return 0;
  Index n = 1;
  for (Index d : shape) n *= d;  // cannot overflow: read_npy checked the byte size
  return n;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  float magnitude;
  if (exp == 0) {
    magnitude = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    magnitude = mant == 0 ? std::numeric_limits<float>::infinity()
                          : std::numeric_limits<float>::quiet_NaN();
  } else {
    magnitude = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  std::uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof bits);
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

NpyArray read_npy(const std::string& path) {
  OpenNpy f;
  open_npy(f, path);
  NpyArray a;
  a.dtype = f.header.dtype;
  a.shape = f.header.shape;
  a.fortran_order = f.header.fortran_order;
  a.bytes = read_data(f, path);
  return a;
}

MatrixF load_npy_f32(const std::string& path) {
  return load_matrix<float>(
      path, "a float or integer dtype", [](NpyDtype) { return true; },
      [&path](NpyDtype dtype, const unsigned char* p, Index r, Index c) -> float {
        switch (dtype) {
          case NpyDtype::kFloat32:
            return element_at<float>(p);
          case NpyDtype::kFloat16:
            return half_to_float(element_at<std::uint16_t>(p));
          case NpyDtype::kFloat64: {
            const double v = element_at<double>(p);
            if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max())
              throw IoError(fmt::format("'{}': f8 value {} at ({}, {}) is outside the float range",
                                        path, v, r, c));
            return static_cast<float>(v);
          }
          case NpyDtype::kInt8:
          case NpyDtype::kInt32:
            return static_cast<float>(integer_at(dtype, p));
        }
        return 0.0f;
      });
}

MatrixI8 load_npy_i8(const std::string& path) {
  return load_matrix<std::int8_t>(
      path, "|i1 (or <i4 with values in [-128, 127])",
      [](NpyDtype d) { return d == NpyDtype::kInt8 || d == NpyDtype::kInt32; },
      [&path](NpyDtype dtype, const unsigned char* p, Index r, Index c) {
        const std::int64_t v = integer_at(dtype, p);
        if (v < -128 || v > 127)
          throw IoError(fmt::format("'{}': value {} at ({}, {}) does not fit int8 [-128, 127]",
                                    path, v, r, c));
        return static_cast<std::int8_t>(v);
      });
}

MatrixI32 load_npy_i32(const std::string& path) {
  return load_matrix<std::int32_t>(
      path, "<i4 or |i1", [](NpyDtype d) { return d == NpyDtype::kInt8 || d == NpyDtype::kInt32; },
      [](NpyDtype dtype, const unsigned char* p, Index, Index) {
        return static_cast<std::int32_t>(integer_at(dtype, p));
      });
}

void save_npy(const std::string& path, const MatrixFRef& m) {
  save_matrix<float>(path, m, NpyDtype::kFloat32);
}
void save_npy(const std::string& path, const Eigen::Ref<const MatrixI8>& m) {
  save_matrix<std::int8_t>(path, m, NpyDtype::kInt8);
}
void save_npy(const std::string& path, const Eigen::Ref<const MatrixI32>& m) {
  save_matrix<std::int32_t>(path, m, NpyDtype::kInt32);
}

}  // namespace qround::io
