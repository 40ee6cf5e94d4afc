// AVX2 + FMA register-tiled GEMM update (see dense_gemm_kernels.hpp): tiles of 6 rows × 2 vectors
// (12 ymm accumulators, 2 loads of B and 6 broadcasts of A per k, enough independent FMAs to cover
// two FMA pipes), operands packed per k-block, C updated once per tile and k-block. Full tiles use
// plain loads and stores; only edge tiles use the (slower) masked ones.
#include <immintrin.h>

#include <cstddef>

#include "../dense_gemm_kernels.hpp"

namespace qround::kernels {
namespace {

constexpr std::ptrdiff_t kKc = 128;  // k rows per pass
constexpr std::ptrdiff_t kMc = 96;   // rows per packed A block (16 tiles)
constexpr int kMr = 6;
constexpr int kNv = 2;  // vectors per tile row
static_assert(kMc % kMr == 0, "a packed A block holds whole tiles");

struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int kLanes = 8;
  // Lanes [0, n) (n clamped to [0, 8]) as a maskload/maskstore mask.
  static __m256i mask(std::ptrdiff_t n) {
    const int lanes = n <= 0 ? 0 : (n >= 8 ? 8 : static_cast<int>(n));
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static V load(const T* p, __m256i m) { return _mm256_maskload_ps(p, m); }
  static void store(T* p, __m256i m, V v) { _mm256_maskstore_ps(p, m, v); }
  static V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
};

struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr int kLanes = 4;
  static __m256i mask(std::ptrdiff_t n) {
    const long long lanes = n <= 0 ? 0 : (n >= 4 ? 4 : static_cast<long long>(n));
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static V load(const T* p, __m256i m) { return _mm256_maskload_pd(p, m); }
  static void store(T* p, __m256i m, V v) { _mm256_maskstore_pd(p, m, v); }
  static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
};

// C[0:MR, ·] −= Σ_p A(r, p) B(p, ·), with A(r, p) = a[r + p·lda], B(p, j) = b[p·ldb + j].
// kMaskC: only the columns of `m` are read and written in C; kMaskB: likewise in B (an unpacked
// edge; a packed panel is zero-padded and read whole).
template <class K, int MR, bool kMaskC, bool kMaskB>
void tile(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
          const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t k, const __m256i* m) {
  typename K::V acc[MR][kNv];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < kNv; ++v) acc[r][v] = K::zero();
  for (std::ptrdiff_t p = 0; p < k; ++p) {
    typename K::V bv[kNv];
#pragma GCC unroll 2
    for (int v = 0; v < kNv; ++v)
      bv[v] = kMaskB ? K::load(b + p * ldb + v * K::kLanes, m[v])
                     : K::load(b + p * ldb + v * K::kLanes);
    const typename K::T* ap = a + p * lda;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const typename K::V ar = K::bcast(ap + r);
#pragma GCC unroll 2
      for (int v = 0; v < kNv; ++v) acc[r][v] = K::fmadd(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < kNv; ++v) {
      typename K::T* row = c + r * ldc + v * K::kLanes;
      if (kMaskC)
        K::store(row, m[v], K::sub(K::load(row, m[v]), acc[r][v]));
      else
        K::store(row, K::sub(K::load(row), acc[r][v]));
    }
}

template <class K>
using TileFn = void (*)(typename K::T*, std::ptrdiff_t, const typename K::T*, std::ptrdiff_t,
                        const typename K::T*, std::ptrdiff_t, std::ptrdiff_t, const __m256i*);

// One tile per row count of the last, partial row tile.
template <class K, bool kMaskC, bool kMaskB>
struct Tiles {
  static constexpr TileFn<K> kFn[kMr] = {tile<K, 1, kMaskC, kMaskB>, tile<K, 2, kMaskC, kMaskB>,
                                         tile<K, 3, kMaskC, kMaskB>, tile<K, 4, kMaskC, kMaskB>,
                                         tile<K, 5, kMaskC, kMaskB>, tile<K, 6, kMaskC, kMaskB>};
};

// Operands are packed per k-block so that the inner loops read contiguous memory (GPTQ's
// power-of-two leading dimensions would otherwise map a B panel onto a few L1 sets): A as tiles of
// kMr rows ([tile][p][row]), B as one panel of kNr columns ([p][col], zero-padded). Packing does
// not change the order of the products, only where they are read from.
template <class K>
void gemm_sub(typename K::T* c, std::ptrdiff_t ldc, const typename K::T* a, std::ptrdiff_t lda,
              const typename K::T* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
              std::ptrdiff_t k) {
  using T = typename K::T;
  constexpr std::ptrdiff_t kNr = kNv * K::kLanes;
  auto masks = [](std::ptrdiff_t cols, __m256i* out) {
    for (int v = 0; v < kNv; ++v) out[v] = K::mask(cols - v * K::kLanes);
  };
  __m256i mk[kNv];
  if (k < kMr) {  // rank-few updates (GPTQ's in-block step): packing would cost more than it saves
    for (std::ptrdiff_t j0 = 0; j0 < n; j0 += kNr) {
      const bool edge = n - j0 < kNr;
      masks(n - j0, mk);
      const TileFn<K>* fns = edge ? Tiles<K, true, true>::kFn : Tiles<K, false, false>::kFn;
      for (std::ptrdiff_t i0 = 0; i0 < m; i0 += kMr)
        fns[(m - i0 < kMr ? m - i0 : kMr) - 1](c + i0 * ldc + j0, ldc, a + i0, lda, b + j0, ldb,
                                               k, mk);
    }
    return;
  }
  alignas(32) T apack[kMc * kKc];
  alignas(32) T bpack[kKc * kNr];
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
        const std::ptrdiff_t cols = n - j0 < kNr ? n - j0 : kNr;
        masks(cols, mk);
        for (std::ptrdiff_t p = 0; p < kc; ++p) {
          const T* src = b + (k0 + p) * ldb + j0;
          T* dst = bpack + p * kNr;
          if (cols == kNr) {
            for (int v = 0; v < kNv; ++v) K::store(dst + v * K::kLanes, K::load(src + v * K::kLanes));
          } else {
            for (int v = 0; v < kNv; ++v)
              K::store(dst + v * K::kLanes, K::load(src + v * K::kLanes, mk[v]));
          }
        }
        const TileFn<K>* fns =
            cols == kNr ? Tiles<K, false, false>::kFn : Tiles<K, true, false>::kFn;
        for (std::ptrdiff_t t = 0; t < tiles; ++t) {
          const std::ptrdiff_t rows = mc - t * kMr < kMr ? mc - t * kMr : kMr;
          fns[rows - 1](c + (i1 + t * kMr) * ldc + j0, ldc, apack + t * kc * kMr, kMr, bpack, kNr,
                        kc, mk);
        }
      }
    }
  }
}

}  // namespace

void gemm_sub_f32_avx2(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                       const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) noexcept {
  gemm_sub<F32>(c, ldc, a, lda, b, ldb, m, n, k);
}

void gemm_sub_f64_avx2(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                       const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) noexcept {
  gemm_sub<F64>(c, ldc, a, lda, b, ldb, m, n, k);
}

}  // namespace qround::kernels
