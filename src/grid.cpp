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

GridSpec GridSpec::for_format(GgmlType type, ScaleSearch search) {
  const GgmlTypeTraits& t = ggml_traits(type);
  if (!t.quantized())
    throw InvalidArgument(fmt::format("format {} is a float type: it has no grid", t.name));
  GridSpec spec;
  spec.format = type;
  spec.bits = t.bits;
  spec.symmetric = t.signed_codes();
  spec.restricted = false;
  spec.granularity = Granularity::kPerGroup;
  spec.group_size = t.sub_block;
  spec.search = search;
  return spec;
}

void GridSpec::validate() const {
  if (format) {
    const GgmlTypeTraits& t = ggml_traits(*format);
    if (!t.quantized())
      throw InvalidArgument(fmt::format("format {} is a float type: it has no grid", t.name));
    if (bits != t.bits || symmetric != t.signed_codes() || restricted ||
        granularity != Granularity::kPerGroup || group_size != t.sub_block)
      throw InvalidArgument(fmt::format(
          "format {} stores {}-bit {} codes in groups of {}: got {} bits, {}{}, {} {}", t.name,
          t.bits, t.signed_codes() ? "symmetric" : "asymmetric", t.sub_block, bits,
          symmetric ? "symmetric" : "asymmetric", restricted ? " restricted" : "",
          to_string(granularity), granularity == Granularity::kPerGroup ? group_size : 0));
    if (search == ScaleSearch::kMse)
      throw InvalidArgument(fmt::format("format {} takes the minmax or hessian scale search, not "
                                        "mse",
                                        t.name));
    return;
  }
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
  if (format) {
    validate_format(expect_groups);
    return;
  }
  if (offsets.size() != 0)
    throw InvalidArgument("grid has offsets but no storage format");
  if (level_table != nullptr)
    throw InvalidArgument("grid has a level table but no storage format (only iq4_nl has one)");
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

void Grid::validate_format(Index groups) const {
  const GgmlTypeTraits& t = ggml_traits(*format);
  if (!t.quantized())
    throw InvalidArgument(fmt::format("grid format {} is a float type", t.name));
  if (bits != t.bits || symmetric != t.signed_codes() || restricted || group_size != t.sub_block ||
      granularity != Granularity::kPerGroup)
    throw InvalidArgument(fmt::format("grid does not match format {} ({} bits, groups of {})",
                                      t.name, t.bits, t.sub_block));
  if (cols % t.block != 0)
    throw InvalidArgument(fmt::format("format {} needs rows of a multiple of {} inputs: got {}",
                                      t.name, t.block, cols));
  if (exponent.size() != 0)
    throw InvalidArgument(fmt::format("format {} cannot store a power exponent", t.name));
  if (zeros.rows() != rows || zeros.cols() != groups || (zeros.array() != 0).any())
    throw InvalidArgument(fmt::format("format {} grids keep integer zero points at 0", t.name));
  if (level_table != t.levels)
    throw InvalidArgument(
        fmt::format("grid level table does not match format {}: {}", t.name,
                    t.levels ? "expected its table of levels (call derive_format_levels)"
                             : "the format has uniform levels, not a table"));
  Grid derived = *this;
  derive_format_levels(derived);  // validates the stored parameters' shapes and ranges
  for (Index r = 0; r < rows; ++r)
    for (Index g = 0; g < groups; ++g) {
      const float s = scales(r, g);
      // A table format stores d = 0 for an all-zero block as ggml does (every level is 0).
      if (!std::isfinite(s) || (s == 0.0f && !t.levels))
        throw InvalidArgument(fmt::format("grid scale ({}, {}) = {} must be finite and nonzero",
                                          r, g, s));
      if (float_bits(s) != float_bits(derived.scales(r, g)) ||
          (t.has_offset && float_bits(offsets(r, g)) != float_bits(derived.offsets(r, g))))
        throw InvalidArgument(fmt::format(
            "grid level parameters at ({}, {}) differ from what the stored {} parameters give",
            r, g, t.name));
    }
}

namespace {

// The stored parameter matrix `m` must be rows × n with every value in [lo, hi].
void check_stored(const MatrixI32& m, Index rows, Index n, std::int32_t lo, std::int32_t hi,
                  const char* what, const char* format) {
  if (m.rows() != rows || m.cols() != n)
    throw InvalidArgument(fmt::format("{} stored {} are {}×{}, expected {}×{}", format, what,
                                      m.rows(), m.cols(), rows, n));
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < n; ++j)
      if (m(r, j) < lo || m(r, j) > hi)
        throw InvalidArgument(fmt::format("{} stored {} ({}, {}) = {} outside [{}, {}]", format,
                                          what, r, j, m(r, j), lo, hi));
}
void check_stored(const MatrixF& m, Index rows, Index n, const char* what, const char* format) {
  if (m.rows() != rows || m.cols() != n)
    throw InvalidArgument(fmt::format("{} stored {} are {}×{}, expected {}×{}", format, what,
                                      m.rows(), m.cols(), rows, n));
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < n; ++j)
      if (!std::isfinite(m(r, j)) || round_to_fp16(m(r, j)) != m(r, j))
        throw InvalidArgument(fmt::format("{} stored {} ({}, {}) = {} is not a finite fp16 value",
                                          format, what, r, j, m(r, j)));
}

}  // namespace

void derive_format_levels(Grid& grid) {
  if (!grid.format) throw InvalidArgument("derive_format_levels: the grid has no format");
  const GgmlTypeTraits& t = ggml_traits(*grid.format);
  const Index rows = grid.rows;
  const Index groups = grid.cols / t.sub_block;
  const Index blocks = grid.cols / t.block;
  const FormatParams& p = grid.stored;
  check_stored(p.d, rows, blocks, "d", t.name);
  if (t.has_offset) check_stored(p.dmin, rows, blocks, t.super_block ? "dmin" : "m", t.name);
  grid.scales.resize(rows, groups);
  if (t.has_offset) grid.offsets.resize(rows, groups);
  else grid.offsets.resize(0, 0);
  grid.level_table = t.levels;  // iq4_nl: s = d, level = d·T[n]
  if (!t.super_block) {
    // 32-blocks: s = d, b = m (ggml: x·d + m).
    grid.scales = p.d;
    if (t.has_offset) grid.offsets = p.dmin;
    return;
  }
  const Index per_super = t.block / t.sub_block;
  const std::int32_t smax = (1 << t.scale_bits) - 1;
  if (*grid.format == GgmlType::kQ6_K) check_stored(p.sc, rows, groups, -128, 127, "sc", t.name);
  else check_stored(p.sc, rows, groups, 0, smax, "sc", t.name);
  if (t.has_offset) check_stored(p.m, rows, groups, 0, smax, "m", t.name);
  for (Index r = 0; r < rows; ++r)
    for (Index g = 0; g < groups; ++g) {
      const float d = p.d(r, g / per_super);
      const std::int32_t sc = *grid.format == GgmlType::kQ3_K ? p.sc(r, g) - 32 : p.sc(r, g);
      grid.scales(r, g) = d * static_cast<float>(sc);  // exact: fp16 × small integer
      if (t.has_offset)
        grid.offsets(r, g) = -(p.dmin(r, g / per_super) * static_cast<float>(p.m(r, g)));
    }
}

void copy_row_parameters(Grid& to, const Grid& from, Index row) {
  if (to.rows != from.rows || to.cols != from.cols || to.groups() != from.groups() ||
      to.format != from.format)
    throw InvalidArgument("copy_row_parameters: the grids differ in shape or format");
  to.scales.row(row) = from.scales.row(row);
  to.zeros.row(row) = from.zeros.row(row);
  if (from.has_offsets()) to.offsets.row(row) = from.offsets.row(row);
  auto copy = [row](auto& dst, const auto& src) {
    if (src.size() != 0) dst.row(row) = src.row(row);
  };
  copy(to.stored.d, from.stored.d);
  copy(to.stored.dmin, from.stored.dmin);
  copy(to.stored.sc, from.stored.sc);
  copy(to.stored.m, from.stored.m);
  if (to.exponent.size() == 0 && from.exponent.size() != 0) to.exponent = VectorF::Ones(to.rows);
  if (to.exponent.size() != 0) to.exponent[row] = from.power(row);
}

Grid project_format_scales(const Grid& grid, const MatrixF& scales) {
  if (!grid.format) throw InvalidArgument("project_format_scales: the grid has no format");
  if (scales.rows() != grid.rows || scales.cols() != grid.groups())
    throw InvalidArgument(fmt::format("project_format_scales: {}×{} scales for a grid of {}×{}",
                                      scales.rows(), scales.cols(), grid.rows, grid.groups()));
  const GgmlTypeTraits& t = ggml_traits(*grid.format);
  Grid out = grid;
  FormatParams& p = out.stored;
  if (!t.super_block) {
    for (Index r = 0; r < grid.rows; ++r)
      for (Index g = 0; g < grid.groups(); ++g) {
        const float d = round_to_fp16(scales(r, g));
        if (std::isfinite(d) && d != 0.0f) p.d(r, g) = d;
      }
  } else {
    // Stored sc range and the offset the level subtracts (q3_k stores sc − 32 + 32).
    const bool q3 = *grid.format == GgmlType::kQ3_K, q6 = *grid.format == GgmlType::kQ6_K;
    const std::int32_t lo = q6 ? -128 : 0, hi = q6 ? 127 : (1 << t.scale_bits) - 1;
    const std::int32_t bias = q3 ? 32 : 0;
    const Index per_super = t.block / t.sub_block;
    for (Index r = 0; r < grid.rows; ++r)
      for (Index g = 0; g < grid.groups(); ++g) {
        const double d = p.d(r, g / per_super);
        if (!std::isfinite(scales(r, g))) continue;
        double n = std::round(static_cast<double>(scales(r, g)) / d);
        if (n == 0.0) n = scales(r, g) * d >= 0.0 ? 1.0 : -1.0;  // a zero scale loses every level
        const std::int32_t stored =
            static_cast<std::int32_t>(std::clamp(n + bias, static_cast<double>(lo), static_cast<double>(hi)));
        if (stored - bias != 0) p.sc(r, g) = stored;
      }
  }
  derive_format_levels(out);
  return out;
}

double Grid::overhead_bits_per_weight() const {
  if (format) return ggml_traits(*format).bits_per_weight() - bits;
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
