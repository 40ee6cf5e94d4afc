// Packing quantized weights into the canonical kernel layout, and its file format.
#include "qround/packed.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"

namespace qround {
namespace {

constexpr Index kBlockRows = 16;
constexpr Index kStepBytes = 64;
// |d · xq| ≤ 127 · 127, so a group of up to 2^17 inputs cannot overflow an int32 accumulator.
constexpr Index kMaxGroupInputs = Index{1} << 17;

Index round_up(Index v, Index m) { return (v + m - 1) / m * m; }

// Byte offset and nibble (0 low, 1 high, -1 whole byte) of input `col` of `row`.
struct Slot {
  Index byte;
  int nibble;
};

Slot slot_of(Container c, Index block_bytes, Index row, Index col) {
  const Index block = row / kBlockRows, rr = row % kBlockRows;
  if (c == Container::kInt8) {
    const Index s = col / 4, i = col % 4;
    return {block * block_bytes + s * kStepBytes + rr * 4 + i, -1};
  }
  const Index s = col / 8, i = col % 8;
  return {block * block_bytes + s * kStepBytes + rr * 4 + (i % 4), i >= 4 ? 1 : 0};
}

}  // namespace

const char* to_string(Container c) {
  switch (c) {
    case Container::kAuto:
      return "auto";
    case Container::kInt8:
      return "int8";
    case Container::kInt4:
      return "int4";
  }
  return "unknown";
}

void PackOptions::validate() const {
  if (container != Container::kAuto && container != Container::kInt8 &&
      container != Container::kInt4)
    throw InvalidArgument(fmt::format("pack container {} is invalid: expected auto, int8 or int4",
                                      static_cast<int>(container)));
}

Index PackedMatrix::block_bytes() const {
  return container_ == Container::kInt8 ? kBlockRows * padded_cols_ : kBlockRows * padded_cols_ / 2;
}

PackedMatrix::PackedMatrix(const MatrixI8Ref& codes, const Grid& grid, const PackOptions& options) {
  options.validate();
  if (codes.rows() < 1 || codes.cols() < 1)
    throw InvalidArgument(
        fmt::format("cannot pack a {}×{} matrix: need at least one row and "
                    "one column",
                    codes.rows(), codes.cols()));
  grid.validate(codes.rows(), codes.cols());
  if (grid.has_offsets())
    throw InvalidArgument(fmt::format(
        "format {} levels carry a real offset (s·q + b) that the int8/int4 containers cannot hold "
        "(they store integer zero points): export it with encode_ggml / GGUF instead",
        to_string(*grid.format)));
  if (grid.has_level_table())
    throw InvalidArgument(fmt::format(
        "format {} levels are d·T[q] with a non-uniform table T that the int8/int4 containers "
        "cannot hold (they store uniform levels s·(q − z)): export it with encode_ggml / GGUF "
        "instead",
        to_string(*grid.format)));
  container_ = options.container != Container::kAuto
                   ? options.container
                   : (grid.bits <= 4 ? Container::kInt4 : Container::kInt8);
  if (container_ == Container::kInt4 && grid.bits > 4)
    throw InvalidArgument(
        fmt::format("a {}-bit grid does not fit the int4 container (≤ 4 bits)", grid.bits));
  const Index step = step_inputs();
  const Index rows = codes.rows(), cols = codes.cols(), groups = grid.groups();
  const Index group = grid.group_size;
  if (groups > 1 && group % step != 0)
    throw InvalidArgument(fmt::format(
        "group size {} is not a multiple of {} inputs, which the {} container needs (use 32, 64, "
        "128, … or per-row scales)",
        group, step, to_string(container_)));
  if (std::min(group, cols) > kMaxGroupInputs)
    throw InvalidArgument(
        fmt::format("groups of {} inputs could overflow int32 accumulators: at "
                    "most {} inputs share one scale",
                    std::min(group, cols), kMaxGroupInputs));
  grid_ = grid;
  padded_cols_ = round_up(cols, step);
  blocks_ = (rows + kBlockRows - 1) / kBlockRows;
  const Index bb = block_bytes();
  weights_.assign(static_cast<std::size_t>(blocks_ * bb), 0);
  const std::size_t side = static_cast<std::size_t>(blocks_ * groups * kBlockRows);
  scales_.assign(side, 0.0f);
  row_sums_.assign(side, 0);
  offsets_.assign(side, 0);

  const bool int8 = container_ == Container::kInt8;
  for (Index r = 0; r < rows; ++r) {
    const Index block = r / kBlockRows, rr = r % kBlockRows;
    for (Index g = 0; g < groups; ++g) {
      const std::size_t at = static_cast<std::size_t>((block * groups + g) * kBlockRows + rr);
      scales_[at] = grid.scales(r, g);
      offsets_[at] = int8 ? 0 : (grid.symmetric ? 8 : grid.zeros(r, g));
    }
    for (Index c = 0; c < cols; ++c) {
      const Index g = grid.group_of(c);
      const std::int32_t q = codes(r, c), z = grid.zeros(r, g);
      if (q < grid.qmin() || q > grid.qmax())
        throw InvalidArgument(fmt::format("code {} at ({}, {}) is outside the grid [{}, {}]", q, r,
                                          c, grid.qmin(), grid.qmax()));
      const std::int32_t d = q - z;
      const Slot s = slot_of(container_, bb, r, c);
      const std::size_t at = static_cast<std::size_t>((block * groups + g) * kBlockRows + rr);
      if (int8) {
        if (d < -127 || d > 127)
          throw InvalidArgument(fmt::format(
              "weight ({}, {}): code {} − zero point {} = {} does not fit the int8 container "
              "[−127, 127] (quantize 8-bit symmetric grids with restricted = true)",
              r, c, q, z, d));
        weights_[static_cast<std::size_t>(s.byte)] = static_cast<std::uint8_t>(d & 0xFF);
      } else {
        const std::int32_t n = grid.symmetric ? q + 8 : q;  // in [0, 15] since bits ≤ 4
        weights_[static_cast<std::size_t>(s.byte)] |=
            static_cast<std::uint8_t>(n << (4 * s.nibble));
      }
      row_sums_[at] += d;
    }
  }
}

std::int32_t PackedMatrix::weight(Index row, Index col) const {
  if (row < 0 || row >= rows() || col < 0 || col >= cols())
    throw InvalidArgument(fmt::format("weight ({}, {}) is outside the packed {}×{} matrix", row,
                                      col, rows(), cols()));
  const Slot s = slot_of(container_, block_bytes(), row, col);
  const std::uint8_t byte = weights_[static_cast<std::size_t>(s.byte)];
  if (container_ == Container::kInt8) return static_cast<std::int8_t>(byte);
  const std::int32_t n = (byte >> (4 * s.nibble)) & 0xF;
  const Index at =
      ((row / kBlockRows) * groups() + grid_.group_of(col)) * kBlockRows + row % kBlockRows;
  return n - offsets_[static_cast<std::size_t>(at)];
}

MatrixI8 PackedMatrix::unpack_codes() const {
  MatrixI8 codes(rows(), cols());
  for (Index r = 0; r < rows(); ++r)
    for (Index c = 0; c < cols(); ++c)
      codes(r, c) = static_cast<std::int8_t>(weight(r, c) + grid_.zeros(r, grid_.group_of(c)));
  return codes;
}

QuantizedLayer PackedMatrix::unpack() const {
  QuantizedLayer layer;
  layer.codes = unpack_codes();
  layer.grid = grid_;
  layer.report.bits = grid_.bits;
  layer.report.symmetric = grid_.symmetric;
  layer.report.group_size = grid_.granularity == Granularity::kPerGroup ? grid_.group_size : 0;
  return layer;
}

// ---- file format -----------------------------------------------------------------------------

namespace {

constexpr char kMagic[8] = {'Q', 'R', 'N', 'D', 'P', 'A', 'C', 'K'};
constexpr std::uint32_t kVersion = 1;
constexpr std::int64_t kMaxDim = std::int64_t{1} << 28;

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    put_bytes(&v, sizeof(T));
  }
  void put_bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const char*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  const std::vector<char>& bytes() const { return buf_; }

 private:
  std::vector<char> buf_;
};

class Reader {
 public:
  Reader(const std::vector<char>& buf, const std::string& path) : buf_(buf), path_(path) {}
  template <typename T>
  T get(const char* what) {
    T v;
    get_bytes(&v, sizeof(T), what);
    return v;
  }
  void get_bytes(void* p, std::size_t n, const char* what) {
    if (n > buf_.size() - pos_)
      throw IoError(
          fmt::format("{}: truncated packed file: {} needs {} bytes at offset {}, file "
                      "has {}",
                      path_, what, n, pos_, buf_.size()));
    std::memcpy(p, buf_.data() + pos_, n);
    pos_ += n;
  }
  std::size_t remaining() const { return buf_.size() - pos_; }

 private:
  const std::vector<char>& buf_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

}  // namespace

void PackedMatrix::save(const std::string& path) const {
  if (grid_.format)
    throw InvalidArgument(fmt::format(
        "{}: a packed file keeps plain grids only; a format {} layer is stored as GGUF blocks",
        path, to_string(*grid_.format)));
  Writer w;
  w.put_bytes(kMagic, sizeof kMagic);
  w.put<std::uint32_t>(kVersion);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(container_));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(grid_.bits));
  const std::uint32_t flags =
      (grid_.symmetric ? 1u : 0u) | (grid_.restricted ? 2u : 0u) | (grid_.is_uniform() ? 0u : 4u);
  w.put<std::uint32_t>(flags);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(grid_.granularity));
  w.put<std::uint32_t>(0);
  w.put<std::int64_t>(grid_.rows);
  w.put<std::int64_t>(grid_.cols);
  w.put<std::int64_t>(grid_.group_size);
  w.put_bytes(grid_.scales.data(), sizeof(float) * static_cast<std::size_t>(grid_.scales.size()));
  w.put_bytes(grid_.zeros.data(),
              sizeof(std::int32_t) * static_cast<std::size_t>(grid_.zeros.size()));
  if (!grid_.is_uniform())
    w.put_bytes(grid_.exponent.data(), sizeof(float) * static_cast<std::size_t>(rows()));
  w.put<std::uint64_t>(weights_.size());
  w.put_bytes(weights_.data(), weights_.size());

  // A unique temporary beside `path`, renamed over it once complete (never a fixed `.tmp` name
  // that two writers of the same path would share).
  io::write_file_atomic(path, std::string_view(w.bytes().data(), w.bytes().size()));
}

PackedMatrix PackedMatrix::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open packed file", path));
  std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader rd(buf, path);
  char magic[8];
  rd.get_bytes(magic, sizeof magic, "magic");
  if (std::memcmp(magic, kMagic, sizeof magic) != 0)
    throw IoError(fmt::format("{}: not a qround packed file (bad magic)", path));
  const auto version = rd.get<std::uint32_t>("version");
  if (version != kVersion)
    throw IoError(fmt::format("{}: packed file version {} is not supported (expected {})", path,
                              version, kVersion));
  const auto container = rd.get<std::uint32_t>("container");
  const auto bits = rd.get<std::uint32_t>("bits");
  const auto flags = rd.get<std::uint32_t>("flags");
  const auto granularity = rd.get<std::uint32_t>("granularity");
  rd.get<std::uint32_t>("reserved");
  const auto rows = rd.get<std::int64_t>("rows");
  const auto cols = rd.get<std::int64_t>("cols");
  const auto group = rd.get<std::int64_t>("group_size");
  if (container != 4 && container != 8)
    throw IoError(fmt::format("{}: container {} is invalid (expected 4 or 8)", path, container));
  if (bits < 2 || bits > 8 || flags > 7 || granularity > 2)
    throw IoError(fmt::format("{}: invalid header (bits {}, flags {}, granularity {})", path, bits,
                              flags, granularity));
  if (rows < 1 || cols < 1 || rows > kMaxDim || cols > kMaxDim || group < 1 || group > cols)
    throw IoError(
        fmt::format("{}: invalid shape {}×{} with group size {}", path, rows, cols, group));
  const std::int64_t groups = (cols + group - 1) / group;
  const std::size_t side = static_cast<std::size_t>(rows * groups);
  const bool has_exponent = (flags & 4u) != 0;
  // Everything must fit in what is left of the file before anything large is allocated.
  const std::size_t need = side * 8 + (has_exponent ? static_cast<std::size_t>(rows) * 4 : 0) + 8;
  if (need > rd.remaining())
    throw IoError(
        fmt::format("{}: truncated packed file: the grid of a {}×{} matrix needs {} "
                    "bytes, {} remain",
                    path, rows, cols, need, rd.remaining()));
  Grid grid;
  grid.bits = static_cast<int>(bits);
  grid.symmetric = (flags & 1u) != 0;
  grid.restricted = (flags & 2u) != 0;
  grid.granularity = static_cast<Granularity>(granularity);
  grid.rows = rows;
  grid.cols = cols;
  grid.group_size = group;
  grid.scales.resize(rows, groups);
  grid.zeros.resize(rows, groups);
  rd.get_bytes(grid.scales.data(), side * sizeof(float), "scales");
  rd.get_bytes(grid.zeros.data(), side * sizeof(std::int32_t), "zero points");
  if (has_exponent) {
    grid.exponent.resize(rows);
    rd.get_bytes(grid.exponent.data(), static_cast<std::size_t>(rows) * sizeof(float), "exponents");
  }
  const auto weight_bytes = rd.get<std::uint64_t>("weight byte count");
  if (weight_bytes != rd.remaining())
    throw IoError(fmt::format("{}: the file holds {} weight bytes but declares {}", path,
                              rd.remaining(), weight_bytes));
  PackedMatrix raw;
  raw.container_ = static_cast<Container>(container);
  raw.grid_ = grid;
  raw.padded_cols_ = round_up(cols, raw.step_inputs());
  raw.blocks_ = (rows + kBlockRows - 1) / kBlockRows;
  if (weight_bytes != static_cast<std::uint64_t>(raw.blocks_ * raw.block_bytes()))
    throw IoError(fmt::format("{}: {} weight bytes, but a {}×{} {} matrix packs to {}", path,
                              weight_bytes, rows, cols, to_string(raw.container_),
                              raw.blocks_ * raw.block_bytes()));
  raw.weights_.resize(static_cast<std::size_t>(weight_bytes));
  rd.get_bytes(raw.weights_.data(), raw.weights_.size(), "weights");
  try {
    grid.validate(rows, cols);
    // Decode against the grid (int4 offsets as the packer defines them), then re-pack: the
    // result must reproduce the file's bytes exactly, padding included.
    MatrixI8 codes(rows, cols);
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < cols; ++c) {
        const Slot s = slot_of(raw.container_, raw.block_bytes(), r, c);
        const std::uint8_t byte = raw.weights_[static_cast<std::size_t>(s.byte)];
        const std::int32_t z = grid.zeros(r, grid.group_of(c));
        const std::int32_t q = raw.container_ == Container::kInt8
                                   ? static_cast<std::int8_t>(byte) + z
                                   : ((byte >> (4 * s.nibble)) & 0xF) - (grid.symmetric ? 8 : 0);
        if (q < grid.qmin() || q > grid.qmax())
          throw InvalidArgument(fmt::format("code {} at ({}, {}) is outside the grid [{}, {}]", q,
                                            r, c, grid.qmin(), grid.qmax()));
        codes(r, c) = static_cast<std::int8_t>(q);
      }
    PackedMatrix packed(codes, grid, PackOptions{raw.container_});
    if (packed.weights_ != raw.weights_) throw InvalidArgument("padding bytes are not zero");
    return packed;
  } catch (const InvalidArgument& e) {
    throw IoError(fmt::format("{}: inconsistent packed file: {}", path, e.what()));
  }
}

}  // namespace qround
