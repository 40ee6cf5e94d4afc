// The register-blocked product behind detail::RowBlockLoss, compiled once (not inlined into each
// method) so every caller gets the same tuned code.
#include "qround/detail/row_block_loss.hpp"

namespace qround::detail {

void multiply_rows(const float* a, Index n, Index lda, const float* b, Index depth,
                          Index cols, Index ldb, float* c, Index ldc) {
  constexpr Index kR = 4, kC = 8;
  for (Index c0 = 0; c0 < cols; c0 += kC) {
    const Index nc = std::min(kC, cols - c0);
    for (Index r0 = 0; r0 < n; r0 += kR) {
      const Index nr = std::min(kR, n - r0);
      float acc[kR][kC] = {};
      if (nr == kR && nc == kC) {
        for (Index j = 0; j < depth; ++j) {
          const float* h = b + j * ldb + c0;
          for (Index r = 0; r < kR; ++r) {
            const float d = a[(r0 + r) * lda + j];
            for (Index k = 0; k < kC; ++k) acc[r][k] += d * h[k];
          }
        }
      } else {
        for (Index j = 0; j < depth; ++j) {
          const float* h = b + j * ldb + c0;
          for (Index r = 0; r < nr; ++r) {
            const float d = a[(r0 + r) * lda + j];
            for (Index k = 0; k < nc; ++k) acc[r][k] += d * h[k];
          }
        }
      }
      for (Index r = 0; r < nr; ++r)
        for (Index k = 0; k < nc; ++k) c[(r0 + r) * ldc + c0 + k] = acc[r][k];
    }
  }
}

}  // namespace qround::detail
