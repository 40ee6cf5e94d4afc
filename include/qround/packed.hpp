// PackedMatrix: quantized weights in the one canonical layout the integer kernels read. The layout
// does not depend on the ISA, so a packed file works on any CPU.
//
// Containers
//   kInt8  each weight is d = q − z as int8 in [−127, 127]. Symmetric grids (z = 0) must not use
//          −128 (quantize with restricted = true at 8 bits); asymmetric grids of ≤ 7 bits always
//          fit (q, z ∈ [0, 127]), so the kernels never need the zero point: they see d directly.
//   kInt4  each weight is a nibble n ∈ [0, 15] with d = n − o: symmetric grids of ≤ 4 bits store
//          n = q + 8 (o = 8), asymmetric ones n = q (o = z, per row and group).
//   Default (kAuto): bits ≤ 4 → kInt4, else kInt8.
//
// Geometry: rows = out, cols = in (K), group size G (== cols for per-row and per-tensor grids),
// groups = ⌈K / G⌉. A k-step is 4 inputs (int8) or 8 inputs (int4). Every group but the last must
// be a whole number of k-steps (G % 4 == 0, resp. G % 8 == 0; else InvalidArgument); the last one
// is padded with zero weights to whole k-steps, so Kp = round_up(K, step) inputs are stored.
//
// Byte layout of the weights (little-endian, no gaps):
//   blocks of 16 output rows, block b = rows [16b, 16b + 16), the last padded with zero weights;
//   block_bytes = 16 · Kp (int8) or 8 · Kp (int4); block b starts at byte b · block_bytes.
//   Inside a block, k-step s occupies bytes [64 s, 64 s + 64); byte j of it belongs to row
//   16b + j / 4 and, with i = j % 4,
//     int8: is d of input 4 s + i (two's complement);
//     int4: low nibble = n of input 8 s + i, high nibble = n of input 8 s + 4 + i.
//   So one 64-byte step is one VNNI operand (16 rows × 4 consecutive inputs); for int4 the low
//   nibbles of a step are the first 4 inputs and the high nibbles the next 4 (pinned by a golden
//   test). Padded weights are stored as 0 (d = 0, resp. n = 0 with o = 0 on padded rows).
// Per-group side tables, each [block][group][16 rows] (padded rows: 0):
//   scales (f32), row_sums (i32, Σ d over the group, for the VNNI +128 compensation), offsets
//   (i32, o of the int4 container; 0 for int8).
//
// NUPES grids (Grid::exponent, non-uniform levels) pack like any other, but only the float-
// activation path can run them (qgemm_float); the integer path rejects them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qround/detail/aligned.hpp"
#include "qround/grid.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround {

enum class Container { kAuto = 0, kInt8 = 8, kInt4 = 4 };
const char* to_string(Container c);

struct PackOptions {
  Container container = Container::kAuto;
  void validate() const;
};

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Throws InvalidArgument when the grid or a code does not fit the container (message names
  // the position and the value) or the group size is not a whole number of k-steps.
  PackedMatrix(const MatrixI8Ref& codes, const Grid& grid, const PackOptions& options = {});
  explicit PackedMatrix(const QuantizedLayer& layer, const PackOptions& options = {})
      : PackedMatrix(layer.codes, layer.grid, options) {}

  Container container() const { return container_; }
  Index rows() const { return grid_.rows; }
  Index cols() const { return grid_.cols; }
  Index group_size() const { return grid_.group_size; }
  Index groups() const { return grid_.groups(); }
  const Grid& grid() const { return grid_; }
  bool is_uniform() const { return grid_.is_uniform(); }

  // Layout geometry (see the header comment).
  Index blocks() const { return blocks_; }
  Index padded_cols() const { return padded_cols_; }
  Index step_inputs() const { return container_ == Container::kInt8 ? 4 : 8; }
  Index block_bytes() const;
  const std::uint8_t* data() const { return weights_.data(); }
  std::size_t bytes() const { return weights_.size(); }  // packed weights only
  const float* block_scales() const { return scales_.data(); }
  const std::int32_t* block_row_sums() const { return row_sums_.data(); }
  const std::int32_t* block_offsets() const { return offsets_.data(); }

  // The integer weight d = q − z of (row, col), read back from the packed bytes.
  std::int32_t weight(Index row, Index col) const;
  // Exactly the codes and grid this was built from.
  MatrixI8 unpack_codes() const;
  QuantizedLayer unpack() const;  // codes + grid (report left empty)
  MatrixF dequantized() const { return dequantize(unpack_codes(), grid_); }

  // Binary file (little-endian), written to `path + ".tmp"` then renamed:
  //   "QRNDPACK" (8 bytes) · u32 version = 1 · u32 container (4 | 8) · u32 bits ·
  //   u32 flags (bit0 symmetric, bit1 restricted, bit2 has exponent) · u32 granularity
  //   (0 tensor, 1 row, 2 group) · u32 reserved = 0 · i64 rows · i64 cols · i64 group_size ·
  //   f32 scales[rows·groups] · i32 zeros[rows·groups] (row-major, as in Grid) ·
  //   f32 exponent[rows] (only with flag bit2) · u64 weight_bytes · packed weights (as above).
  // load validates every size against the header and the file length, and re-packs the decoded
  // codes to check the weight bytes (padding included); any mismatch or truncation → IoError.
  void save(const std::string& path) const;
  static PackedMatrix load(const std::string& path);

 private:
  Container container_ = Container::kInt8;
  Grid grid_;
  Index blocks_ = 0, padded_cols_ = 0;
  detail::AlignedVector<std::uint8_t> weights_;
  detail::AlignedVector<float> scales_;
  detail::AlignedVector<std::int32_t> row_sums_, offsets_;
};

}  // namespace qround
