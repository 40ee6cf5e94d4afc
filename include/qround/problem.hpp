// LayerProblem: one linear layer's weights plus what calibration taught about its inputs.
//
// The reconstruction loss of a candidate Ŵ is ‖X Wᵀ − X̃ Ŵᵀ‖²_F, where X̃ is what the quantized
// layer will see (the quantized upstream's output) and X what the float layer saw. Without an
// asymmetric target X̃ = X. Everything is kept in Hessian form, accumulated in double:
//   H = X̃ᵀX̃ (in × in),   C = X̃ᵀX,   H_xx = XᵀX      (C and H_xx only with a target)
// and with Δ = Ŵ − W, per output row i:
//   L_i = Δ_i H Δ_iᵀ + 2 Δ_i·r_i + L0_i,   r_i = w_i (H − C)ᵀ,   L0_i = ‖X̃ w_iᵀ − X w_iᵀ‖²
// (r = 0 and L0 = 0 without a target). Writing the loss in Δ avoids the cancellation of the
// expanded form when Ŵ ≈ W. The gradient is ∂L/∂Ŵ = 2(Δ H + R).
//
// Memory is O(in²) whatever the token count, unless activations are retained for minibatch methods.
#pragma once

#include <memory>
#include <mutex>

#include "qround/grid.hpp"
#include "qround/types.hpp"

namespace qround {

struct LayerProblemOptions {
  // Keep the calibration rows (X̃, and X with a target) for minibatch methods.
  bool retain_activations = false;
};

class LayerProblem {
 public:
  // `weights` is out × in (a row-major PyTorch/safetensors buffer maps directly). Copied.
  explicit LayerProblem(const MatrixFRef& weights, LayerProblemOptions options = {});

  // A problem whose statistics were gathered elsewhere: H = XᵀX (in × in, symmetric, PSD).
  static LayerProblem from_hessian(const MatrixFRef& weights, const MatrixDRef& hessian,
                                   Index tokens);

  // Adds a batch of inputs (tokens × in) as seen by both the float and the quantized layer.
  void add_batch(const MatrixFRef& x);
  // Adds a batch with an asymmetric target: `x_quantized` reaches the quantized layer, `x_float`
  // the float one (same shape). Once used, every later batch must give both.
  void add_batch(const MatrixFRef& x_quantized, const MatrixFRef& x_float);

  Index rows() const { return weights_.rows(); }
  Index cols() const { return weights_.cols(); }
  Index tokens() const { return tokens_; }
  bool has_target() const { return has_target_; }
  bool retains_activations() const { return options_.retain_activations; }

  const MatrixF& weights() const { return weights_; }
  const MatrixD& hessian() const;         // H = X̃ᵀX̃, full symmetric
  const MatrixD& cross() const;           // C = X̃ᵀX (equals H without a target)
  const MatrixD& target_hessian() const;  // H_xx = XᵀX (equals H without a target)
  // R = W (H − C)ᵀ (out × in): the linear term the target adds to the gradient (0 without one).
  const MatrixD& target_residual() const;
  // Retained calibration rows (tokens × in); throws unless retain_activations was set.
  const MatrixF& activations() const;
  const MatrixF& target_activations() const;  // X; equals activations() without a target

  double output_energy() const;                         // ‖X Wᵀ‖²_F
  double loss(const MatrixFRef& w_hat) const;           // ‖X Wᵀ − X̃ Ŵᵀ‖²_F
  double relative_loss(const MatrixFRef& w_hat) const;  // loss / output_energy
  VectorD row_losses(const MatrixFRef& w_hat) const;    // L_i per output row
  MatrixF gradient(const MatrixFRef& w_hat) const;      // ∂L/∂Ŵ = 2(ΔH + R)
  // Irreducible loss from the input mismatch alone (Ŵ = W); 0 without a target.
  double baseline_loss() const;

  VectorD hessian_diagonal() const { return hessian().diagonal(); }
  // The importance of Hessian-weighted scale search (ScaleSearch::kHessian): diag(H), unless one
  // was set, e.g. the per-column mean x² of a llama.cpp imatrix (io/imatrix.hpp). Only the grid's
  // scale search reads it; the methods' losses and Hessians still come from the calibration.
  // InvalidArgument unless `importance` has cols() finite entries >= 0.
  void set_scale_importance(const VectorD& importance);
  bool has_scale_importance() const { return scale_importance_.size() != 0; }
  VectorD scale_importance() const;

  // Throws InvalidArgument unless calibration data was added (or the Hessian given).
  void require_calibration() const;
  // Throws InvalidArgument unless `w_hat` is rows() × cols().
  void require_shape(const MatrixFRef& w_hat, const char* what) const;

 private:
  void append_rows(MatrixF& store, const MatrixFRef& x);
  void ensure_derived() const;  // R, L0, energy: computed once per calibration state

  LayerProblemOptions options_;
  MatrixF weights_;
  // H and H_xx are accumulated in their upper triangle only and mirrored lazily on first read
  // (hence mutable; mirroring happens under derived_mutex_): a batch then costs no O(in²) copy.
  mutable MatrixD h_, hxx_;
  MatrixD c_;  // c_, hxx_ stay empty without a target
  mutable bool mirrored_ = true;
  void ensure_symmetric() const;
  Index tokens_ = 0;
  bool has_target_ = false;
  VectorD scale_importance_;  // empty: diag(H)
  MatrixF x_retained_, x_target_retained_;
  // Lazily derived from the statistics (guarded: const methods may run concurrently).
  mutable std::shared_ptr<std::mutex> derived_mutex_ = std::make_shared<std::mutex>();
  mutable bool derived_valid_ = false;
  mutable MatrixD r_;
  mutable VectorD baseline_rows_;
  mutable double energy_ = 0.0;
};

// Grid for a problem's weights; Hessian-weighted search uses problem.scale_importance().
Grid make_grid(const LayerProblem& problem, const GridSpec& spec);

}  // namespace qround
