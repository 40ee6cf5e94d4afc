// NUPES (Yvinec et al., "NUPES: Non-Uniform Post-Training Quantization via Power Exponent
// Search"): a symmetric power-function grid
//
//   q = clamp(⌊sign(w)|w|^a / s⌉),   ŵ = sign(q)·|s·q|^(1/a)        (a = 1: uniform)
//
// carried by Grid::exponent (one a per row), so dequantize / pack / check see it.
//
// Two steps:
//  1. Data-free (PowerQuant): choose a by a 1-D search minimising the weight reconstruction error
//     (the spec's search metric in the weight domain: squared error for min-max, Σ|Δw|^p for mse,
//     Σ H_jj Δw² for hessian), the scale being re-searched for every candidate a (make_grid of the
//     spec on the transformed weights sign(w)|w|^a). One a per layer, or per row (option).
//  2. Data-driven: learn a, the scales and latent real-valued codes c (q = clamp(⌊c⌉)) that may
//     move to any level of the grid, minimising the layer reconstruction loss (Hessian form) with
//     Adam and cosine decay. Forward is always the exact grid (what inference computes).
//
// Gradients (G = ∂L/∂ŵ = 2(ΔH + R), v = s·q, m = 1 inside the code range):
//   ∂ŵ/∂c      = m · (s/a) · (|v| + ε·s)^(1/a − 1)    straight-through, derivative of the guarded
//                                                      g_ε(v) = sign(v)((|v|+εs)^(1/a) − (εs)^(1/a))
//   ∂ŵ/∂log a  = −ŵ · ln|v| / a                       (0 for q = 0; exact at fixed codes)
//   ∂ŵ/∂log s  = ŵ / a                                (exact at fixed codes)
//
// Where the paper is ambiguous (no public code; only its abstract was at hand when this was
// written, so the details below follow the abstract and DESIGN.md §4) and what was chosen:
//  - Latent weights: the paper learns "new quantized weights over the entire quantized space" but
//    does not pin the domain. Here they are real-valued codes in the power domain (units of one
//    grid step), initialised at sign(w)|w|^a / s so iteration 0 is RTN on the power grid, and
//    projected to [q_min − ½, q_max + ½] after every step so clamped weights can come back.
//  - Straight-through derivative: the raw power |v|^(1/a−1) is infinite (a > 1) or zero (a < 1)
//    at code 0; ε (default ½ grid step, `eps`) inside the power keeps it finite and nonzero, so
//    zero weights can still move. The a and s gradients are exact derivatives at fixed codes.
//  - Exponent parametrisation: a = a⁰·exp(θ) (log space, "a through log"), clipped to
//    [0.1, 4]; its gradient is taken on the row loss normalised by the row's initial loss and
//    clipped to ±`exponent_clip` before Adam (the clipping rule is not specified anywhere).
//  - Scales: the paper is unclear whether s is learned; it is here (log space, same lr as a,
//    kept within e^±7 of the start; `learn_scale = false` keeps the data-free scales, and so does
//    a per-tensor grid, whose single scale would otherwise split per row).
//  - Granularity of a: the data-free search can share one a per layer, but the learned step
//    refines a per row (rows stay independent and parallel; Grid stores a per row anyway).
//  - Schedule: 5 000 iterations (as FlexRound); lr 3e-3 for codes and 1e-2 for log a and log s,
//    chosen on the stories260K layers (1 000 iterations, 3 and 4 bits) among 1e-3..3e-2.
// Beyond the paper, each row keeps its best iterate on the calibration loss and falls back to RTN
// on the data-free grid if it ended worse, so the result is never worse than RTN from that grid.
#pragma once

#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround {

struct NupesOptions {
  // Data-free exponent search over [exponent_min, exponent_max] (a = 1 is always a candidate).
  bool per_row_exponent = false;
  float exponent_min = 0.2f;
  float exponent_max = 1.5f;
  int exponent_steps = 27;   // coarse candidates, then a 10-step refinement around the best
  float fixed_exponent = 0;  // > 0: skip the search and use this a

  // Data-driven step (iterations = 0: data-free grid + RTN only).
  int iterations = 5000;
  double lr = 3e-3;           // latent codes (units of one grid step)
  double exponent_lr = 1e-2;  // log a and log s
  bool learn_exponent = true;
  bool learn_scale = true;
  double eps = 0.5;            // ε of the straight-through derivative, in grid steps
  double exponent_clip = 1.0;  // clip on the normalised gradient of log a
  bool keep_best = true;       // per row, return the best iterate seen (else the last one)
  int threads = 0;             // 0: OpenMP's default; results do not depend on it

  void validate() const;  // throws InvalidArgument naming the bad field
};

// Data-free step only: the symmetric power grid (bits, granularity, scale search of `spec`) with
// the searched exponent(s). Requires spec.symmetric and, per row, a per-row or per-group grid.
Grid nupes_grid(const LayerProblem& problem, const GridSpec& spec, const NupesOptions& options);

// Both steps; the grid of the result carries the learned exponent per row.
QuantizedLayer nupes(const LayerProblem& problem, const GridSpec& spec,
                     const NupesOptions& options = {}, const ProgressFn& progress = {});
// The data-driven step from a given symmetric grid (a uniform grid starts at a = 1).
QuantizedLayer nupes(const LayerProblem& problem, const Grid& grid,
                     const NupesOptions& options = {}, const ProgressFn& progress = {});

// Learned parameters relative to a starting grid (scales s⁰, exponents a⁰).
struct NupesState {
  MatrixF latent;   // rows × cols: real-valued codes c, q = clamp(⌊c⌉)
  VectorF theta_a;  // rows: log a − log a⁰
  MatrixF theta_s;  // rows × groups: log s − log s⁰

  // c = sign(w)|w|^a⁰ / s⁰ (so q is RTN on the grid), θ = 0.
  static NupesState initial(const MatrixFRef& weights, const Grid& grid);
};

// One evaluation of the objective: exact forward on the grid, loss (Hessian form) and the
// gradients above for every parameter (raw, before normalisation and clipping).
struct NupesEvaluation {
  MatrixI8 codes;
  MatrixF w_hat;
  double loss = 0.0;
  NupesState gradient;
};
NupesEvaluation nupes_evaluate(const LayerProblem& problem, const Grid& grid,
                               const NupesState& state, double eps = 0.5, int threads = 0);

}  // namespace qround
