// Portable double GEMM micro-kernel (the compiler vectorises it for the baseline ISA).
#include "../gemm_f64.hpp"

namespace qround::kernels {

void gemm_f64_kernel_scalar(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) {
  double acc[kGemmMr][kGemmNr] = {};
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const double* ak = a + k * kGemmMr;
    const double* bk = b + k * kGemmNr;
    for (int r = 0; r < kGemmMr; ++r)
      for (int j = 0; j < kGemmNr; ++j) acc[r][j] += ak[r] * bk[j];
  }
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) c[r * ldc + j] += acc[r][j];
}

}  // namespace qround::kernels
