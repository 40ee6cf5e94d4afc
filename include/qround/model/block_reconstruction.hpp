// Block-wise reconstruction (BRECQ, Li et al. 2021, with AdaRound's rounding variables): after a
// per-layer method has rounded every linear layer, each transformer block's seven layers are
// rounded again jointly, minimising the error of the whole block's output, so that one layer's
// rounding error is compensated by the others'.
//
//   loss = (1/N) Σ_tokens ‖block(X̃; Ŵ_q, …, Ŵ_2) − Y‖²  +  λ Σ_all weights (1 − |2h − 1|^β)
//
// X̃: the block's input in the model whose earlier blocks are already final (sequential); Y: the
// float model's block output on the float model's input (the asymmetric target, block level), or
// the float block on X̃. Each weight keeps the grid (frozen: scales, offsets, every stored format
// parameter) of the per-layer result and moves between two neighbouring codes — the per-layer
// code and its neighbour toward the float weight — through AdaRound's rectified sigmoid h(α),
// initialised at the float weight's position between them. Adam on α with AdaRound's defaults
// (BRECQ's: λ = 0.01, β annealed 20 → 2 after a 20 % warm start). Every gradient comes from the
// hand-written block backward (model/llama_block.hpp).
//
// Keep-best: the block loss of the hard codes is measured on every calibration window for the
// per-layer codes and for the learned ones; then each layer in turn takes whichever of its two
// code sets lowers the block loss. So a block's final loss is never above the per-layer result's
// (the report says which layers kept their per-layer codes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qround/model/llama.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround::model {

struct BlockReconstructionOptions {
  // Adam steps per block. 700 steps of one window each: on stories260K (q4_0, q4_1) more steps
  // of fewer windows beat fewer steps of more at equal cost, and the whole model takes under a
  // minute on two cores (README).
  int iterations = 700;
  double lr = 1e-2;       // on α (AdaRound's 1e-3 is for 10× more steps)
  // Adam on the log of every group scale, on grids whose scales are free floats (not a storage
  // format's, which stay frozen); 0 freezes them too.
  double scale_lr = 1e-3;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  double lambda = 0.01;     // rounding regulariser weight (BRECQ)
  double warm_start = 0.2;  // fraction of iterations without the regulariser
  double beta_start = 20.0, beta_end = 2.0;
  double zeta = 1.1, gamma = -0.1;  // rectified sigmoid stretch
  int batch_windows = 1;            // calibration windows per step (all when ≥ their count)
  // true: the target is the float model's block output on the float model's input; false: the
  // float block on the quantized upstream's output.
  bool asymmetric_target = true;
  std::uint64_t seed = 0;
  int threads = 0;  // 0: OpenMP's default; results do not depend on it

  void validate() const;  // InvalidArgument naming the field and its range
};

struct BlockOutcome {
  int block = 0;
  double initial_loss = 0.0;                       // block loss (per token) of the per-layer codes
  double learned_loss = 0.0;                       // of the learned codes, before keep-best
  double final_loss = 0.0;                         // of what was kept (≤ initial_loss)
  std::vector<std::string> kept_per_layer;         // layers whose per-layer codes were kept
  std::vector<std::string> frozen;                 // layers that could not be trained (and why)
  std::vector<std::pair<int, double>> loss_curve;  // (iteration, soft loss of the batch)
  double seconds = 0.0;
  std::vector<std::string> notes;  // e.g. training stopped on a non-finite loss
};

struct BlockReconstruction {
  std::vector<BlockOutcome> blocks;
  double seconds = 0.0;
};

// Called when a layer's codes are final: the model must compute with `layer` from now on (the
// default sets the dequantized weights with set_linear).
using ReplaceLinearFn = std::function<void(int linear, const QuantizedLayer& layer)>;

// Reconstructs every block of `model` in order. `layers[i]` is linear i's per-layer result
// (LlamaModel::linear index; nullptr: the layer stays as the model has it, e.g. a float-typed
// tensor), updated in place; the model must already compute with them. `float_model` gives the
// targets. Calibration windows as for the sequential driver (each ≤ seq_len tokens).
// Grids with a level table (iq4_nl) or a NUPES exponent cannot move one uniform step: those
// layers stay frozen, as the outcome says. Progress per iteration; on cancellation (Cancelled) or
// an error the block in progress keeps its per-layer codes.
BlockReconstruction reconstruct_blocks(LlamaModel& model, const LlamaModel& float_model,
                                       const std::vector<std::vector<int>>& windows,
                                       const std::vector<QuantizedLayer*>& layers,
                                       const BlockReconstructionOptions& options = {},
                                       const ProgressFn& progress = {},
                                       const ReplaceLinearFn& replace = {});

// The block loss (1/N) Σ ‖block_l(x) − y‖² of block `l` computing with `weights` (one per
// BlockLinear) over the windows' inputs `x` and targets `y` (float, rows = tokens). For tests and
// diagnostics; the training measures its keep-best losses with it.
double block_loss(const LlamaModel& model, int l, const std::vector<MatrixF>& x,
                  const std::vector<MatrixF>& y,
                  const std::array<const MatrixF*, kLinearsPerBlock>& weights, int threads = 0);

}  // namespace qround::model
