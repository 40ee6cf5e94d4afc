// The "never worse than round-to-nearest" guarantee of the learned methods. The loss splits over
// output rows, so every row whose result loses to RTN on the reference grid (compared in double,
// LayerProblem::row_losses) takes RTN's codes and grid row back, which can only lower the total.
#pragma once

#include "qround/grid.hpp"
#include "qround/problem.hpp"

namespace qround::detail {

// Returns how many rows were replaced. `grid` and `rtn_grid` must have the same shape and
// granularity; exponents are per row, so mixed rows stay representable.
inline int keep_rows_not_worse_than_rtn(const LayerProblem& problem, const Grid& rtn_grid,
                                        MatrixI8& codes, Grid& grid) {
  const MatrixI8 rtn_codes = quantize(problem.weights(), rtn_grid);
  const VectorD rtn = problem.row_losses(dequantize(rtn_codes, rtn_grid));
  const VectorD ours = problem.row_losses(dequantize(codes, grid));
  int replaced = 0;
  if (grid.exponent.size() == 0 && rtn_grid.exponent.size() != 0)
    grid.exponent = VectorF::Ones(grid.rows);
  for (Index r = 0; r < codes.rows(); ++r) {
    if (!(ours[r] > rtn[r])) continue;
    ++replaced;
    codes.row(r) = rtn_codes.row(r);
    grid.scales.row(r) = rtn_grid.scales.row(r);
    grid.zeros.row(r) = rtn_grid.zeros.row(r);
    if (grid.exponent.size() != 0) grid.exponent[r] = rtn_grid.power(r);
  }
  return replaced;
}

}  // namespace qround::detail
