// Blocked, multi-threaded accumulation of AᵀB in double — the Hessian kernel (H = XᵀX is a
// symmetric rank-k update; only the lower triangle's blocks are computed, then mirrored).
//
// Each output block is owned by one thread and summed in a fixed order, so the result does not
// depend on the thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

namespace qround::detail {

// acc (n × n) += aᵀ b, with a, b column-major tokens × n. `symmetric` means a and b are the same
// matrix: then only blocks on or below the diagonal are formed and the upper triangle is mirrored.
inline void accumulate_gram(Eigen::Ref<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>> acc,
                            const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, bool symmetric) {
  const Eigen::Index n = a.cols();
  constexpr Eigen::Index kBlock = 128;
  const Eigen::Index nb = (n + kBlock - 1) / kBlock;
  const Eigen::Index pairs = symmetric ? nb * (nb + 1) / 2 : nb * nb;
#pragma omp parallel for schedule(dynamic, 1)
  for (Eigen::Index p = 0; p < pairs; ++p) {
    Eigen::Index bi, bj;
    if (symmetric) {  // p enumerates (bi ≥ bj) row by row
      bi = static_cast<Eigen::Index>((std::sqrt(8.0 * static_cast<double>(p) + 1.0) - 1.0) / 2.0);
      while (bi * (bi + 1) / 2 > p) --bi;
      while ((bi + 1) * (bi + 2) / 2 <= p) ++bi;
      bj = p - bi * (bi + 1) / 2;
    } else {
      bi = p / nb;
      bj = p % nb;
    }
    const Eigen::Index i0 = bi * kBlock, j0 = bj * kBlock;
    const Eigen::Index ni = std::min(kBlock, n - i0), nj = std::min(kBlock, n - j0);
    Eigen::MatrixXd block(ni, nj);
    block.noalias() = a.middleCols(i0, ni).transpose() * b.middleCols(j0, nj);
    acc.block(i0, j0, ni, nj) += block;
  }
  if (symmetric)
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = i + 1; j < n; ++j) acc(i, j) = acc(j, i);
}

}  // namespace qround::detail
