// Naive reference kernels: straight loops over the unpacked codes, int64 / double accumulators.
#include <fmt/format.h>

#include "qround/error.hpp"
#include "qround/qgemm_ref.hpp"

namespace qround::ref {
namespace {

void check_shapes(const MatrixI8Ref& codes, const Grid& grid, Index x_cols) {
  grid.validate(codes.rows(), codes.cols());
  if (x_cols != codes.cols())
    throw InvalidArgument(
        fmt::format("activations have {} inputs, the weights {}", x_cols, codes.cols()));
}

}  // namespace

RowMatrix<std::int64_t> accumulators(const MatrixI8Ref& codes, const Grid& grid,
                                     const MatrixI8Ref& xq) {
  check_shapes(codes, grid, xq.cols());
  const Index groups = grid.groups();
  RowMatrix<std::int64_t> acc = RowMatrix<std::int64_t>::Zero(xq.rows(), codes.rows() * groups);
  for (Index t = 0; t < xq.rows(); ++t)
    for (Index r = 0; r < codes.rows(); ++r)
      for (Index c = 0; c < codes.cols(); ++c) {
        const Index g = grid.group_of(c);
        acc(t, r * groups + g) += static_cast<std::int64_t>(codes(r, c) - grid.zeros(r, g)) *
                                  static_cast<std::int64_t>(xq(t, c));
      }
  return acc;
}

MatrixD qgemm(const MatrixI8Ref& codes, const Grid& grid, const QuantizedActivations& xq) {
  const RowMatrix<std::int64_t> acc = accumulators(codes, grid, xq.codes);
  const Index groups = grid.groups();
  MatrixD y(xq.codes.rows(), codes.rows());
  for (Index t = 0; t < y.rows(); ++t)
    for (Index r = 0; r < y.cols(); ++r) {
      double s = 0.0;
      for (Index g = 0; g < groups; ++g)
        s += static_cast<double>(grid.scales(r, g)) * static_cast<double>(acc(t, r * groups + g));
      y(t, r) = static_cast<double>(xq.scales[t]) * s;
    }
  return y;
}

MatrixD qgemm_float(const MatrixI8Ref& codes, const Grid& grid, const MatrixFRef& x) {
  check_shapes(codes, grid, x.cols());
  const MatrixD w = dequantize(codes, grid).cast<double>();
  return x.cast<double>() * w.transpose();
}

}  // namespace qround::ref
