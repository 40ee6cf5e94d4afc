// Hessian-form layer loss and gradient over blocks of output rows, in float, for the iterative
// methods (FlexRound, NUPES, AdaRound): per row i with Δ_i = ŵ_i − w_i,
//   L_i = Δ_i H Δ_iᵀ + 2 Δ_i·r_i (+ the constant L0_i),   ∂L_i/∂ŵ_i = 2(Δ_i H + r_i)
// (LayerProblem's formulas). A block of rows costs one product Δ_block · H, so callers process rows
// in fixed blocks (kRowBlock) inside their own parallel loop. The product is the packed float GEMM
// of src/kernels (H packed once; AVX-512 where the CPU has it) rather than Eigen's: Eigen
// parallelises and re-blocks its depth loop depending on the OpenMP state it is called from, which
// would make results depend on the thread count, while the packed kernel's summation order
// depends only on the depth.
#pragma once

#include <Eigen/Core>
#include <vector>

#include "qround/problem.hpp"

namespace qround::detail {

class RowBlockLoss {
 public:
  // Rows per block: large enough for an efficient GEMM, small enough to spread over threads.
  static constexpr Index kRowBlock = 48;  // 4 micro-tiles of the packed GEMM (12 rows)

  explicit RowBlockLoss(const LayerProblem& problem);

  Index cols() const { return cols_; }
  Index blocks(Index rows) const { return (rows + kRowBlock - 1) / kRowBlock; }
  // The constant Σ L0_i that row_loss leaves out (0 without an asymmetric target).
  double baseline() const { return baseline_; }

  // Rows [row0, row0 + delta.rows()): `grad` = 2(ΔH + R) and row_loss[k] = Δ_k H Δ_kᵀ + 2Δ_k·r_k.
  // Safe to call concurrently for different rows.
  void evaluate(Index row0, const MatrixF& delta, MatrixF& grad, double* row_loss) const;

 private:
  Index cols_;
  std::vector<float> packed_h_;  // H in the packed-panel layout of kernels::sgemm_pack_b
  MatrixF r_;
  bool has_target_;
  double baseline_ = 0.0;
};

}  // namespace qround::detail
