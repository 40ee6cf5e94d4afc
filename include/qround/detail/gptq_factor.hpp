// GPTQ's factorisation, exposed for benchmarks and tests: the upper Cholesky factor U of A⁻¹
// (UᵀU = A⁻¹) for a symmetric positive definite A, computed without forming A⁻¹.
#pragma once

#include "qround/types.hpp"

namespace qround::detail {

// Returns false (u unspecified) if A is not numerically positive definite.
bool upper_factor_of_inverse(const RowMatrix<double>& a, RowMatrix<double>& u);

}  // namespace qround::detail
