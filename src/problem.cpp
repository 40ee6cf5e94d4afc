#include "qround/problem.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qround/detail/dense.hpp"
#include "qround/memory_limit.hpp"
#include "qround/scale_search.hpp"

namespace qround {

namespace {

// The shape is checked before weights_ copies anything: copying a 2^62 × 0 matrix is an empty
// loop of 2^62 iterations.
// The in × in Hessian is the big allocation: its cost is checked against the memory limit
// before anything is allocated (a 1 × 30000 layer needs 7.2 GB).
const MatrixFRef& checked_weights(const MatrixFRef& weights) {
  if (weights.rows() == 0 || weights.cols() == 0)
    throw InvalidArgument(fmt::format("weights are {}×{}: expected a non-empty out × in matrix",
                                      weights.rows(), weights.cols()));
  const auto in = static_cast<std::uint64_t>(weights.cols());
  const std::uint64_t hessian = bytes_for(in, in, sizeof(double));
  const std::uint64_t copy =
      bytes_for(static_cast<std::uint64_t>(weights.rows()), in, sizeof(float));
  require_memory(
      hessian > UINT64_MAX - copy ? UINT64_MAX : hessian + copy,
      fmt::format("a {}×{} layer (its {}×{} Hessian in double and a copy of the weights)",
                  weights.rows(), weights.cols(), weights.cols(), weights.cols()));
  return weights;
}

// The methods compute with H in float in places (GPTQ's tiles, the float gradient), so statistics
// beyond the float range would turn into Inf there and give a result that lies. A PSD matrix's
// entries are bounded by its largest diagonal entry, so the diagonal is what is checked, with a
// margin for the sums formed from it.
constexpr double kMaxStatistic = static_cast<double>(std::numeric_limits<float>::max()) / 16;

// Throws NumericalError, before anything is accumulated, if adding x's column sums of squares to
// diag(h) (h empty: zero) would leave the range every method computes in.
void require_in_range(const MatrixD& h, const MatrixFRef& x, const char* what) {
  VectorD diag = h.size() == 0 ? VectorD::Zero(x.cols()) : VectorD(h.diagonal());
  VectorD amax = VectorD::Zero(x.cols());
  for (Index t = 0; t < x.rows(); ++t)
    for (Index j = 0; j < x.cols(); ++j) {
      const double v = x(t, j);
      diag[j] += v * v;
      amax[j] = std::max(amax[j], std::fabs(v));
    }
  for (Index j = 0; j < x.cols(); ++j)
    if (!(diag[j] <= kMaxStatistic))
      throw NumericalError(fmt::format(
          "{}: XᵀX overflows: its diagonal entry ({}, {}) would reach {:.3g} (the column's "
          "largest input is {:.3g}), beyond {:.3g}, the float range the rounding methods compute "
          "in; rescale the inputs",
          what, j, j, diag[j], amax[j], kMaxStatistic));
}

}  // namespace

LayerProblem::LayerProblem(const MatrixFRef& weights, LayerProblemOptions options)
    : options_(options), weights_(checked_weights(weights)) {
  require_finite(weights_, "weight matrix");
  h_ = MatrixD::Zero(cols(), cols());
}

LayerProblem LayerProblem::from_hessian(const MatrixFRef& weights, const MatrixDRef& hessian,
                                        Index tokens) {
  LayerProblem p(weights);
  if (hessian.rows() != p.cols() || hessian.cols() != p.cols())
    throw InvalidArgument(fmt::format("Hessian is {}×{}, expected {}×{} (in × in)", hessian.rows(),
                                      hessian.cols(), p.cols(), p.cols()));
  if (tokens <= 0) throw InvalidArgument(fmt::format("token count {} must be positive", tokens));
  for (Index i = 0; i < hessian.rows(); ++i)
    for (Index j = 0; j < hessian.cols(); ++j) {
      if (!std::isfinite(hessian(i, j)))
        throw InvalidArgument(fmt::format("Hessian has a non-finite value at ({}, {})", i, j));
      const double tol = 1e-9 * (std::fabs(hessian(i, j)) + std::fabs(hessian(j, i))) + 1e-300;
      if (std::fabs(hessian(i, j) - hessian(j, i)) > tol)
        throw InvalidArgument(fmt::format("Hessian is not symmetric at ({}, {}): {} vs {}", i, j,
                                          hessian(i, j), hessian(j, i)));
    }
  for (Index i = 0; i < hessian.rows(); ++i)
    if (hessian(i, i) < 0.0)
      throw InvalidArgument(
          fmt::format("Hessian diagonal ({}, {}) = {} is negative: XᵀX is "
                      "positive semi-definite",
                      i, i, hessian(i, i)));
  for (Index i = 0; i < hessian.rows(); ++i)
    if (!(hessian(i, i) <= kMaxStatistic))
      throw NumericalError(
          fmt::format("Hessian diagonal ({}, {}) = {:.3g} is beyond {:.3g}, the float range the "
                      "rounding methods compute in; rescale it",
                      i, i, hessian(i, i), kMaxStatistic));
  p.h_ = hessian;
  p.tokens_ = tokens;
  return p;
}

void LayerProblem::append_rows(MatrixF& store, const MatrixFRef& x) {
  const Index old = store.rows();
  store.conservativeResize(old + x.rows(), cols());
  store.bottomRows(x.rows()) = x;
}

void LayerProblem::add_batch(const MatrixFRef& x) {
  if (has_target_)
    throw InvalidArgument(
        "this problem has an asymmetric target: add batches as "
        "(x_quantized, x_float) pairs");
  if (x.cols() != cols())
    throw InvalidArgument(fmt::format("calibration batch is {}×{}, expected tokens × {} (in)",
                                      x.rows(), x.cols(), cols()));
  if (x.rows() == 0) return;
  require_finite(x, "calibration batch");
  require_in_range(h_, x, "calibration batch");
  const detail::DenseView xv = detail::view(x);
  detail::gemm_accumulate(xv.transposed(), xv, h_, /*upper_only=*/true);
  mirrored_ = false;
  tokens_ += x.rows();
  if (options_.retain_activations) append_rows(x_retained_, x);
  derived_valid_ = false;
}

void LayerProblem::add_batch(const MatrixFRef& x_quantized, const MatrixFRef& x_float) {
  if (x_quantized.cols() != cols() || x_float.cols() != cols() ||
      x_quantized.rows() != x_float.rows())
    throw InvalidArgument(fmt::format(
        "target batch shapes {}×{} (quantized) and {}×{} (float) must match, with {} inputs",
        x_quantized.rows(), x_quantized.cols(), x_float.rows(), x_float.cols(), cols()));
  if (!has_target_ && tokens_ > 0)
    throw InvalidArgument(
        "batches without a target were already added: an asymmetric target "
        "must be given from the first batch on");
  if (x_quantized.rows() == 0) return;
  require_finite(x_quantized, "calibration batch (quantized inputs)");
  require_finite(x_float, "calibration batch (float inputs)");
  require_in_range(h_, x_quantized, "calibration batch (quantized inputs)");
  require_in_range(has_target_ ? hxx_ : MatrixD(), x_float, "calibration batch (float inputs)");
  if (!has_target_) {
    // C and H_xx: two more in × in matrices beside H.
    const auto in = static_cast<std::uint64_t>(cols());
    const std::uint64_t one = bytes_for(in, in, sizeof(double));
    require_memory(one > UINT64_MAX / 3 ? UINT64_MAX : 3 * one,
                   fmt::format("an asymmetric target for a {}×{} layer (H, C and H_xx, each {}×{} "
                               "in double)",
                               rows(), cols(), cols(), cols()));
    has_target_ = true;
    c_ = MatrixD::Zero(cols(), cols());
    hxx_ = MatrixD::Zero(cols(), cols());
  }
  const detail::DenseView xq = detail::view(x_quantized), xf = detail::view(x_float);
  detail::gemm_accumulate(xq.transposed(), xq, h_, /*upper_only=*/true);
  detail::gemm_accumulate(xq.transposed(), xf, c_);
  detail::gemm_accumulate(xf.transposed(), xf, hxx_, /*upper_only=*/true);
  mirrored_ = false;
  tokens_ += x_quantized.rows();
  if (options_.retain_activations) {
    append_rows(x_retained_, x_quantized);
    append_rows(x_target_retained_, x_float);
  }
  derived_valid_ = false;
}

void LayerProblem::ensure_symmetric() const {
  std::lock_guard<std::mutex> lock(*derived_mutex_);
  if (mirrored_) return;
  detail::mirror_upper_to_lower(h_);
  if (has_target_) detail::mirror_upper_to_lower(hxx_);
  mirrored_ = true;
}

const MatrixD& LayerProblem::hessian() const {
  ensure_symmetric();
  return h_;
}
const MatrixD& LayerProblem::cross() const { return has_target_ ? c_ : hessian(); }
const MatrixD& LayerProblem::target_hessian() const {
  ensure_symmetric();
  return has_target_ ? hxx_ : h_;
}

const MatrixD& LayerProblem::target_residual() const {
  ensure_derived();
  return r_;
}

const MatrixF& LayerProblem::activations() const {
  if (!options_.retain_activations)
    throw InvalidArgument(
        "activations were not retained: set "
        "LayerProblemOptions::retain_activations before adding batches");
  return x_retained_;
}

const MatrixF& LayerProblem::target_activations() const {
  activations();
  return has_target_ ? x_target_retained_ : x_retained_;
}

void LayerProblem::require_calibration() const {
  if (tokens_ == 0)
    throw InvalidArgument(
        "empty calibration: add at least one batch of inputs (tokens × in) "
        "before evaluating or rounding");
}

void LayerProblem::require_shape(const MatrixFRef& w_hat, const char* what) const {
  if (w_hat.rows() != rows() || w_hat.cols() != cols())
    throw InvalidArgument(fmt::format("{} is {}×{}, expected {}×{} (out × in)", what, w_hat.rows(),
                                      w_hat.cols(), rows(), cols()));
}

void LayerProblem::ensure_derived() const {
  require_calibration();
  ensure_symmetric();
  std::lock_guard<std::mutex> lock(*derived_mutex_);
  if (derived_valid_) return;
  const MatrixD w = weights_.cast<double>();
  const detail::DenseView wv = detail::view(weights_);
  const MatrixD wh = detail::multiply(wv, detail::view(h_));
  if (has_target_) {
    const MatrixD wct = detail::multiply(wv, detail::view(c_).transposed());
    const MatrixD whxx = detail::multiply(wv, detail::view(hxx_));
    r_ = wh - wct;
    baseline_rows_ =
        (w.cwiseProduct(whxx) - 2.0 * w.cwiseProduct(wct) + w.cwiseProduct(wh)).rowwise().sum();
    energy_ = w.cwiseProduct(whxx).sum();
  } else {
    r_ = MatrixD::Zero(rows(), cols());
    baseline_rows_ = VectorD::Zero(rows());
    energy_ = w.cwiseProduct(wh).sum();
  }
  derived_valid_ = true;
}

double LayerProblem::output_energy() const {
  ensure_derived();
  return energy_;
}

double LayerProblem::baseline_loss() const {
  ensure_derived();
  return baseline_rows_.sum();
}

VectorD LayerProblem::row_losses(const MatrixFRef& w_hat) const {
  require_shape(w_hat, "candidate weights");
  ensure_derived();
  const MatrixD delta = w_hat.cast<double>() - weights_.cast<double>();
  // Δ_i H Δ_iᵀ for every row, without materialising ΔH.
  VectorD out = detail::rowwise_dot_of_product(detail::view(delta), detail::view(h_), delta);
  for (Index i = 0; i < rows(); ++i)
    out[i] += 2.0 * delta.row(i).dot(r_.row(i)) + baseline_rows_[i];
  return out;
}

double LayerProblem::loss(const MatrixFRef& w_hat) const {
  const VectorD per_row = row_losses(w_hat);
  double total = 0.0;
  for (Index i = 0; i < per_row.size(); ++i) total += per_row[i];  // fixed order
  return total;
}

double LayerProblem::relative_loss(const MatrixFRef& w_hat) const {
  const double l = loss(w_hat);
  const double e = output_energy();
  if (e > 0.0) return l / e;
  return l == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
}

MatrixF LayerProblem::gradient(const MatrixFRef& w_hat) const {
  require_shape(w_hat, "candidate weights");
  ensure_derived();
  const MatrixD delta = w_hat.cast<double>() - weights_.cast<double>();
  const MatrixD dh = detail::multiply(detail::view(delta), detail::view(h_));
  return (2.0 * (dh + r_)).cast<float>();  // one pass, no further double temporaries
}

void LayerProblem::set_scale_importance(const VectorD& importance) {
  if (importance.size() != cols())
    throw InvalidArgument(fmt::format("scale importance has {} entries: expected {} (the inputs)",
                                      importance.size(), cols()));
  for (Index j = 0; j < importance.size(); ++j)
    if (!std::isfinite(importance[j]) || importance[j] < 0.0)
      throw InvalidArgument(fmt::format("scale importance[{}] is {}: expected finite and >= 0", j,
                                        importance[j]));
  scale_importance_ = importance;
}

VectorD LayerProblem::scale_importance() const {
  if (has_scale_importance()) return scale_importance_;
  require_calibration();
  return hessian_diagonal();
}

Grid make_grid(const LayerProblem& problem, const GridSpec& spec) {
  if (spec.search == ScaleSearch::kHessian)
    return make_grid(problem.weights(), spec, problem.scale_importance());
  return make_grid(problem.weights(), spec);
}

}  // namespace qround
