// GEMM updates C (m × n, row-major, ldc) −= A (m × k, column-major, lda) · B (k × n, row-major,
// ldb) for GPTQ: the lazy block updates (f32) and the blocked factorisation (f64). AVX-512 or
// AVX2+FMA whenever the library's dense products use that ISA (detail::dense_kernel_isa():
// compiled in, supported by the CPU and OS, not capped by QROUND_ISA or a ScopedDenseKernel);
// otherwise a portable Eigen path. Every element's products are summed in a fixed order (k-blocks of 128,
// increasing k), so splitting C into tiles or rows never changes the result.
#pragma once

#include <cstddef>

namespace qround::detail {

void gemm_sub(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda, const float* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k);
void gemm_sub(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda, const double* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k);

// The portable path, always available (tests compare both).
void gemm_sub_portable(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                       const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k);
void gemm_sub_portable(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                       const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k);

// "avx512", "avx2" or "portable": the path gemm_sub() takes now.
const char* gemm_sub_path();

}  // namespace qround::detail
