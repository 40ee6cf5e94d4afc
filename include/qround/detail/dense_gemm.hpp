// GEMM updates C (m × n, row-major, ldc) −= A (m × k, column-major, lda) · B (k × n, row-major,
// ldb) for GPTQ: the lazy block updates (f32) and the blocked factorisation (f64). Dispatched once
// to AVX-512 when compiled in, supported by the CPU and OS, and not vetoed by QROUND_ISA
// (= scalar | avx2); otherwise a portable Eigen path. Every element accumulates its products in
// increasing k order on the AVX-512 path, so splitting C into tiles never changes the result.
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

// "avx512" or "portable": the path gemm_sub() took.
const char* gemm_sub_path();

}  // namespace qround::detail
