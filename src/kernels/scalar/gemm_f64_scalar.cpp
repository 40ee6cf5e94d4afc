// Portable double GEMM micro-kernel (the compiler vectorises it for the baseline ISA).
#include "../gemm_f64.hpp"

namespace qround::kernels {

namespace {

void tile_product(std::ptrdiff_t kc, const double* a, const double* b,
                  double (&acc)[kGemmMr][kGemmNr]) {
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const double* ak = a + k * kGemmMr;
    const double* bk = b + k * kGemmNr;
    for (int r = 0; r < kGemmMr; ++r)
      for (int j = 0; j < kGemmNr; ++j) acc[r][j] += ak[r] * bk[j];
  }
}

}  // namespace

void gemm_f64_kernel_scalar(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) noexcept {
  double acc[kGemmMr][kGemmNr] = {};
  tile_product(kc, a, b, acc);
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[r * ldc + j] += acc[r][j];
}

void gemm_f64_dot_kernel_scalar(std::ptrdiff_t kc, const double* a, const double* b,
                                const double* d, std::ptrdiff_t ldd, int mr, int nr,
                                double* sums) noexcept {
  double acc[kGemmMr][kGemmNr] = {};
  tile_product(kc, a, b, acc);
  for (int r = 0; r < mr; ++r) {
    double s = 0.0;
    for (int j = 0; j < nr; ++j) s += acc[r][j] * d[r * ldd + j];
    sums[r] += s;
  }
}

}  // namespace qround::kernels
