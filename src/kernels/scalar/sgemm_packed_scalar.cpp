// Portable packed float GEMM: the same per-k-block summation order as the AVX-512 kernel (without
// FMA, so not bit-identical), written as plain loops the compiler vectorises for the baseline ISA.
#include <cstddef>

#include "../sgemm_packed.hpp"

namespace qround::kernels {

void sgemm_packed_scalar(long m, long n, long k, const float* a, long lda, const float* packed_b,
                         float* c, long ldc, float* /*workspace*/) noexcept {
  const long panels = (n + kSgemmNr - 1) / kSgemmNr;
  for (long i = 0; i < m; ++i)
    for (long j = 0; j < n; ++j) c[i * ldc + j] = 0.0f;
  float acc[kSgemmNr];
  for (long p0 = 0; p0 < k; p0 += kSgemmKc) {
    const long kc = k - p0 < kSgemmKc ? k - p0 : kSgemmKc;
    const float* block = packed_b + static_cast<std::size_t>(p0) * panels * kSgemmNr;
    for (long j = 0; j < panels; ++j) {
      const float* panel = block + static_cast<std::size_t>(j) * kc * kSgemmNr;
      const long j0 = j * kSgemmNr;
      const long nr = n - j0 < kSgemmNr ? n - j0 : kSgemmNr;
      for (long i = 0; i < m; ++i) {
        for (long jj = 0; jj < kSgemmNr; ++jj) acc[jj] = 0.0f;
        const float* arow = a + i * lda + p0;
        for (long p = 0; p < kc; ++p) {
          const float av = arow[p];
          const float* brow = panel + p * kSgemmNr;
          for (long jj = 0; jj < kSgemmNr; ++jj) acc[jj] += av * brow[jj];
        }
        float* crow = c + i * ldc + j0;
        for (long jj = 0; jj < nr; ++jj) crow[jj] += acc[jj];
      }
    }
  }
}

}  // namespace qround::kernels
