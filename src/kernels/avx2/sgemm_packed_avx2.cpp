// Packed float GEMM with AVX2 + FMA (see sgemm_packed.hpp for the packing and contract). With 16
// ymm registers a 32-column panel is computed as two 16-column halves, each in 6 × 16 micro-tiles:
// 12 accumulators, 2 loads of B and 6 broadcasts of A per k (enough independent FMAs to keep both
// FMA pipes busy through their latency). A is packed per 96 × 256 block into 6-row slivers.
// Per k-block each tile is summed from zero and then added to C, so the order of additions
// depends only on k — the same as the scalar and AVX-512 kernels'.
#include <immintrin.h>

#include <cstddef>

#include "../sgemm_packed.hpp"

namespace qround::kernels {
namespace {

constexpr long kMr = 6;
constexpr long kHalf = 16;  // columns per micro-tile: two ymm vectors
static_assert(kSgemmNr == 2 * kHalf, "a packed panel is two micro-tile halves wide");
static_assert(kSgemmMc % kMr == 0, "the packed A block holds whole slivers");

// Rows [0, mr_total) and columns [p0, p0 + kc) of A into slivers of kMr rows, k-major, zero-padded.
void pack_a(const float* a, long lda, long mr_total, long p0, long kc, float* out) {
  for (long s = 0; s < mr_total; s += kMr) {
    const long rows = mr_total - s < kMr ? mr_total - s : kMr;
    for (long p = 0; p < kc; ++p) {
      for (long i = 0; i < rows; ++i) out[p * kMr + i] = a[(s + i) * lda + p0 + p];
      for (long i = rows; i < kMr; ++i) out[p * kMr + i] = 0.0f;
    }
    out += kMr * kc;
  }
}

// Lanes [0, n) of a ymm vector (n clamped to [0, 8]).
inline __m256i lane_mask(long n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int lanes = n < 0 ? 0 : (n > 8 ? 8 : static_cast<int>(n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), iota);
}

// C[0:rows, 0:cols) (+)= Σ_p A(r, p) B(p, ·) for a 6 × 16 tile; B rows are kSgemmNr floats apart.
// `first`: C is written instead of accumulated into (the first k-block).
inline void micro_tile(long kc, const float* ap, const float* bp, float* c, long ldc, long rows,
                       long cols, bool first) {
  __m256 c0[kMr], c1[kMr];
#pragma GCC unroll 6
  for (long i = 0; i < kMr; ++i) {
    c0[i] = _mm256_setzero_ps();
    c1[i] = _mm256_setzero_ps();
  }
  for (long p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(bp);
    const __m256 b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
    for (long i = 0; i < kMr; ++i) {
      const __m256 av = _mm256_broadcast_ss(ap + i);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
    ap += kMr;
    bp += kSgemmNr;
  }
  if (rows == kMr && cols == kHalf) {
#pragma GCC unroll 6
    for (long i = 0; i < kMr; ++i) {
      float* row = c + i * ldc;
      if (first) {
        _mm256_storeu_ps(row, c0[i]);
        _mm256_storeu_ps(row + 8, c1[i]);
      } else {
        _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), c0[i]));
        _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), c1[i]));
      }
    }
    return;
  }
  // Edge tile: masked loads and stores (rare, so their cost does not matter).
  const __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
  for (long i = 0; i < rows; ++i) {
    float* row = c + i * ldc;
    const __m256 old0 = first ? _mm256_setzero_ps() : _mm256_maskload_ps(row, m0);
    const __m256 old1 = first ? _mm256_setzero_ps() : _mm256_maskload_ps(row + 8, m1);
    _mm256_maskstore_ps(row, m0, _mm256_add_ps(old0, c0[i]));
    _mm256_maskstore_ps(row + 8, m1, _mm256_add_ps(old1, c1[i]));
  }
}

}  // namespace

void sgemm_packed_avx2(long m, long n, long k, const float* a, long lda, const float* packed_b,
                       float* c, long ldc, float* workspace) noexcept {
  const long panels = (n + kSgemmNr - 1) / kSgemmNr;
  if (k <= 0) {  // an empty sum: C = 0
    for (long i = 0; i < m; ++i)
      for (long j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
    return;
  }
  for (long i0 = 0; i0 < m; i0 += kSgemmMc) {
    const long mc = m - i0 < kSgemmMc ? m - i0 : kSgemmMc;
    for (long p0 = 0; p0 < k; p0 += kSgemmKc) {
      const long kc = k - p0 < kSgemmKc ? k - p0 : kSgemmKc;
      pack_a(a + i0 * lda, lda, mc, p0, kc, workspace);
      const float* block = packed_b + static_cast<std::size_t>(p0) * panels * kSgemmNr;
      for (long j = 0; j < panels; ++j) {
        const float* panel = block + static_cast<std::size_t>(j) * kc * kSgemmNr;
        for (long h = 0; h < kSgemmNr; h += kHalf) {
          const long j0 = j * kSgemmNr + h;
          if (j0 >= n) break;  // this half is all padding
          const long cols = n - j0 < kHalf ? n - j0 : kHalf;
          for (long s = 0; s < mc; s += kMr) {
            const long rows = mc - s < kMr ? mc - s : kMr;
            micro_tile(kc, workspace + s * kc, panel + h, c + (i0 + s) * ldc + j0, ldc, rows, cols,
                       p0 == 0);
          }
        }
      }
    }
  }
}

}  // namespace qround::kernels
