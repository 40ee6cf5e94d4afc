// Quantization grids. A GridSpec is what the user asks for (bits, symmetry, granularity, how to
// search scales); a Grid is the concrete answer for one weight matrix: a scale and zero point per
// (row, group), and optionally a NUPES power exponent per row.
//
//   uniform symmetric   ŵ = s·q,          q ∈ [−2^(b−1), 2^(b−1)−1]   (restricted: ±(2^(b−1)−1))
//   uniform asymmetric  ŵ = s·(q − z),    q ∈ [0, 2^b−1], integer z so that 0 is exact
//   power (NUPES)       q = ⌊sign(w)|w|^a / s⌉ + z,   ŵ = sign(v)|v|^(1/a) with v = s·(q − z)
//   storage format      ŵ = s·q (+ b),    q in the format's range, s and b derived exactly from the
//                       parameters a ggml block stores (format.hpp); s may be negative (ggml's
//                       q4_0 puts the −8 level on the side of the largest magnitude)
//   table format        ŵ = s·T[q],       q ∈ [0, 15], T the format's int8 table (iq4_nl's
//                       kvalues_iq4nl), s = the stored fp16 d (negative or 0 allowed, as ggml);
//                       symmetric = false (codes are unsigned table indices), zero points 0
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "qround/error.hpp"
#include "qround/format.hpp"
#include "qround/types.hpp"

namespace qround {

enum class Granularity { kPerTensor, kPerRow, kPerGroup };

enum class ScaleSearch {
  kMinMax,   // range [min(w,0), max(w,0)]
  kMse,      // shrink the min-max range by 1 − i/100, i < 80, scoring Σ|w − ŵ|^2.4
  kHessian,  // same shrink factors, scoring Σ_j H_jj (w_j − ŵ_j)² (llama.cpp imatrix style)
};

const char* to_string(Granularity g);
const char* to_string(ScaleSearch s);
ScaleSearch parse_scale_search(const std::string& name);  // "minmax" | "mse" | "hessian"

struct GridSpec {
  int bits = 4;
  bool symmetric = false;
  bool restricted = false;  // symmetric only: drop −2^(b−1) so the range is ±(2^(b−1)−1)
  Granularity granularity = Granularity::kPerGroup;
  int group_size = 128;  // inputs sharing one (s, z) along a row; only for kPerGroup
  ScaleSearch search = ScaleSearch::kMinMax;
  double mse_norm = 2.4;  // the p of the L_p error kMse scores
  int shrink_steps = 80;  // candidates p = 1 − i/100, i < shrink_steps

  // A ggml storage format (format.hpp): bits, symmetry and the group (the format's sub-block)
  // follow from it, the scale search chooses the stored parameters and freezes them at their
  // exact stored values. Only kMinMax and kHessian searches apply (kMse is refused).
  std::optional<GgmlType> format;

  // Convenience for the CLI convention: group_size 0 = per row, > 0 = per group.
  static GridSpec with_group_size(int bits, int group_size, bool symmetric = false);
  // The spec of a ggml format (bits, symmetry, group size set from it).
  static GridSpec for_format(GgmlType type, ScaleSearch search = ScaleSearch::kHessian);

  void validate() const;  // throws InvalidArgument naming the bad field
  std::int32_t qmin() const;
  std::int32_t qmax() const;
  // Consecutive inputs sharing one scale for a matrix with `cols` inputs.
  Index effective_group_size(Index cols) const;
};

// What the blocks of a format grid store (format.hpp), per row; Grid::scales and Grid::offsets
// are derived from it by derive_format_levels() and must never be set on their own.
//   32-blocks:  d (and m for q4_1 / q5_1) per block: rows × blocks, fp16 values held as float
//               (iq4_nl: d only, which may be 0 for an all-zero block).
//   K-quants:   d, dmin per super-block (rows × super-blocks), the integer sub-block scale `sc` and
//               min `m` per sub-block (rows × sub-blocks) exactly as stored: q2_k 0..15 each,
//               q4_k / q5_k 0..63 each, q3_k 0..63 (the level uses sc − 32), q6_k −128..127.
struct FormatParams {
  MatrixF d;        // fp16 values
  MatrixF dmin;     // q4_1 / q5_1: m;  q2_k / q4_k / q5_k: dmin;  else empty
  MatrixI32 sc;     // K-quants only
  MatrixI32 m;      // q2_k / q4_k / q5_k only
};

struct Grid {
  int bits = 4;
  bool symmetric = false;
  bool restricted = false;
  Index group_size = 0;  // consecutive inputs per (s, z); == cols for per-row / per-tensor
  Index rows = 0, cols = 0;
  Granularity granularity = Granularity::kPerRow;
  MatrixF scales;   // rows × groups, > 0
  MatrixI32 zeros;  // rows × groups; all 0 when symmetric
  VectorF exponent; // NUPES power a per row; empty = uniform (a = 1)
  // Storage-format grids (GridSpec::format): the format, its stored parameters, and the real
  // offset b per (row, group) of formats with offsets (empty otherwise). zeros are all 0 there.
  std::optional<GgmlType> format;
  FormatParams stored;
  MatrixF offsets;
  // Table formats (iq4_nl): the format's level table (ggml_traits(format).levels), set by
  // derive_format_levels; nullptr on every other grid. level(q) = s·level_table[q].
  const std::int8_t* level_table = nullptr;
  bool has_level_table() const { return level_table != nullptr; }

  std::int32_t qmin() const;
  std::int32_t qmax() const;
  Index groups() const { return scales.cols(); }
  Index group_of(Index col) const { return col / group_size; }
  bool is_uniform() const { return exponent.size() == 0; }
  float power(Index row) const { return exponent.size() == 0 ? 1.0f : exponent[row]; }
  bool has_offsets() const { return offsets.size() != 0; }
  float offset(Index row, Index g) const { return has_offsets() ? offsets(row, g) : 0.0f; }
  // The (real) code where the level is 0: z, or −b/s on a grid with offsets. Continuous methods
  // work in code units t = w/s + zero_point; final levels always come from level().
  float zero_point(Index row, Index g) const {
    return has_offsets() ? -offsets(row, g) / scales(row, g) : static_cast<float>(zeros(row, g));
  }

  // Value of code q at (row, col). On a format grid this is ggml's dequantization, bit for bit.
  float level(Index row, Index col, std::int32_t q) const {
    const Index g = group_of(col);
    if (has_offsets()) return scales(row, g) * static_cast<float>(q) + offsets(row, g);
    // dequantize_row_iq4_nl: d · kvalues_iq4nl[n] in float32 (exact: fp16 × int8).
    if (level_table) return scales(row, g) * static_cast<float>(level_table[q]);
    const float v = scales(row, g) * static_cast<float>(q - zeros(row, g));
    const float a = power(row);
    if (a == 1.0f) return v;
    return std::copysign(std::pow(std::fabs(v), 1.0f / a), v);
  }
  // Nearest code (round half away from zero, clamped) for weight w at (row, col). On a format grid
  // the nearest of the stored levels themselves (ties to the smaller code).
  std::int32_t code(Index row, Index col, float w) const {
    if (format) return format_code(row, col, w);
    const Index g = group_of(col);
    const float a = power(row);
    const float t = a == 1.0f ? w : std::copysign(std::pow(std::fabs(w), a), w);
    const float r = std::round(t / scales(row, g)) + static_cast<float>(zeros(row, g));
    const float lo = static_cast<float>(qmin()), hi = static_cast<float>(qmax());
    return static_cast<std::int32_t>(r < lo ? lo : (r > hi ? hi : r));
  }

  // Throws InvalidArgument unless the grid is internally consistent and matches rows × cols; a
  // format grid's scales and offsets must equal what its stored parameters give, bit for bit.
  void validate(Index expect_rows, Index expect_cols) const;
  // Grid storage in bits per weight (scales as f16 and zero points as `bits`-bit, the usual packing;
  // a format grid: every byte of its blocks but the codes).
  double overhead_bits_per_weight() const;

 private:
  void validate_format(Index groups) const;
  std::int32_t format_code(Index row, Index col, float w) const {
    if (level_table) return table_code(row, col, w);
    const Index g = group_of(col);
    const float s = scales(row, g);
    const float t = (w - offset(row, g)) / s;
    const float lo = static_cast<float>(qmin()), hi = static_cast<float>(qmax());
    const float r = std::round(t);
    std::int32_t q = static_cast<std::int32_t>(r < lo ? lo : (r > hi ? hi : r));
    // The division rounds: settle on the nearest stored level among the neighbours.
    float best = std::fabs(w - level(row, col, q));
    const std::int32_t q0 = q;
    for (std::int32_t c : {q0 - 1, q0 + 1}) {
      if (c < qmin() || c > qmax()) continue;
      const float e = std::fabs(w - level(row, col, c));
      if (e < best || (e == best && c < q)) {
        best = e;
        q = c;
      }
    }
    return q;
  }
  // The nearest of the 16 stored levels s·T[k] (ties to the smaller code). T ascends, so the
  // levels are monotone in k (descending when s < 0, all 0 when s = 0): a binary search on w/s
  // finds the candidate, the neighbours settle what the division rounded.
  std::int32_t table_code(Index row, Index col, float w) const {
    const float s = scales(row, group_of(col));
    if (s == 0.0f) return 0;  // every level is 0: the smallest code
    const float t = w / s;
    std::int32_t lo = 0, hi = 15;  // first k with T[k] >= t, by bisection
    while (lo < hi) {
      const std::int32_t mid = (lo + hi) / 2;
      if (static_cast<float>(level_table[mid]) < t)
        lo = mid + 1;
      else
        hi = mid;
    }
    // Errors in double: the difference of two floats is exact there unless their magnitudes are
    // 2^29 apart (no near-tie then), so near-ties go by the true distance and only an exact tie
    // goes to the smaller code.
    std::int32_t q = -1;
    double best = 0.0;
    for (std::int32_t c = lo - 2; c <= lo + 1; ++c) {
      if (c < 0 || c > 15) continue;
      const double e = std::fabs(static_cast<double>(w) -
                                 static_cast<double>(s * static_cast<float>(level_table[c])));
      if (q < 0 || e < best) {  // ascending c: an equal error keeps the smaller code
        best = e;
        q = c;
      }
    }
    return q;
  }
};

// Copies every parameter of `row` (scales, zero points, offsets, stored format parameters, exponent)
// from `from` into `to`; both must have the same shape and format.
void copy_row_parameters(Grid& to, const Grid& from, Index row);

// A format grid whose scales move to `scales` (rows × groups, e.g. learned by FlexRound) as far as
// the format can store them: 32-blocks round d to fp16; K-quants keep each super-block's d and
// round the sub-block scale to the nearest storable integer (never to a zero scale). Offsets and
// every other stored parameter are kept.
Grid project_format_scales(const Grid& grid, const MatrixF& scales);

// Fills grid.scales and grid.offsets from grid.stored exactly as ggml's dequantization computes
// them (format.hpp); grid.format, rows, cols, group_size and the stored shapes must be set.
void derive_format_levels(Grid& grid);

// Nearest codes of W on the grid (out × in, int8 storage for every bit width).
MatrixI8 quantize(const MatrixFRef& w, const Grid& grid);
// Values of the codes.
MatrixF dequantize(const MatrixI8Ref& codes, const Grid& grid);
// dequantize(quantize(w)).
MatrixF fake_quant(const MatrixFRef& w, const Grid& grid);

// Throws InvalidArgument (naming `what`, the position and the value) unless every entry is finite.
void require_finite(const MatrixFRef& m, const char* what);

}  // namespace qround
