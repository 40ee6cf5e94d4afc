// Accumulation of AᵀB in double — the Hessian kernel (H = XᵀX is a symmetric rank-k update).
// Kept for callers holding column-major double matrices; new code uses detail/dense.hpp directly
// (it reads float activations without a converted copy).
#pragma once

#include <Eigen/Core>

#include "qround/detail/dense.hpp"

namespace qround::detail {

// acc (n × n) += aᵀ b, with a, b column-major tokens × n. `symmetric` means a and b are the same
// matrix: then one triangle is computed and mirrored. Independent of the thread count.
inline void accumulate_gram(Eigen::Ref<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>> acc,
                            const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, bool symmetric) {
  const DenseView va{nullptr, a.data(), a.rows(), a.cols(), 1, a.rows()};
  const DenseView vb{nullptr, b.data(), b.rows(), b.cols(), 1, b.rows()};
  if (symmetric) {
    syrk_accumulate(va, acc);
  } else {
    gemm_accumulate(va.transposed(), vb, acc);
  }
}

}  // namespace qround::detail
