// Internal: the double-precision GEMM micro-kernels behind Hessian accumulation and loss
// evaluation. POD interface only (per-ISA translation units include nothing else).
//
// One call adds an MR × NR tile: C[r][j] += Σ_k a[k·MR + r] · b[k·NR + j] for r < mr, j < nr,
// with `a` and `b` packed micro-panels (zero-padded to MR / NR) and C row-major with stride ldc.
#pragma once

#include <cstddef>

namespace qround::kernels {

constexpr int kGemmMr = 8;
constexpr int kGemmNr = 24;

using GemmF64Kernel = void (*)(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                               std::ptrdiff_t ldc, int mr, int nr) noexcept;
// The same tile product, but instead of adding it to C it is dotted row by row with D (row-major,
// stride ldd): sums[r] += Σ_j tile[r][j] · D[r][j] for r < mr, j < nr.
using GemmF64DotKernel = void (*)(std::ptrdiff_t kc, const double* a, const double* b,
                                  const double* d, std::ptrdiff_t ldd, int mr, int nr,
                                  double* sums) noexcept;

void gemm_f64_kernel_scalar(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) noexcept;
void gemm_f64_dot_kernel_scalar(std::ptrdiff_t kc, const double* a, const double* b,
                                const double* d, std::ptrdiff_t ldd, int mr, int nr,
                                double* sums) noexcept;
#ifdef QROUND_HAVE_AVX2
void gemm_f64_kernel_avx2(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                          std::ptrdiff_t ldc, int mr, int nr) noexcept;
void gemm_f64_dot_kernel_avx2(std::ptrdiff_t kc, const double* a, const double* b, const double* d,
                              std::ptrdiff_t ldd, int mr, int nr, double* sums) noexcept;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
void gemm_f64_kernel_avx512(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) noexcept;
void gemm_f64_dot_kernel_avx512(std::ptrdiff_t kc, const double* a, const double* b,
                                const double* d, std::ptrdiff_t ldd, int mr, int nr,
                                double* sums) noexcept;
#endif

}  // namespace qround::kernels
