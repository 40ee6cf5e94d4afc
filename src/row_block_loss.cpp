// detail::RowBlockLoss on the packed float GEMM shared with AdaRound.
#include "qround/detail/row_block_loss.hpp"

#include "kernels/sgemm_packed.hpp"

namespace qround::detail {

RowBlockLoss::RowBlockLoss(const LayerProblem& problem)
    : cols_(problem.cols()), has_target_(problem.has_target()) {
  problem.require_calibration();
  const MatrixF h = problem.hessian().cast<float>();
  packed_h_.resize(kernels::sgemm_packed_b_size(cols_, cols_));
  kernels::sgemm_pack_b(cols_, cols_, h.data(), cols_, 1, packed_h_.data());
  if (has_target_) r_ = problem.target_residual().cast<float>();
  baseline_ = problem.baseline_loss();
}

void RowBlockLoss::evaluate(Index row0, const MatrixF& delta, MatrixF& grad,
                            double* row_loss) const {
  // One GEMM workspace per thread (64-byte aligned through Eigen's allocator).
  thread_local Eigen::VectorXf workspace(static_cast<Index>(kernels::kSgemmWorkspace));
  grad.resize(delta.rows(), delta.cols());
  kernels::sgemm_packed(delta.rows(), cols_, cols_, delta.data(), cols_, packed_h_.data(),
                        grad.data(), cols_, workspace.data());
  for (Index k = 0; k < delta.rows(); ++k) {
    double l = 0.0;
    for (Index j = 0; j < delta.cols(); ++j) {
      const double d = delta(k, j);
      const double t = has_target_ ? static_cast<double>(r_(row0 + k, j)) : 0.0;
      l += d * (static_cast<double>(grad(k, j)) + 2.0 * t);
    }
    row_loss[k] = l;
  }
  if (has_target_) grad += r_.middleRows(row0, delta.rows());
  grad *= 2.0f;
}

}  // namespace qround::detail
