// AVX-512F register-tiled GEMM update (see dense_gemm_kernels.hpp): tiles of 8 rows × 2 vectors,
// 16 accumulators, B panels of kKc rows kept in L1 across the row tiles. Edges use masks.
#include <immintrin.h>

#include <cstddef>

#include "../dense_gemm_kernels.hpp"

namespace qround::kernels {
namespace {

constexpr std::ptrdiff_t kKc = 128;  // k rows of B per pass (32 KiB of doubles)
constexpr int kMr = 8;

struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;
  static M mask(std::ptrdiff_t n) { return n >= 16 ? M(0xFFFF) : M((1u << n) - 1u); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr int kLanes = 8;
  static M mask(std::ptrdiff_t n) { return n >= 8 ? M(0xFF) : M((1u << n) - 1u); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_pd(a, b, c); }
};

template <class K, int MR>
void tile(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
          const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t k, typename K::M m0,
          typename K::M m1) {
  typename K::V acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    acc0[r] = K::load(c + r * ldc, m0);
    acc1[r] = K::load(c + r * ldc + K::kLanes, m1);
  }
  for (std::ptrdiff_t p = 0; p < k; ++p) {
    const typename K::V b0 = K::load(b + p * ldb, m0);
    const typename K::V b1 = K::load(b + p * ldb + K::kLanes, m1);
    const typename K::T* ap = a + p * lda;
    for (int r = 0; r < MR; ++r) {
      const typename K::V ar = K::bcast(ap + r);
      acc0[r] = K::fnmadd(ar, b0, acc0[r]);
      acc1[r] = K::fnmadd(ar, b1, acc1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    K::store(c + r * ldc, m0, acc0[r]);
    K::store(c + r * ldc + K::kLanes, m1, acc1[r]);
  }
}

template <class K>
void gemm_sub(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
              const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
              std::ptrdiff_t k) {
  constexpr std::ptrdiff_t kNr = 2 * K::kLanes;
  using TileFn =
      void (*)(typename K::T*, std::ptrdiff_t, const typename K::T*, std::ptrdiff_t,
               const typename K::T*, std::ptrdiff_t, std::ptrdiff_t, typename K::M, typename K::M);
  // One register tile per row count of the last, partial row block.
  static constexpr TileFn kTiles[kMr] = {tile<K, 1>, tile<K, 2>, tile<K, 3>, tile<K, 4>,
                                         tile<K, 5>, tile<K, 6>, tile<K, 7>, tile<K, 8>};
  for (std::ptrdiff_t k0 = 0; k0 < k; k0 += kKc) {
    const std::ptrdiff_t kc = k - k0 < kKc ? k - k0 : kKc;
    for (std::ptrdiff_t j0 = 0; j0 < n; j0 += kNr) {
      const std::ptrdiff_t nr = n - j0;
      const typename K::M m0 = K::mask(nr), m1 = K::mask(nr - K::kLanes > 0 ? nr - K::kLanes : 0);
      const typename K::T* bp = b + k0 * ldb + j0;
      for (std::ptrdiff_t i0 = 0; i0 < m; i0 += kMr) {
        typename K::T* cp = c + i0 * ldc + j0;
        const typename K::T* ap = a + k0 * lda + i0;
        kTiles[(m - i0 < kMr ? m - i0 : kMr) - 1](cp, ldc, ap, lda, bp, ldb, kc, m0, m1);
      }
    }
  }
}

}  // namespace

void gemm_sub_f32_avx512(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                         const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                         std::ptrdiff_t k) noexcept {
  gemm_sub<F32>(c, ldc, a, lda, b, ldb, m, n, k);
}

void gemm_sub_f64_avx512(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                         const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                         std::ptrdiff_t k) noexcept {
  gemm_sub<F64>(c, ldc, a, lda, b, ldb, m, n, k);
}

}  // namespace qround::kernels
