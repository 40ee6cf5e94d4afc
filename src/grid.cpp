#include "qround/grid.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace qround {

const char* to_string(Granularity g) {
  switch (g) {
    case Granularity::kPerTensor: return "per-tensor";
    case Granularity::kPerRow: return "per-row";
    case Granularity::kPerGroup: return "per-group";
  }
  return "?";
}

const char* to_string(ScaleSearch s) {
  switch (s) {
    case ScaleSearch::kMinMax: return "minmax";
    case ScaleSearch::kMse: return "mse";
    case ScaleSearch::kHessian: return "hessian";
  }
  return "?";
}

ScaleSearch parse_scale_search(const std::string& name) {
  if (name == "minmax") return ScaleSearch::kMinMax;
  if (name == "mse") return ScaleSearch::kMse;
  if (name == "hessian") return ScaleSearch::kHessian;
  throw InvalidArgument(
      fmt::format("unknown scale search '{}': expected minmax, mse or hessian", name));
}

GridSpec GridSpec::with_group_size(int bits, int group_size, bool symmetric) {
  GridSpec spec;
  spec.bits = bits;
  spec.symmetric = symmetric;
  if (group_size < 0)
    throw InvalidArgument(fmt::format("group size {} is negative: expected 0 (per row) or > 0",
                                      group_size));
  spec.granularity = group_size == 0 ? Granularity::kPerRow : Granularity::kPerGroup;
  spec.group_size = group_size == 0 ? 128 : group_size;
  return spec;
}

void GridSpec::validate() const {
  if (bits < 2 || bits > 8)
    throw InvalidArgument(fmt::format("bits = {} is out of range: expected 2..8", bits));
  // Codes live in int8 storage; asymmetric 8-bit codes span [0, 255] and would not fit.
  if (bits == 8 && !symmetric)
    throw InvalidArgument("asymmetric 8-bit grids are not supported (codes [0, 255] do not fit "
                          "int8 storage): use a symmetric grid for 8 bits");
  if (restricted && !symmetric)
    throw InvalidArgument("a restricted range applies to symmetric grids only");
  if (granularity == Granularity::kPerGroup && group_size < 1)
    throw InvalidArgument(fmt::format("group size {} must be >= 1", group_size));
  if (!(mse_norm > 0.0) || !std::isfinite(mse_norm))
    throw InvalidArgument(fmt::format("mse_norm {} must be a positive finite number", mse_norm));
  if (shrink_steps < 1 || shrink_steps > 100)
    throw InvalidArgument(fmt::format("shrink_steps {} is out of range: expected 1..100",
                                      shrink_steps));
}

static std::int32_t qmin_of(int bits, bool symmetric, bool restricted) {
  if (!symmetric) return 0;
  const std::int32_t half = std::int32_t{1} << (bits - 1);
  return restricted ? -(half - 1) : -half;
}
static std::int32_t qmax_of(int bits, bool symmetric) {
  return symmetric ? (std::int32_t{1} << (bits - 1)) - 1 : (std::int32_t{1} << bits) - 1;
}

std::int32_t GridSpec::qmin() const { return qmin_of(bits, symmetric, restricted); }
std::int32_t GridSpec::qmax() const { return qmax_of(bits, symmetric); }
std::int32_t Grid::qmin() const { return qmin_of(bits, symmetric, restricted); }
std::int32_t Grid::qmax() const { return qmax_of(bits, symmetric); }

Index GridSpec::effective_group_size(Index cols) const {
  if (granularity == Granularity::kPerGroup) return std::min<Index>(group_size, cols);
  return cols;
}

void Grid::validate(Index expect_rows, Index expect_cols) const {
  if (bits < 2 || bits > 8)
    throw InvalidArgument(fmt::format("grid bits = {} is out of range: expected 2..8", bits));
  if (rows != expect_rows || cols != expect_cols)
    throw InvalidArgument(fmt::format("grid is for a {}×{} matrix, but the weights are {}×{}",
                                      rows, cols, expect_rows, expect_cols));
  if (group_size < 1 || group_size > std::max<Index>(cols, 1))
    throw InvalidArgument(fmt::format("grid group size {} is invalid for {} inputs", group_size,
                                      cols));
  const Index expect_groups = (cols + group_size - 1) / group_size;
  if (scales.rows() != rows || scales.cols() != expect_groups)
    throw InvalidArgument(fmt::format("grid scales are {}×{}, expected {}×{}", scales.rows(),
                                      scales.cols(), rows, expect_groups));
  if (zeros.rows() != rows || zeros.cols() != expect_groups)
    throw InvalidArgument(fmt::format("grid zero points are {}×{}, expected {}×{}", zeros.rows(),
                                      zeros.cols(), rows, expect_groups));
  for (Index r = 0; r < rows; ++r)
    for (Index g = 0; g < expect_groups; ++g) {
      const float s = scales(r, g);
      if (!(s > 0.0f) || !std::isfinite(s))
        throw InvalidArgument(fmt::format("grid scale ({}, {}) = {} must be positive and finite",
                                          r, g, s));
      const std::int32_t z = zeros(r, g);
      if (symmetric ? z != 0 : (z < qmin() || z > qmax()))
        throw InvalidArgument(fmt::format("grid zero point ({}, {}) = {} outside [{}, {}]", r, g,
                                          z, symmetric ? 0 : qmin(), symmetric ? 0 : qmax()));
    }
  if (exponent.size() != 0) {
    if (exponent.size() != rows)
      throw InvalidArgument(fmt::format("grid has {} exponents for {} rows", exponent.size(),
                                        rows));
    for (Index r = 0; r < rows; ++r)
      if (!(exponent[r] > 0.0f) || !std::isfinite(exponent[r]))
        throw InvalidArgument(fmt::format("grid exponent of row {} = {} must be positive", r,
                                          exponent[r]));
  }
}

double Grid::overhead_bits_per_weight() const {
  const double per_group = 16.0 + (symmetric ? 0.0 : bits) + 0.0;
  const double exps = exponent.size() == 0 ? 0.0 : 16.0 * static_cast<double>(rows);
  const double n = static_cast<double>(rows) * static_cast<double>(cols);
  if (n == 0) return 0.0;
  if (granularity == Granularity::kPerTensor) return (per_group + exps) / n;
  return (per_group * static_cast<double>(rows * groups()) + exps) / n;
}

void require_finite(const MatrixFRef& m, const char* what) {
  for (Index r = 0; r < m.rows(); ++r)
    for (Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(m(r, c)))
        throw InvalidArgument(fmt::format("{} has a non-finite value {} at ({}, {})", what,
                                          m(r, c), r, c));
}

MatrixI8 quantize(const MatrixFRef& w, const Grid& grid) {
  grid.validate(w.rows(), w.cols());
  // A NaN would reach the float → int conversion in Grid::code (undefined behaviour).
  require_finite(w, "weights to quantize");
  MatrixI8 q(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c)
      q(r, c) = static_cast<std::int8_t>(grid.code(r, c, w(r, c)));
  return q;
}

MatrixF dequantize(const MatrixI8Ref& codes, const Grid& grid) {
  grid.validate(codes.rows(), codes.cols());
  MatrixF out(codes.rows(), codes.cols());
  for (Index r = 0; r < codes.rows(); ++r)
    for (Index c = 0; c < codes.cols(); ++c) {
      const std::int32_t q = codes(r, c);
      if (q < grid.qmin() || q > grid.qmax())
        throw InvalidArgument(fmt::format("code {} at ({}, {}) is outside the grid [{}, {}]", q,
                                          r, c, grid.qmin(), grid.qmax()));
      out(r, c) = grid.level(r, c, q);
    }
  return out;
}

MatrixF fake_quant(const MatrixFRef& w, const Grid& grid) {
  return dequantize(quantize(w, grid), grid);
}

}  // namespace qround
