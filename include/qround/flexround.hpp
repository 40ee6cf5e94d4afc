// FlexRound (Lee et al., ICML 2023): rounding by learned element-wise division.
//
//   Ŵ = s1 · (clamp(⌊W ⊘ (s1 · S2 · s3)⌉ + z, q_min, q_max) − z)
//
// with s1 the grid scale per (row, group), S2 one factor per weight, s3 one per output row and z the
// grid's (fixed) zero point (0 on symmetric grids). All three are learned in log space with Adam
// (cosine learning-rate decay) and the straight-through estimator for ⌊·⌉; there is no rounding
// regulariser. The loss is the layer reconstruction loss in Hessian form (LayerProblem), so
// ∂L/∂Ŵ = 2(ΔH + R) exactly. S2 and s3 only decide the codes: the result is the codes plus the
// grid with the learned s1 (and the original zero points), which is all inference needs.
//
// Parametrisation: log s1 = log s1⁰ + θ1, log S2 = θ2, log s3 = θ3, with θ = 0 at the start, so
// iteration 0 is bit-for-bit round-to-nearest on the initial grid (exp(0) = 1 keeps s1⁰ exact).
// Adam is invariant to the constant shift, so this is the paper's "learn log s1 from log s1⁰".
// A per-tensor grid keeps s1 fixed (learning it per row would change the granularity).
//
// Defaults follow the paper / official code: 5 000 iterations, lr 3e-3 for 4-bit weights (the
// paper uses 2.5e-3 at 3 bits; pass it explicitly). Beyond the paper, each row keeps the best
// iterate it met on the calibration loss (`keep_best`) and falls back to round-to-nearest if the
// result were worse in double precision, so the answer is never worse than RTN from the same grid.
#pragma once

#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround {

struct FlexRoundOptions {
  int iterations = 5000;
  double lr = 3e-3;           // 2.5e-3 is the paper's choice at 3 bits
  double final_lr_fraction = 0.0;  // cosine decay to lr · this at the last iteration
  bool learn_s1 = true;       // false: only S2 and s3 move (s1 stays the initial grid scale)
  bool keep_best = true;      // per row, return the best iterate seen (else the last one)
  int threads = 0;            // 0: OpenMP's default; results do not depend on it

  void validate() const;  // throws InvalidArgument naming the bad field
};

// Grid from the spec's scale search, then FlexRound on it.
QuantizedLayer flexround(const LayerProblem& problem, const GridSpec& spec,
                         const FlexRoundOptions& options = {}, const ProgressFn& progress = {});
// FlexRound starting from a given grid (its scales are s1⁰, its zero points stay fixed).
QuantizedLayer flexround(const LayerProblem& problem, const Grid& grid,
                         const FlexRoundOptions& options = {}, const ProgressFn& progress = {});

// The learned parameters as offsets in log space (all zero = RTN on the initial grid).
struct FlexRoundState {
  MatrixF theta_s1;  // rows × groups: log s1 − log s1⁰
  MatrixF theta_s2;  // rows × cols:   log S2
  VectorF theta_s3;  // rows:          log s3

  static FlexRoundState zeros(const Grid& grid);
};

// One evaluation of the training objective at `state`: the codes and Ŵ of the hard forward pass,
// the loss ‖X Wᵀ − X̃ Ŵᵀ‖² (Hessian form, float GEMM, double accumulation) and its
// straight-through gradient with respect to every θ (exposed for the finite-difference tests).
struct FlexRoundEvaluation {
  MatrixI8 codes;
  MatrixF w_hat;
  MatrixF scales;  // s1 per (row, group)
  double loss = 0.0;
  FlexRoundState gradient;
};
FlexRoundEvaluation flexround_evaluate(const LayerProblem& problem, const Grid& grid,
                                       const FlexRoundState& state, int threads = 0);

}  // namespace qround
