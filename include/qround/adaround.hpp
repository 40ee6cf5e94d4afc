// AdaRound (Nagel et al. 2020), with AIMET's defaults: learn, per weight, whether to round down or
// up on a frozen grid, by minimising the layer's output error plus a regulariser that drives the
// soft rounding variable h(α) to 0 or 1.
//
//   h(α) = clamp(σ(α)(ζ − γ) + γ, 0, 1)
//   ŵ    = s·(clamp(⌊w/s⌋ + z + h(α), q_min, q_max) − z)
//   loss = L_rec(Ŵ)/N + λ Σ (1 − |2h − 1|^β)      (no regulariser during the warm start)
//
// L_rec/N is the reconstruction error per calibration token (AIMET's mean over the batch of the
// squared output error), so λ means what it means in the reference. Final code ⌊w/s⌋ + z + [α ≥ 0],
// clamped to the grid.
//
// Two ways to evaluate L_rec:
//  - Hessian mode: the exact full-batch gradient 2(Ŵ − W)H/N (+ the asymmetric-target term), cost
//    O(out·in²) per iteration whatever the token count;
//  - minibatch mode: random batches of retained calibration rows as the reference does (needs
//    LayerProblemOptions::retain_activations), O(batch·out·in) per iteration; required for ReLU.
#pragma once

#include <cstdint>
#include <string>

#include "qround/grid.hpp"
#include "qround/problem.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround {

enum class AdaRoundMode {
  kAuto,       // Hessian, unless ReLU is asked for or retained activations make batches cheaper
  kHessian,    // exact full-batch gradient from H = XᵀX
  kMinibatch,  // batches of retained calibration rows (the reference algorithm)
};

enum class BetaSchedule { kCosine, kLinear };

const char* to_string(AdaRoundMode m);
AdaRoundMode parse_adaround_mode(const std::string& name);  // "auto" | "hessian" | "minibatch"
const char* to_string(BetaSchedule s);
BetaSchedule parse_beta_schedule(const std::string& name);  // "cosine" | "linear"

struct AdaRoundOptions {
  int iterations = 10000;
  // Adam on α.
  double lr = 1e-3;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  // Rounding regulariser λ Σ (1 − |2h − 1|^β), off for the first warm_start fraction of iterations,
  // then β annealed from beta_start to beta_end.
  double lambda = 0.01;
  double warm_start = 0.2;
  double beta_start = 20.0;
  double beta_end = 2.0;
  BetaSchedule beta_schedule = BetaSchedule::kCosine;  // AIMET; BRECQ anneals linearly
  // Rectified sigmoid stretch.
  double zeta = 1.1;
  double gamma = -0.1;
  // Minibatch mode: calibration rows per step (all rows when >= the token count).
  int batch = 32;
  std::uint64_t seed = 0;
  AdaRoundMode mode = AdaRoundMode::kAuto;
  // Minibatch mode only: ReLU on both the float and the quantized outputs before the loss.
  bool relu = false;
  // Record the reconstruction loss every this many iterations (0: only at the start and the end).
  // Hessian mode records the exact loss of the soft weights; minibatch mode the batch estimate
  // scaled to the whole calibration set.
  int loss_interval = 100;
  int threads = 0;  // 0: OpenMP's default
  // Each output row keeps RTN's codes when the learned row is not better on the layer loss (the
  // loss splits over rows), so the result is never worse than RTN on the same grid even after a
  // short run. Not applied with `relu`, whose objective is another loss.
  bool rtn_guard = true;

  void validate() const;  // throws InvalidArgument naming the bad field
};

// Grid from the spec's scale search (frozen before optimisation), then AdaRound on it.
QuantizedLayer adaround(const LayerProblem& problem, const GridSpec& spec,
                        const AdaRoundOptions& options = {}, const ProgressFn& progress = {});
// AdaRound on a given grid (uniform grids only: a NUPES exponent is rejected).
QuantizedLayer adaround(const LayerProblem& problem, const Grid& grid,
                        const AdaRoundOptions& options = {}, const ProgressFn& progress = {});

// The result with the final soft rounding h(α) (out × in) beside the codes, for diagnostics: a
// converged run leaves every h at 0 or 1.
struct AdaRoundResult {
  QuantizedLayer layer;
  MatrixF h;
};
AdaRoundResult adaround_detailed(const LayerProblem& problem, const Grid& grid,
                                 const AdaRoundOptions& options = {},
                                 const ProgressFn& progress = {});

// The objective AdaRound minimises at `iteration` (of options.iterations; the regulariser is off
// during the warm start) for the variables `alpha` (out × in), evaluated by the same code as the
// optimisation: Hessian mode exactly, minibatch mode on every retained row (a full batch). Returns
// L_rec/N + λ·regulariser and writes ∂/∂α into `gradient` when given. For tests and diagnostics.
double adaround_objective(const LayerProblem& problem, const Grid& grid,
                          const AdaRoundOptions& options, const MatrixFRef& alpha, int iteration,
                          MatrixF* gradient = nullptr);

// The mode `options.mode` resolves to for this problem (kAuto made concrete).
AdaRoundMode resolve_adaround_mode(const LayerProblem& problem, const AdaRoundOptions& options);

}  // namespace qround
