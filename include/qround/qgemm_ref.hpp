// Naive references for the kernels, computed from the unpacked codes and grid (not from the
// packed layout), in int64 / double. Slow; for tests and the inference check.
#pragma once

#include <cstdint>

#include "qround/grid.hpp"
#include "qround/qgemm.hpp"
#include "qround/types.hpp"

namespace qround::ref {

// acc(t, r · groups + g) = Σ_{k ∈ group g} (q_rk − z_rg) · xq_tk.
RowMatrix<std::int64_t> accumulators(const MatrixI8Ref& codes, const Grid& grid,
                                     const MatrixI8Ref& xq);
// Integer-path output in double: a_t · Σ_g s_rg · acc_trg (uniform grids).
MatrixD qgemm(const MatrixI8Ref& codes, const Grid& grid, const QuantizedActivations& xq);
// X · dequantize(codes, grid)ᵀ in double (any grid).
MatrixD qgemm_float(const MatrixI8Ref& codes, const Grid& grid, const MatrixFRef& x);

}  // namespace qround::ref
