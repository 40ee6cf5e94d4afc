// AVX-512 double GEMM micro-kernel: an 8 × 24 tile held in 24 zmm accumulators; per k, three
// vector loads of b, eight broadcasts of a, 24 FMAs.
#include <immintrin.h>

#include "../gemm_f64.hpp"

namespace qround::kernels {

namespace {

// The C (or D) tile is usually far from the cache (H is in × in): start fetching its rows now so
// the misses overlap the kc-long product instead of following it.
inline void prefetch_tile(const double* p, std::ptrdiff_t ld, int mr, int nr) noexcept {
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; j += 8)
      _mm_prefetch(reinterpret_cast<const char*>(p + r * ld + j), _MM_HINT_T0);
}

struct Tile {
  __m512d acc[kGemmMr][3];
  __mmask8 mask[3];
};

// The 8 × 24 product over kc, and the column masks of the valid nr columns.
inline void tile_product(std::ptrdiff_t kc, const double* a, const double* b, int nr,
                         Tile& t) noexcept {
  for (int r = 0; r < kGemmMr; ++r)
    for (int v = 0; v < 3; ++v) t.acc[r][v] = _mm512_setzero_pd();
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8),
                  b2 = _mm512_loadu_pd(b + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kGemmMr; ++r) {
      const __m512d ar = _mm512_set1_pd(a[r]);
      t.acc[r][0] = _mm512_fmadd_pd(ar, b0, t.acc[r][0]);
      t.acc[r][1] = _mm512_fmadd_pd(ar, b1, t.acc[r][1]);
      t.acc[r][2] = _mm512_fmadd_pd(ar, b2, t.acc[r][2]);
    }
    a += kGemmMr;
    b += kGemmNr;
  }
  for (int v = 0; v < 3; ++v) {
    const int cols = nr - 8 * v;
    t.mask[v] = cols >= 8 ? 0xff : (cols <= 0 ? 0 : static_cast<__mmask8>((1u << cols) - 1));
  }
}

}  // namespace

void gemm_f64_kernel_avx512(std::ptrdiff_t kc, const double* a, const double* b, double* c,
                            std::ptrdiff_t ldc, int mr, int nr) noexcept {
  prefetch_tile(c, ldc, mr, nr);
  Tile t;
  tile_product(kc, a, b, nr, t);
  for (int r = 0; r < mr; ++r) {
    double* row = c + r * ldc;
    for (int v = 0; v < 3; ++v) {
      if (!t.mask[v]) continue;
      const __m512d old = _mm512_maskz_loadu_pd(t.mask[v], row + 8 * v);
      _mm512_mask_storeu_pd(row + 8 * v, t.mask[v], _mm512_add_pd(old, t.acc[r][v]));
    }
  }
}

void gemm_f64_dot_kernel_avx512(std::ptrdiff_t kc, const double* a, const double* b,
                                const double* d, std::ptrdiff_t ldd, int mr, int nr,
                                double* sums) noexcept {
  prefetch_tile(d, ldd, mr, nr);
  Tile t;
  tile_product(kc, a, b, nr, t);
  for (int r = 0; r < mr; ++r) {
    const double* row = d + r * ldd;
    __m512d s = _mm512_setzero_pd();
    for (int v = 0; v < 3; ++v)
      s = _mm512_fmadd_pd(t.acc[r][v], _mm512_maskz_loadu_pd(t.mask[v], row + 8 * v), s);
    alignas(64) double lanes[8];  // fixed-order reduction (GCC 12 warns on _mm512_reduce_add_pd)
    _mm512_store_pd(lanes, s);
    sums[r] += ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
               ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  }
}

}  // namespace qround::kernels
