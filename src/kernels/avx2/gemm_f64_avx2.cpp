// AVX2 double GEMM micro-kernel. The packed panels are laid out for the 8 × 24 tile of the
// AVX-512 kernel; with 16 ymm registers the tile is computed as four 4 × 12 sub-tiles (12
// accumulators, 3 loads of b and one broadcast of a per k).
#include <immintrin.h>

#include "../gemm_f64.hpp"

namespace qround::kernels {
namespace {

constexpr int kSubRows = 4;
constexpr int kSubCols = 12;

// acc[r][v] = Σ_k a[k·MR + r0 + r] · b[k·NR + c0 + 4v .. +4]
inline void sub_tile(std::ptrdiff_t kc, const double* a, const double* b, int r0, int c0,
                     __m256d (&acc)[kSubRows][3]) noexcept {
  for (int r = 0; r < kSubRows; ++r)
    for (int v = 0; v < 3; ++v) acc[r][v] = _mm256_setzero_pd();
  a += r0;
  b += c0;
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4), b2 = _mm256_loadu_pd(b + 8);
#pragma GCC unroll 4
    for (int r = 0; r < kSubRows; ++r) {
      const __m256d ar = _mm256_broadcast_sd(a + r);
      acc[r][0] = _mm256_fmadd_pd(ar, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_pd(ar, b1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_pd(ar, b2, acc[r][2]);
    }
    a += kGemmMr;
    b += kGemmNr;
  }
}

// Visits the sub-tiles that hold valid rows / columns of an mr × nr tile.
template <typename Visit>
void for_each_sub_tile(std::ptrdiff_t kc, const double* a, const double* b, int mr, int nr,
                       Visit visit) noexcept {
  for (int r0 = 0; r0 < mr; r0 += kSubRows)
    for (int c0 = 0; c0 < nr; c0 += kSubCols) {
      __m256d acc[kSubRows][3];
      sub_tile(kc, a, b, r0, c0, acc);
      alignas(32) double lanes[kSubRows][kSubCols];
      for (int r = 0; r < kSubRows; ++r)
        for (int v = 0; v < 3; ++v) _mm256_store_pd(&lanes[r][4 * v], acc[r][v]);
      visit(r0, c0, lanes);
    }
}

}  // namespace

void gemm_f64_kernel_avx2(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                          std::ptrdiff_t ldc, int mr, int nr) noexcept {
  for_each_sub_tile(kc, a, b, mr, nr, [&](int r0, int c0, const double(&lanes)[4][12]) {
    for (int r = r0; r < mr && r < r0 + kSubRows; ++r)
      for (int j = c0; j < nr && j < c0 + kSubCols; ++j) c[r * ldc + j] += lanes[r - r0][j - c0];
  });
}

void gemm_f64_dot_kernel_avx2(std::ptrdiff_t kc, const double* a, const double* b, const double* d,
                              std::ptrdiff_t ldd, int mr, int nr, double* sums) noexcept {
  for_each_sub_tile(kc, a, b, mr, nr, [&](int r0, int c0, const double(&lanes)[4][12]) {
    for (int r = r0; r < mr && r < r0 + kSubRows; ++r) {
      double s = 0.0;
      for (int j = c0; j < nr && j < c0 + kSubCols; ++j)
        s += lanes[r - r0][j - c0] * d[r * ldd + j];
      sums[r] += s;
    }
  });
}

}  // namespace qround::kernels
