// Quantization grids. A GridSpec is what the user asks for (bits, symmetry, granularity, how to
// search scales); a Grid is the concrete answer for one weight matrix: a scale and zero point per
// (row, group), and optionally a NUPES power exponent per row.
//
//   uniform symmetric   ŵ = s·q,          q ∈ [−2^(b−1), 2^(b−1)−1]   (restricted: ±(2^(b−1)−1))
//   uniform asymmetric  ŵ = s·(q − z),    q ∈ [0, 2^b−1], integer z so that 0 is exact
//   power (NUPES)       q = ⌊sign(w)|w|^a / s⌉ + z,   ŵ = sign(v)|v|^(1/a) with v = s·(q − z)
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "qround/error.hpp"
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

  // Convenience for the CLI convention: group_size 0 = per row, > 0 = per group.
  static GridSpec with_group_size(int bits, int group_size, bool symmetric = false);

  void validate() const;  // throws InvalidArgument naming the bad field
  std::int32_t qmin() const;
  std::int32_t qmax() const;
  // Consecutive inputs sharing one scale for a matrix with `cols` inputs.
  Index effective_group_size(Index cols) const;
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

  std::int32_t qmin() const;
  std::int32_t qmax() const;
  Index groups() const { return scales.cols(); }
  Index group_of(Index col) const { return col / group_size; }
  bool is_uniform() const { return exponent.size() == 0; }
  float power(Index row) const { return exponent.size() == 0 ? 1.0f : exponent[row]; }

  // Value of code q at (row, col).
  float level(Index row, Index col, std::int32_t q) const {
    const Index g = group_of(col);
    const float v = scales(row, g) * static_cast<float>(q - zeros(row, g));
    const float a = power(row);
    if (a == 1.0f) return v;
    return std::copysign(std::pow(std::fabs(v), 1.0f / a), v);
  }
  // Nearest code (round half away from zero, clamped) for weight w at (row, col).
  std::int32_t code(Index row, Index col, float w) const {
    const Index g = group_of(col);
    const float a = power(row);
    const float t = a == 1.0f ? w : std::copysign(std::pow(std::fabs(w), a), w);
    const float r = std::round(t / scales(row, g)) + static_cast<float>(zeros(row, g));
    const float lo = static_cast<float>(qmin()), hi = static_cast<float>(qmax());
    return static_cast<std::int32_t>(r < lo ? lo : (r > hi ? hi : r));
  }

  // Throws InvalidArgument unless the grid is internally consistent and matches rows × cols.
  void validate(Index expect_rows, Index expect_cols) const;
  // Grid storage in bits per weight (scales as f16 and zero points as `bits`-bit, the usual packing).
  double overhead_bits_per_weight() const;
};

// Nearest codes of W on the grid (out × in, int8 storage for every bit width).
MatrixI8 quantize(const MatrixFRef& w, const Grid& grid);
// Values of the codes.
MatrixF dequantize(const MatrixI8Ref& codes, const Grid& grid);
// dequantize(quantize(w)).
MatrixF fake_quant(const MatrixFRef& w, const Grid& grid);

// Throws InvalidArgument (naming `what`, the position and the value) unless every entry is finite.
void require_finite(const MatrixFRef& m, const char* what);

}  // namespace qround
