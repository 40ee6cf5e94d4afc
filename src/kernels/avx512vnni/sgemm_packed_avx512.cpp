// Packed float GEMM with AVX-512 FMA: 12 × 32 micro-tiles (24 zmm accumulators), A packed per
// 96 × 256 block into 12-row slivers, B pre-packed into 256 × 32 panels (see sgemm_packed.hpp).
// Per k-block each tile is summed from zero and then added to C, so the order of additions
// depends only on k — the same as the scalar kernel's.
#include <immintrin.h>

#include <cstddef>

#include "../sgemm_packed.hpp"

namespace qround::kernels {
namespace {

constexpr long kMr = kSgemmMr;
static_assert(kSgemmNr == 32, "the micro-kernel holds two 16-float vectors per row");

// Rows [i0, i0 + mr) and columns [p0, p0 + kc) of A into slivers of kMr rows, k-major, zero-padded.
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

inline void micro_tile(long kc, const float* ap, const float* bp, float* c, long ldc, long rows,
                       long cols) {
  __m512 c0[kMr], c1[kMr];
#pragma GCC unroll 12
  for (long i = 0; i < kMr; ++i) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = _mm512_setzero_ps();
  }
  for (long p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_loadu_ps(bp);
    const __m512 b1 = _mm512_loadu_ps(bp + 16);
    _mm_prefetch(reinterpret_cast<const char*>(bp + 8 * kSgemmNr), _MM_HINT_T0);
#pragma GCC unroll 12
    for (long i = 0; i < kMr; ++i) {
      const __m512 av = _mm512_set1_ps(ap[i]);
      c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
    }
    ap += kMr;
    bp += kSgemmNr;
  }
  const __mmask16 m0 = cols >= 16 ? static_cast<__mmask16>(0xFFFF)
                                  : static_cast<__mmask16>((1u << cols) - 1u);
  const __mmask16 m1 = cols >= 32 ? static_cast<__mmask16>(0xFFFF)
                                  : (cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1u)
                                               : static_cast<__mmask16>(0));
  for (long i = 0; i < rows; ++i) {
    float* row = c + i * ldc;
    _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), c0[i]));
    _mm512_mask_storeu_ps(row + 16, m1,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), c1[i]));
  }
}

}  // namespace

void sgemm_packed_avx512(long m, long n, long k, const float* a, long lda, const float* packed_b,
                         float* c, long ldc, float* workspace) noexcept {
  const long panels = (n + kSgemmNr - 1) / kSgemmNr;
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
  for (long i0 = 0; i0 < m; i0 += kSgemmMc) {
    const long mc = m - i0 < kSgemmMc ? m - i0 : kSgemmMc;
    for (long p0 = 0; p0 < k; p0 += kSgemmKc) {
      const long kc = k - p0 < kSgemmKc ? k - p0 : kSgemmKc;
      pack_a(a + i0 * lda, lda, mc, p0, kc, workspace);
      const float* block = packed_b + static_cast<std::size_t>(p0) * panels * kSgemmNr;
      for (long j = 0; j < panels; ++j) {
        const float* panel = block + static_cast<std::size_t>(j) * kc * kSgemmNr;
        const long cols = n - j * kSgemmNr < kSgemmNr ? n - j * kSgemmNr : kSgemmNr;
        for (long s = 0; s < mc; s += kMr) {
          const long rows = mc - s < kMr ? mc - s : kMr;
          micro_tile(kc, workspace + s * kc, panel, c + (i0 + s) * ldc + j * kSgemmNr, ldc, rows,
                     cols);
        }
      }
    }
  }
}

}  // namespace qround::kernels
