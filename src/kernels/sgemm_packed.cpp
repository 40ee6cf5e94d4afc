// Packing and dispatch of the packed float GEMM (generic flags).
#include "sgemm_packed.hpp"

#include "qround/isa.hpp"

namespace qround::kernels {

void sgemm_pack_b(long k, long n, const float* b, long row_stride, long col_stride,
                  float* packed) noexcept {
  const long panels = (n + kSgemmNr - 1) / kSgemmNr;
  float* out = packed;
  for (long p0 = 0; p0 < k; p0 += kSgemmKc) {
    const long kc = k - p0 < kSgemmKc ? k - p0 : kSgemmKc;
    for (long j = 0; j < panels; ++j) {
      const long j0 = j * kSgemmNr;
      const long nr = n - j0 < kSgemmNr ? n - j0 : kSgemmNr;
      for (long p = 0; p < kc; ++p) {
        const float* src = b + (p0 + p) * row_stride + j0 * col_stride;
        for (long jj = 0; jj < nr; ++jj) out[jj] = src[jj * col_stride];
        for (long jj = nr; jj < kSgemmNr; ++jj) out[jj] = 0.0f;
        out += kSgemmNr;
      }
    }
  }
}

bool use_avx512() noexcept {
#ifdef QROUND_HAVE_AVX512VNNI
  // The project-wide choice (CPU and OS support, QROUND_ISA, scoped overrides in tests).
  return active_isa() == Isa::kAvx512Vnni;
#else
  return false;
#endif
}

void sgemm_packed(long m, long n, long k, const float* a, long lda, const float* packed_b,
                  float* c, long ldc, float* workspace) noexcept {
#ifdef QROUND_HAVE_AVX512VNNI
  if (use_avx512()) return sgemm_packed_avx512(m, n, k, a, lda, packed_b, c, ldc, workspace);
#endif
  sgemm_packed_scalar(m, n, k, a, lda, packed_b, c, ldc, workspace);
}

const char* sgemm_packed_isa() noexcept { return use_avx512() ? "avx512" : "scalar"; }

}  // namespace qround::kernels
