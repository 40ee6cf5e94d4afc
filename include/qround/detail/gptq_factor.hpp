// GPTQ's factorisation, exposed for benchmarks and tests: the upper Cholesky factor U of A⁻¹
// (UᵀU = A⁻¹) for a symmetric positive definite A, computed without forming A⁻¹.
#pragma once

#include "qround/types.hpp"

namespace qround::detail {

// Returns false (u unspecified) if A is not numerically positive definite. `threads` 0 = OpenMP's
// default; the result does not depend on it.
bool upper_factor_of_inverse(const RowMatrix<double>& a, RowMatrix<double>& u, int threads = 0);

}  // namespace qround::detail
