// Dense GEMM update kernels for GPTQ's factorisation and lazy block updates (raw pointers only, so
// per-ISA translation units can include this without Eigen or the STL):
//   C (m × n, row-major, ldc) −= A (m × k, column-major, lda) · B (k × n, row-major, ldb)
// Each element of C accumulates its k products in increasing k order, whatever m and n are, so a
// caller that splits C into tiles gets the same bits as one call.
#pragma once

#include <cstddef>

namespace qround::kernels {

void gemm_sub_f32_avx2(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                       const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) noexcept;
void gemm_sub_f64_avx2(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                       const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) noexcept;
void gemm_sub_f32_avx512(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                         const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                         std::ptrdiff_t k) noexcept;
void gemm_sub_f64_avx512(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                         const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                         std::ptrdiff_t k) noexcept;

}  // namespace qround::kernels
