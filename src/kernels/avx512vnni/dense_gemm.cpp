// AVX-512F register-tiled GEMM update (see dense_gemm_kernels.hpp): tiles of 8 rows × 3 vectors
// (24 accumulators, enough independent FMAs to cover two 4-cycle FMA pipes), operands packed per
// k-block, the C tile prefetched while the product runs and updated once at the end. Edges use
// masks.
#include <immintrin.h>

#include <cstddef>

#include "../dense_gemm_kernels.hpp"

namespace qround::kernels {
namespace {

constexpr std::ptrdiff_t kKc = 128;  // k rows per pass: a packed B panel is 24 KiB
constexpr int kMr = 8;
constexpr int kNv = 3;  // vectors per tile row

struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;
  static M mask(std::ptrdiff_t n) {
    return n >= 16 ? M(0xFFFF) : n <= 0 ? M(0) : M((1u << n) - 1u);
  }
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
};

struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr int kLanes = 8;
  static M mask(std::ptrdiff_t n) { return n >= 8 ? M(0xFF) : n <= 0 ? M(0) : M((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
};

// C[0:MR, cols of `m`] −= Σ_p A(r, p) B(p, ·), with A(r, p) = a[r + p·lda], B(p, j) = b[p·ldb + j].
template <class K, int MR>
void tile(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
          const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t k, const typename K::M* m) {
  constexpr int kRowBytes = kNv * K::kLanes * static_cast<int>(sizeof(typename K::T));
  for (int r = 0; r < MR; ++r)
    for (int off = 0; off < kRowBytes; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc) + off, _MM_HINT_T0);
  typename K::V acc[MR][kNv];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < kNv; ++v) acc[r][v] = K::zero();
  for (std::ptrdiff_t p = 0; p < k; ++p) {
    typename K::V bv[kNv];
#pragma GCC unroll 3
    for (int v = 0; v < kNv; ++v) bv[v] = K::load(b + p * ldb + v * K::kLanes, m[v]);
    const typename K::T* ap = a + p * lda;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const typename K::V ar = K::bcast(ap + r);
#pragma GCC unroll 3
      for (int v = 0; v < kNv; ++v) acc[r][v] = K::fmadd(ar, bv[v], acc[r][v]);
    }
  }
  // Fully unrolled (and branch-free: a zero mask loads and stores nothing) so that GCC keeps the
  // accumulators in registers instead of spilling them on every k step.
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < kNv; ++v) {
      typename K::T* row = c + r * ldc + v * K::kLanes;
      K::store(row, m[v], K::sub(K::load(row, m[v]), acc[r][v]));
    }
}

// Operands are packed per k-block so that the inner loops read contiguous memory: A as tiles of
// kMr rows ([tile][p][row]), B as one panel of kNr columns ([p][col], zero-padded). Unpacked, the
// power-of-two leading dimensions of GPTQ's matrices map a whole B panel onto a couple of L1 sets.
// Packing does not change the order of the products, only where they are read from.
template <class K>
void gemm_sub(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
              const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
              std::ptrdiff_t k) {
  using T = typename K::T;
  using M = typename K::M;
  constexpr std::ptrdiff_t kNr = kNv * K::kLanes;
  constexpr std::ptrdiff_t kMc = 128;  // rows per packed A block (the factorisation's tiles)
  using TileFn = void (*)(T*, std::ptrdiff_t, const T*, std::ptrdiff_t, const T*, std::ptrdiff_t,
                          std::ptrdiff_t, const M*);
  // One register tile per row count of the last, partial row tile.
  static constexpr TileFn kTiles[kMr] = {tile<K, 1>, tile<K, 2>, tile<K, 3>, tile<K, 4>,
                                         tile<K, 5>, tile<K, 6>, tile<K, 7>, tile<K, 8>};
  auto masks = [](std::ptrdiff_t cols, M* out) {
    for (int v = 0; v < kNv; ++v) out[v] = K::mask(cols - v * K::kLanes);
  };
  M mk[kNv];
  if (k < kMr) {  // rank-few updates (GPTQ's in-block step): packing would cost more than it saves
    for (std::ptrdiff_t j0 = 0; j0 < n; j0 += kNr) {
      masks(n - j0, mk);
      for (std::ptrdiff_t i0 = 0; i0 < m; i0 += kMr)
        kTiles[(m - i0 < kMr ? m - i0 : kMr) - 1](c + i0 * ldc + j0, ldc, a + i0, lda, b + j0, ldb,
                                                  k, mk);
    }
    return;
  }
  alignas(64) T apack[kMc * kKc];
  alignas(64) T bpack[kKc * kNr];
  const M full[kNv] = {K::mask(K::kLanes), K::mask(K::kLanes), K::mask(K::kLanes)};
  for (std::ptrdiff_t k0 = 0; k0 < k; k0 += kKc) {
    const std::ptrdiff_t kc = k - k0 < kKc ? k - k0 : kKc;
    for (std::ptrdiff_t i1 = 0; i1 < m; i1 += kMc) {
      const std::ptrdiff_t mc = m - i1 < kMc ? m - i1 : kMc;
      const std::ptrdiff_t tiles = (mc + kMr - 1) / kMr;
      for (std::ptrdiff_t t = 0; t < tiles; ++t) {
        const std::ptrdiff_t rows = mc - t * kMr < kMr ? mc - t * kMr : kMr;
        T* dst = apack + t * kc * kMr;
        for (std::ptrdiff_t p = 0; p < kc; ++p) {
          const T* src = a + (k0 + p) * lda + i1 + t * kMr;
          for (std::ptrdiff_t r = 0; r < kMr; ++r) dst[p * kMr + r] = r < rows ? src[r] : T(0);
        }
      }
      for (std::ptrdiff_t j0 = 0; j0 < n; j0 += kNr) {
        masks(n - j0, mk);
        for (std::ptrdiff_t p = 0; p < kc; ++p)
          for (int v = 0; v < kNv; ++v)
            K::store(bpack + p * kNr + v * K::kLanes, full[v],
                     K::load(b + (k0 + p) * ldb + j0 + v * K::kLanes, mk[v]));
        for (std::ptrdiff_t t = 0; t < tiles; ++t) {
          const std::ptrdiff_t rows = mc - t * kMr < kMr ? mc - t * kMr : kMr;
          kTiles[rows - 1](c + (i1 + t * kMr) * ldc + j0, ldc, apack + t * kc * kMr, kMr, bpack,
                           kNr, kc, mk);
        }
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
