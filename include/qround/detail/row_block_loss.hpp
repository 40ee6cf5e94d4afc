// Hessian-form layer loss and gradient over blocks of output rows, in float, for the iterative
// methods (FlexRound, NUPES, AdaRound): per row i with Δ_i = ŵ_i − w_i,
//   L_i = Δ_i H Δ_iᵀ + 2 Δ_i·r_i (+ the constant L0_i),   ∂L_i/∂ŵ_i = 2(Δ_i H + r_i)
// (LayerProblem's formulas). A block of rows costs one product Δ_block · H, so callers process rows
// in fixed blocks (kRowBlock) inside their own parallel loop. The product is a small register-
// blocked kernel rather than Eigen's GEMM: Eigen parallelises (and re-blocks its depth loop)
// depending on the OpenMP state it is called from, which would make results depend on the thread
// count; here every output is summed over the depth in one fixed order.
#pragma once

#include <Eigen/Core>
#include <algorithm>

#include "qround/problem.hpp"

namespace qround::detail {

// c (n × cols, row stride ldc) = a (n × depth, stride lda) · b (depth × cols, stride ldb), each
// output summed over j = 0..depth−1 in order. Register tiles of 4 rows × 8 columns.
void multiply_rows(const float* a, Index n, Index lda, const float* b, Index depth, Index cols,
                   Index ldb, float* c, Index ldc);

class RowBlockLoss {
 public:
  // Rows per block: large enough for an efficient GEMM, small enough to spread over threads.
  static constexpr Index kRowBlock = 16;

  explicit RowBlockLoss(const LayerProblem& problem)
      : h_(problem.hessian().cast<float>()), has_target_(problem.has_target()) {
    problem.require_calibration();
    if (has_target_) r_ = problem.target_residual().cast<float>();
    baseline_ = problem.baseline_loss();
  }

  Index cols() const { return h_.rows(); }
  Index blocks(Index rows) const { return (rows + kRowBlock - 1) / kRowBlock; }
  // The constant Σ L0_i that row_loss leaves out (0 without an asymmetric target).
  double baseline() const { return baseline_; }

  // Rows [row0, row0 + delta.rows()): `grad` = 2(ΔH + R) and row_loss[k] = Δ_k H Δ_kᵀ + 2Δ_k·r_k.
  void evaluate(Index row0, const MatrixF& delta, MatrixF& grad, double* row_loss) const {
    grad.resize(delta.rows(), delta.cols());
    multiply_rows(delta.data(), delta.rows(), delta.cols(), h_.data(), h_.rows(), h_.cols(),
                  h_.cols(), grad.data(), grad.cols());
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

 private:
  MatrixF h_;
  MatrixF r_;
  bool has_target_;
  double baseline_ = 0.0;
};

}  // namespace qround::detail
