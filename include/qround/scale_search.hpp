// Scale search: from a GridSpec and the weights to a concrete Grid.
//
// Every group is searched independently (per-tensor: one group spanning the matrix). Min-max uses
// the range widened to include 0 (an all-zero group gets [−1, 1]); asymmetric grids then follow
//   s = (xmax − xmin)/(2^b − 1),  z = round(−xmin/s)
// and symmetric ones s = max(|xmin|, |xmax|)/qmax. MSE and Hessian search shrink that range by
// p = 1 − i/100 (i < shrink_steps) and keep the p with the smallest error on their own metric.
#pragma once

#include "qround/grid.hpp"

namespace qround {

// `importance` (length in) weights the squared error of each input in kHessian search — normally
// diag(XᵀX). It is required for kHessian and ignored otherwise.
Grid make_grid(const MatrixFRef& w, const GridSpec& spec);
Grid make_grid(const MatrixFRef& w, const GridSpec& spec, const VectorD& importance);

// The grid of a ggml storage format (spec.format set; make_grid dispatches here): chooses the
// stored parameters of every block (fp16 d / m / dmin, integer sub-block scales and mins) to
// minimise the squared error of nearest rounding, weighted by `importance` (diag H) when given,
// and freezes them at their exact stored values. Throws InvalidArgument when a row length is not
// a whole number of the format's blocks, for non-finite weights, or when a block's range cannot be
// stored in fp16.
Grid make_format_grid(const MatrixFRef& w, const GridSpec& spec, const VectorD* importance);

// The error a candidate grid scores under the spec's search metric (the quantity the search
// minimises), summed over the whole matrix. Exposed so tests and callers can compare grids.
double grid_search_error(const MatrixFRef& w, const Grid& grid, const GridSpec& spec,
                         const VectorD* importance = nullptr);

}  // namespace qround
