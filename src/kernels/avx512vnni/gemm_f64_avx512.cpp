// AVX-512 double GEMM micro-kernel: an 8 × 24 tile held in 24 zmm accumulators; per k, three
// vector loads of b, eight broadcasts of a, 24 FMAs.
#include <immintrin.h>

#include "../gemm_f64.hpp"

namespace qround::kernels {

void gemm_f64_kernel_avx512(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) {
  __m512d acc[kGemmMr][3];
  for (int r = 0; r < kGemmMr; ++r)
    for (int v = 0; v < 3; ++v) acc[r][v] = _mm512_setzero_pd();
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8),
                  b2 = _mm512_loadu_pd(b + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kGemmMr; ++r) {
      const __m512d ar = _mm512_set1_pd(a[r]);
      acc[r][0] = _mm512_fmadd_pd(ar, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_pd(ar, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_pd(ar, b2, acc[r][2]);
    }
    a += kGemmMr;
    b += kGemmNr;
  }
  __mmask8 mask[3];
  for (int v = 0; v < 3; ++v) {
    const int cols = nr - 8 * v;
    mask[v] = cols >= 8 ? 0xff : (cols <= 0 ? 0 : static_cast<__mmask8>((1u << cols) - 1));
  }
  for (int r = 0; r < mr; ++r) {
    double* row = c + r * ldc;
    for (int v = 0; v < 3; ++v) {
      if (!mask[v]) continue;
      const __m512d old = _mm512_maskz_loadu_pd(mask[v], row + 8 * v);
      _mm512_mask_storeu_pd(row + 8 * v, mask[v], _mm512_add_pd(old, acc[r][v]));
    }
  }
}

}  // namespace qround::kernels
