// U with UᵀU = A⁻¹ (upper), blocked so that almost all the work is in detail::gemm_sub tiles.
//
// With J the reversal permutation, if J A J = L Lᵀ then A⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J) and J L⁻¹ J is
// upper triangular with a positive diagonal: the unique upper factor the reference obtains with
// cholesky → cholesky_inverse → cholesky(upper), for one factorisation (n³/3) and one triangular
// inverse (n³/3) instead of ≈ n³.
//
// Both steps are right-looking over blocks of kNb columns; the triangular solves use the small
// explicit inverse of the diagonal block so that they are GEMMs too. Every tile of the output is
// computed by one thread from inputs fixed before the parallel loop, so the result does not depend
// on the thread count.
#include "qround/detail/gptq_factor.hpp"

#include <algorithm>
#include <cmath>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qround/detail/dense_gemm.hpp"

namespace qround::detail {
namespace {

constexpr Index kNb = 128;

using MatrixD = RowMatrix<double>;

// In-place lower Cholesky of the nb × nb block at `a` (row-major, leading dimension ld).
bool small_cholesky(double* a, Index ld, Index nb) {
  for (Index j = 0; j < nb; ++j) {
    double s = a[j * ld + j];
    for (Index p = 0; p < j; ++p) s -= a[j * ld + p] * a[j * ld + p];
    if (!(s > 0.0) || !std::isfinite(s)) return false;
    const double d = std::sqrt(s);
    a[j * ld + j] = d;
    for (Index i = j + 1; i < nb; ++i) {
      double t = a[i * ld + j];
      for (Index p = 0; p < j; ++p) t -= a[i * ld + p] * a[j * ld + p];
      a[i * ld + j] = t / d;
    }
  }
  return true;
}

// Inverse of the lower triangular nb × nb block at `l` (leading dimension ld), as a dense
// row-major nb × nb matrix (zero above the diagonal).
MatrixD small_lower_inverse(const double* l, Index ld, Index nb) {
  MatrixD x = MatrixD::Zero(nb, nb);
  for (Index c = 0; c < nb; ++c) {
    x(c, c) = 1.0 / l[c * ld + c];
    for (Index i = c + 1; i < nb; ++i) {
      double s = 0.0;
      for (Index p = c; p < i; ++p) s -= l[i * ld + p] * x(p, c);
      x(i, c) = s / l[i * ld + i];
    }
  }
  return x;
}

Index tiles(Index n) { return (n + kNb - 1) / kNb; }

// Lower Cholesky factor of `a` in place (the strict upper triangle is left as scratch).
bool blocked_cholesky(MatrixD& a, int threads) {
  const Index n = a.rows(), ld = a.cols();
  for (Index k0 = 0; k0 < n; k0 += kNb) {
    const Index kb = std::min(kNb, n - k0), r0 = k0 + kb, rest = n - r0;
    if (!small_cholesky(a.data() + k0 * ld + k0, ld, kb)) return false;
    if (rest == 0) break;
    // Panel: L21 = A21 · L11⁻ᵀ. As a GEMM update: C = 0 −= (−A21) · (L11⁻¹)ᵀ.
    const MatrixD inv = small_lower_inverse(a.data() + k0 * ld + k0, ld, kb);
    const MatrixD inv_t = inv.transpose();                        // row-major B operand
    std::vector<double> neg_a21(static_cast<size_t>(rest * kb));  // column-major A operand
    for (Index i = 0; i < rest; ++i)
      for (Index p = 0; p < kb; ++p)
        neg_a21[static_cast<size_t>(p * rest + i)] = -a(r0 + i, k0 + p);
    // T = L21ᵀ (kb × rest, row-major): the A operand (as column-major L21) and B operand (L21ᵀ)
    // of the trailing update.
    std::vector<double> t(static_cast<size_t>(kb * rest));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (Index ti = 0; ti < tiles(rest); ++ti) {
      const Index i0 = ti * kNb, ib = std::min(kNb, rest - i0);
      double* c = a.data() + (r0 + i0) * ld + k0;
      for (Index i = 0; i < ib; ++i) std::fill(c + i * ld, c + i * ld + kb, 0.0);
      gemm_sub(c, ld, neg_a21.data() + i0, rest, inv_t.data(), kb, ib, kb, kb);
      for (Index i = 0; i < ib; ++i)
        for (Index p = 0; p < kb; ++p) t[static_cast<size_t>(p * rest + i0 + i)] = c[i * ld + p];
    }
    // Trailing update of the lower tiles: A22 −= L21 L21ᵀ.
    const Index nt = tiles(rest);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (Index pair = 0; pair < nt * (nt + 1) / 2; ++pair) {
      Index ti = 0;
      while ((ti + 1) * (ti + 2) / 2 <= pair) ++ti;
      const Index tj = pair - ti * (ti + 1) / 2;
      const Index i0 = ti * kNb, j0 = tj * kNb;
      const Index ib = std::min(kNb, rest - i0), jb = std::min(kNb, rest - j0);
      gemm_sub(a.data() + (r0 + i0) * ld + r0 + j0, ld, t.data() + i0, rest, t.data() + j0, rest,
               ib, jb, kb);
    }
  }
  return true;
}

// X = L⁻¹ for the lower factor in `l` (only its lower triangle is read), block row by block row:
// X_ii = L_ii⁻¹ and X_i,<i = −L_ii⁻¹ (L_i,<i X_<i,<i).
MatrixD blocked_lower_inverse(const MatrixD& l, int threads) {
  const Index n = l.rows(), ld = l.cols();
  MatrixD x = MatrixD::Zero(n, n);
  for (Index i0 = 0; i0 < n; i0 += kNb) {
    const Index ib = std::min(kNb, n - i0);
    const MatrixD inv = small_lower_inverse(l.data() + i0 * ld + i0, ld, ib);
    x.block(i0, i0, ib, ib) = inv;
    if (i0 == 0) continue;
    std::vector<double> li(static_cast<size_t>(ib * i0));  // L_i,<i column-major (ib × i0)
    for (Index r = 0; r < ib; ++r)
      for (Index p = 0; p < i0; ++p) li[static_cast<size_t>(p * ib + r)] = l(i0 + r, p);
    std::vector<double> neg_inv(static_cast<size_t>(ib * ib));  // −L_ii⁻¹ column-major
    for (Index r = 0; r < ib; ++r)
      for (Index p = 0; p < ib; ++p) neg_inv[static_cast<size_t>(p * ib + r)] = -inv(r, p);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (Index tj = 0; tj < tiles(i0); ++tj) {
      const Index j0 = tj * kNb, jb = std::min(kNb, i0 - j0);
      // S = −L_i,[j0, i0) X_[j0, i0), j-tile  (X is zero above the diagonal, so k starts at j0).
      MatrixD s = MatrixD::Zero(ib, jb);
      gemm_sub(s.data(), jb, li.data() + j0 * ib, ib, x.data() + j0 * n + j0, n, ib, jb, i0 - j0);
      // X_i,j-tile = L_ii⁻¹ S = 0 −= (−L_ii⁻¹) S.
      gemm_sub(x.data() + i0 * n + j0, n, neg_inv.data(), ib, s.data(), jb, ib, jb, ib);
    }
  }
  return x;
}

}  // namespace

bool upper_factor_of_inverse(const MatrixD& a, MatrixD& u, int threads) {
#ifdef _OPENMP
  if (threads <= 0) threads = omp_get_max_threads();
#else
  threads = 1;
#endif
  MatrixD work = a.reverse();
  if (!blocked_cholesky(work, threads)) return false;
  u = blocked_lower_inverse(work, threads).reverse();
  return u.allFinite();
}

}  // namespace qround::detail
