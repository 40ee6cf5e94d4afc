#include "qround/nupes.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "qround/detail/adam.hpp"
#include "qround/detail/row_block_trainer.hpp"
#include "qround/detail/rtn_guard.hpp"
#include "qround/detail/schedule.hpp"
#include "qround/nearest.hpp"
#include "qround/scale_search.hpp"

namespace qround {

namespace {

constexpr float kMinExponent = 0.1f, kMaxExponent = 4.0f;
constexpr float kMaxLogScaleShift = 7.0f;

// sign(w)|w|^a exactly as Grid::code computes it, so latent codes start on RTN.
float power_transform(float w, float a) {
  return a == 1.0f ? w : std::copysign(std::pow(std::fabs(w), a), w);
}

void require_positive(double v, const char* name) {
  if (!(v > 0.0) || !std::isfinite(v))
    throw InvalidArgument(fmt::format("nupes: {} = {} must be a positive finite number", name, v));
}

}  // namespace

void NupesOptions::validate() const {
  if (!(exponent_min >= kMinExponent && exponent_max <= kMaxExponent &&
        exponent_min < exponent_max))
    throw InvalidArgument(fmt::format(
        "nupes: exponent range [{}, {}] must satisfy {} <= min < max <= {}", exponent_min,
        exponent_max, kMinExponent, kMaxExponent));
  if (exponent_steps < 2 || exponent_steps > 1000)
    throw InvalidArgument(
        fmt::format("nupes: exponent_steps = {} is out of range: expected 2..1000", exponent_steps));
  if (!(fixed_exponent == 0.0f ||
        (fixed_exponent >= kMinExponent && fixed_exponent <= kMaxExponent)))
    throw InvalidArgument(fmt::format(
        "nupes: fixed_exponent = {} must be 0 (search) or in [{}, {}]", fixed_exponent,
        kMinExponent, kMaxExponent));
  if (iterations < 0)
    throw InvalidArgument(fmt::format("nupes: iterations = {} must be >= 0", iterations));
  require_positive(lr, "lr");
  require_positive(exponent_lr, "exponent_lr");
  require_positive(eps, "eps");
  require_positive(exponent_clip, "exponent_clip");
  if (threads < 0) throw InvalidArgument(fmt::format("nupes: threads = {} must be >= 0", threads));
}

// ---- data-free step ------------------------------------------------------------------------

namespace {

struct Candidate {
  Grid grid;
  VectorD row_error;
};

// The spec's scale search on sign(w)|w|^a (a per row), then the weight-domain error per row.
Candidate power_candidate(const MatrixF& w, const VectorF& a, const GridSpec& spec,
                          const VectorD* importance) {
  MatrixF t(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c) t(r, c) = power_transform(w(r, c), a[r]);
  Candidate out;
  out.grid = importance ? make_grid(t, spec, *importance) : make_grid(t, spec);
  out.grid.exponent = a;
  out.row_error.resize(w.rows());
  for (Index r = 0; r < w.rows(); ++r) {
    double e = 0.0;
    for (Index c = 0; c < w.cols(); ++c) {
      const double d = static_cast<double>(w(r, c)) -
                       out.grid.level(r, c, out.grid.code(r, c, w(r, c)));
      if (spec.search == ScaleSearch::kMse)
        e += std::pow(std::fabs(d), spec.mse_norm);
      else if (spec.search == ScaleSearch::kHessian)
        e += (*importance)[c] * d * d;
      else
        e += d * d;
    }
    out.row_error[r] = e;
  }
  return out;
}

// NUPES levels are sign(v)|v|^(1/a): no ggml block stores an exponent.
void refuse_format(const std::optional<GgmlType>& format) {
  if (format)
    throw InvalidArgument(fmt::format(
        "nupes cannot round onto format {}: its power-function levels sign(v)|v|^(1/a) are not "
        "among the levels a {} block can store; use nearest, gptq, adaround or flexround",
        to_string(*format), to_string(*format)));
}

void require_nupes_spec(const GridSpec& spec, bool per_row) {
  spec.validate();
  refuse_format(spec.format);
  if (!spec.symmetric)
    throw InvalidArgument("nupes grids are symmetric (the power function is odd): use a "
                          "symmetric grid spec (e.g. --symmetric)");
  if (per_row && spec.granularity == Granularity::kPerTensor)
    throw InvalidArgument("nupes: a per-row exponent needs a per-row or per-group grid, not "
                          "per-tensor");
}

}  // namespace

Grid nupes_grid(const LayerProblem& problem, const GridSpec& spec, const NupesOptions& options) {
  options.validate();
  require_nupes_spec(spec, options.per_row_exponent);
  const MatrixF& w = problem.weights();
  const Index rows = w.rows();
  VectorD importance;
  if (spec.search == ScaleSearch::kHessian) {
    problem.require_calibration();
    importance = problem.scale_importance();
  }
  const VectorD* imp = spec.search == ScaleSearch::kHessian ? &importance : nullptr;
  if (options.fixed_exponent > 0.0f)
    return power_candidate(w, VectorF::Constant(rows, options.fixed_exponent), spec, imp).grid;

  // Candidates: a coarse grid over the range (with a = 1), then 10 steps each side of the best.
  const double lo = options.exponent_min, hi = options.exponent_max;
  const double coarse = (hi - lo) / (options.exponent_steps - 1);
  std::vector<float> grid_a;
  for (int k = 0; k < options.exponent_steps; ++k)
    grid_a.push_back(static_cast<float>(lo + coarse * k));
  if (lo <= 1.0 && hi >= 1.0) grid_a.push_back(1.0f);

  VectorF best_a = VectorF::Constant(rows, 1.0f);
  VectorD best_err = VectorD::Constant(rows, std::numeric_limits<double>::infinity());
  double best_total = std::numeric_limits<double>::infinity();
  // Candidates are scored in parallel (each one's scale search then runs serially inside), and
  // compared in their listed order, so the choice does not depend on the thread count.
  auto consider = [&](const std::vector<VectorF>& candidates) {
    const Index n = static_cast<Index>(candidates.size());
    std::vector<VectorD> errors(candidates.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(detail::resolve_threads(options.threads))
    for (Index i = 0; i < n; ++i)
      errors[size_t(i)] = power_candidate(w, candidates[size_t(i)], spec, imp).row_error;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (options.per_row_exponent) {
        for (Index r = 0; r < rows; ++r)
          if (errors[i][r] < best_err[r]) {
            best_err[r] = errors[i][r];
            best_a[r] = candidates[i][r];
          }
      } else {
        double total = 0.0;
        for (Index r = 0; r < rows; ++r) total += errors[i][r];
        if (total < best_total) {
          best_total = total;
          best_a = candidates[i];
        }
      }
    }
  };
  std::vector<VectorF> candidates;
  for (float a : grid_a) candidates.push_back(VectorF::Constant(rows, a));
  consider(candidates);
  const VectorF centre = best_a;
  candidates.clear();
  for (int k = -10; k <= 10; ++k) {
    if (k == 0) continue;
    VectorF a(rows);
    for (Index r = 0; r < rows; ++r)
      a[r] = std::clamp(static_cast<float>(centre[r] + coarse * k / 10.0), kMinExponent,
                        kMaxExponent);
    candidates.push_back(a);
  }
  consider(candidates);
  return power_candidate(w, best_a, spec, imp).grid;
}

// ---- data-driven step ----------------------------------------------------------------------

NupesState NupesState::initial(const MatrixFRef& weights, const Grid& grid) {
  grid.validate(weights.rows(), weights.cols());
  NupesState s;
  s.latent.resize(grid.rows, grid.cols);
  const float lo = static_cast<float>(grid.qmin()) - 0.5f;
  const float hi = static_cast<float>(grid.qmax()) + 0.5f;
  for (Index r = 0; r < grid.rows; ++r)
    for (Index c = 0; c < grid.cols; ++c)
      s.latent(r, c) = std::clamp(
          power_transform(weights(r, c), grid.power(r)) / grid.scales(r, grid.group_of(c)), lo,
          hi);
  s.theta_a = VectorF::Zero(grid.rows);
  s.theta_s = MatrixF::Zero(grid.rows, grid.groups());
  return s;
}

namespace {

// Values that depend only on (row, group, code) — levels and their derivatives — computed once per
// code used in a group rather than once per weight (pow and log dominate otherwise).
template <class T>
class CodeMemo {
 public:
  CodeMemo(std::int32_t qmin, std::int32_t qmax)
      : qmin_(qmin), value_(static_cast<size_t>(qmax - qmin + 1)),
        stamp_(static_cast<size_t>(qmax - qmin + 1), 0) {}
  void reset() { ++generation_; }  // a new (row, group)
  template <class F>
  const T& get(std::int32_t q, F compute) {
    const size_t i = static_cast<size_t>(q - qmin_);
    if (stamp_[i] != generation_) {
      value_[i] = compute(q);
      stamp_[i] = generation_;
    }
    return value_[i];
  }

 private:
  std::int32_t qmin_;
  std::vector<T> value_;
  std::vector<long> stamp_;
  long generation_ = 1;
};

// Per-row parameters laid out flat: [latent codes (cols) | log-a offset | log-s offsets (groups)].
struct Layout {
  Index cols, groups;
  Index size() const { return cols + 1 + groups; }
  Index a() const { return cols; }
  Index s() const { return cols + 1; }
};

class NupesModel {
 public:
  NupesModel(const LayerProblem& problem, const Grid& grid, const NupesOptions& options)
      : problem_(problem), grid_(grid), options_(options), loss_(problem),
        layout_{grid.cols, grid.groups()}, params_(grid.rows, layout_.size()) {}

  const Layout& layout() const { return layout_; }
  MatrixF& params() { return params_; }
  const detail::RowBlockLoss& loss() const { return loss_; }

  void set_state(const NupesState& state) {
    params_.leftCols(layout_.cols) = state.latent;
    params_.col(layout_.a()) = state.theta_a;
    params_.rightCols(layout_.groups) = state.theta_s;
  }

  struct Block : detail::RowBlockBase {
    MatrixF s;  // scale per (row, group)
    VectorF a;  // exponent per row
  };

  // Exact forward on the current grid (the levels Grid::level computes) and ∂L/∂Ŵ.
  void forward(Index row0, Index n, Block& b) const {
    const Index cols = grid_.cols, groups = grid_.groups();
    b.reset(row0, n, cols);
    b.s.resize(n, groups);
    b.a.resize(n);
    const float lo = static_cast<float>(grid_.qmin()), hi = static_cast<float>(grid_.qmax());
    const MatrixF& w = problem_.weights();
    CodeMemo<float> levels(grid_.qmin(), grid_.qmax());
    for (Index k = 0; k < n; ++k) {
      const Index r = row0 + k;
      const float* theta = params_.data() + r * layout_.size();
      const float a = grid_.power(r) * std::exp(theta[layout_.a()]);
      b.a[k] = a;
      for (Index g = 0; g < groups; ++g)
        b.s(k, g) = grid_.scales(r, g) * std::exp(theta[layout_.s() + g]);
      for (Index c = 0; c < cols; ++c) {
        const Index g = grid_.group_of(c);
        if (c == g * grid_.group_size) levels.reset();
        const std::int32_t q = static_cast<std::int32_t>(std::clamp(std::round(theta[c]), lo, hi));
        const float level = levels.get(q, [&](std::int32_t code) {
          const float v = b.s(k, g) * static_cast<float>(code);  // as Grid::level computes it
          return a == 1.0f ? v : std::copysign(std::pow(std::fabs(v), 1.0f / a), v);
        });
        b.codes(k, c) = static_cast<std::int8_t>(q);
        b.w_hat(k, c) = level;
        b.delta(k, c) = level - w(r, c);
      }
    }
    loss_.evaluate(row0, b.delta, b.grad_w, b.row_loss.data());
  }

  // Gradient of row k in the flat layout (see nupes.hpp for the formulas).
  void backward(const Block& b, Index k, float* grad) const {
    const Index r = b.row0 + k, cols = grid_.cols;
    const float lo = static_cast<float>(grid_.qmin()), hi = static_cast<float>(grid_.qmax());
    const float* theta = params_.data() + r * layout_.size();
    const double a = b.a[k], inv_a = 1.0 / a, eps = options_.eps;
    double ga = 0.0;
    std::vector<double> gs(static_cast<size_t>(layout_.groups), 0.0);
    struct Slopes {
      double code, log_v;  // ∂ŵ/∂c (straight-through) and ln|v| (0 for code 0)
    };
    CodeMemo<Slopes> slopes(grid_.qmin(), grid_.qmax());
    for (Index c = 0; c < cols; ++c) {
      const Index g = grid_.group_of(c);
      if (c == g * grid_.group_size) slopes.reset();
      const double gw = b.grad_w(k, c), w_hat = b.w_hat(k, c), s = b.s(k, g);
      const Slopes& d = slopes.get(b.codes(k, c), [&](std::int32_t q) {
        const double v = std::fabs(s * q);
        return Slopes{s * inv_a * std::pow(v + eps * s, inv_a - 1.0), v > 0.0 ? std::log(v) : 0.0};
      });
      const float rounded = std::round(theta[c]);
      grad[c] = rounded >= lo && rounded <= hi ? static_cast<float>(gw * d.code) : 0.0f;
      ga -= gw * w_hat * d.log_v * inv_a;
      gs[static_cast<size_t>(g)] += gw * w_hat * inv_a;
    }
    grad[layout_.a()] = static_cast<float>(ga);
    for (Index g = 0; g < layout_.groups; ++g)
      grad[layout_.s() + g] = static_cast<float>(gs[static_cast<size_t>(g)]);
  }

  // ---- training ----
  void start_training() {
    const size_t rows = static_cast<size_t>(grid_.rows);
    adam_codes_.assign(rows, detail::Adam(static_cast<size_t>(layout_.cols), {options_.lr}));
    adam_grid_.assign(rows,
                      detail::Adam(static_cast<size_t>(1 + layout_.groups), {options_.exponent_lr}));
    norm_.assign(rows, 1.0);
    best_codes_.resize(grid_.rows, grid_.cols);
    best_scales_.resize(grid_.rows, grid_.groups());
    best_a_.resize(grid_.rows);
  }
  void keep(const Block& b, Index k) {
    const Index r = b.row0 + k;
    best_codes_.row(r) = b.codes.row(k);
    best_scales_.row(r) = b.s.row(k);
    best_a_[r] = b.a[k];
  }
  void step(const Block& b, Index k, int it) {
    const Index r = b.row0 + k;
    const size_t ru = static_cast<size_t>(r);
    // Normalise by the row's starting loss so the clip on log a means the same for every row.
    if (it == 0) norm_[ru] = std::max(std::fabs(b.row_loss[size_t(k)]), 1e-30);
    std::vector<float> grad(static_cast<size_t>(layout_.size()));
    backward(b, k, grad.data());
    const float clip = static_cast<float>(options_.exponent_clip);
    float& ga = grad[size_t(layout_.a())];
    ga = options_.learn_exponent ? std::clamp(static_cast<float>(ga / norm_[ru]), -clip, clip)
                                 : 0.0f;
    if (!options_.learn_scale || grid_.granularity == Granularity::kPerTensor)
      std::fill(grad.begin() + layout_.s(), grad.end(), 0.0f);
    float* theta = params_.data() + r * layout_.size();
    const double lr = detail::cosine_lr(options_.lr, it, options_.iterations);
    const double lr_grid = detail::cosine_lr(options_.exponent_lr, it, options_.iterations);
    adam_codes_[ru].step(theta, grad.data(), lr);
    adam_grid_[ru].step(theta + layout_.a(), grad.data() + layout_.a(), lr_grid);
    // Projections: codes within half a step of the range, a within [0.1, 4], s within e^±7 of
    // its start (a guard against a runaway scale; never reached on the real layers).
    const float lo = static_cast<float>(grid_.qmin()) - 0.5f;
    const float hi = static_cast<float>(grid_.qmax()) + 0.5f;
    for (Index c = 0; c < layout_.cols; ++c) theta[c] = std::clamp(theta[c], lo, hi);
    const float a0 = grid_.power(r);
    theta[layout_.a()] = std::clamp(theta[layout_.a()], std::log(kMinExponent / a0),
                                    std::log(kMaxExponent / a0));
    for (Index g = 0; g < layout_.groups; ++g)
      theta[layout_.s() + g] = std::clamp(theta[layout_.s() + g], -kMaxLogScaleShift,
                                          kMaxLogScaleShift);
  }
  const MatrixI8& best_codes() const { return best_codes_; }
  const MatrixF& best_scales() const { return best_scales_; }
  const VectorF& best_exponents() const { return best_a_; }

 private:
  const LayerProblem& problem_;
  const Grid& grid_;
  NupesOptions options_;
  detail::RowBlockLoss loss_;
  Layout layout_;
  MatrixF params_;
  std::vector<detail::Adam> adam_codes_, adam_grid_;
  std::vector<double> norm_;
  MatrixI8 best_codes_;
  MatrixF best_scales_;
  VectorF best_a_;
};

// A symmetric grid with an explicit exponent per row (1 for a uniform grid).
Grid power_grid_of(const LayerProblem& problem, const Grid& grid) {
  problem.require_calibration();
  refuse_format(grid.format);
  grid.validate(problem.rows(), problem.cols());
  if (!grid.symmetric)
    throw InvalidArgument("nupes needs a symmetric grid (the power function is odd)");
  Grid g = grid;
  if (g.exponent.size() == 0) g.exponent = VectorF::Ones(g.rows);
  return g;
}

}  // namespace

NupesEvaluation nupes_evaluate(const LayerProblem& problem, const Grid& grid,
                               const NupesState& state, double eps, int threads) {
  const Grid g = power_grid_of(problem, grid);
  if (state.latent.rows() != g.rows || state.latent.cols() != g.cols ||
      state.theta_a.size() != g.rows || state.theta_s.rows() != g.rows ||
      state.theta_s.cols() != g.groups())
    throw InvalidArgument(fmt::format(
        "nupes state shapes latent {}×{}, θa {}, θs {}×{} do not match the grid ({}×{}, {} "
        "groups)",
        state.latent.rows(), state.latent.cols(), state.theta_a.size(), state.theta_s.rows(),
        state.theta_s.cols(), g.rows, g.cols, g.groups()));
  NupesOptions options;
  options.eps = eps;
  options.threads = threads;
  options.validate();
  NupesModel model(problem, g, options);
  model.set_state(state);
  const Layout& lay = model.layout();
  NupesEvaluation out;
  out.codes.resize(g.rows, g.cols);
  out.w_hat.resize(g.rows, g.cols);
  out.gradient.latent.resize(g.rows, g.cols);
  out.gradient.theta_a.resize(g.rows);
  out.gradient.theta_s.resize(g.rows, g.groups());
  out.loss = detail::evaluate_row_blocks(
      model, model.loss(), g.rows, g.cols, threads, [&](const NupesModel::Block& b, Index k) {
        const Index r = b.row0 + k;
        std::vector<float> grad(static_cast<size_t>(lay.size()));
        model.backward(b, k, grad.data());
        const Eigen::Map<const Eigen::RowVectorXf> v(grad.data(), lay.size());
        out.gradient.latent.row(r) = v.head(lay.cols);
        out.gradient.theta_a[r] = v[lay.a()];
        out.gradient.theta_s.row(r) = v.tail(lay.groups);
        out.codes.row(r) = b.codes.row(k);
        out.w_hat.row(r) = b.w_hat.row(k);
      });
  return out;
}

QuantizedLayer nupes(const LayerProblem& problem, const Grid& grid, const NupesOptions& options,
                     const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  options.validate();
  const Grid g = power_grid_of(problem, grid);
  NupesModel model(problem, g, options);
  model.set_state(NupesState::initial(problem.weights(), g));
  model.start_training();
  detail::TrainingLog log("nupes", options.iterations, progress);
  detail::train_row_blocks(model, model.loss(), g.rows, g.cols, options.iterations,
                           options.keep_best, options.threads, log, "nupes");

  QuantizedLayer out;
  out.grid = g;
  out.grid.scales = model.best_scales();
  out.grid.exponent = model.best_exponents();
  out.codes = model.best_codes();
  detail::finish_learned_layer(out, problem, g, "nupes", options.iterations, log);
  if (g.granularity == Granularity::kPerTensor && options.learn_scale)
    out.report.notes.push_back("per-tensor grid: the scale was kept fixed (learning it per row "
                               "would change the granularity)");
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

QuantizedLayer nupes(const LayerProblem& problem, const GridSpec& spec,
                     const NupesOptions& options, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  options.validate();
  problem.require_calibration();
  const Grid grid = nupes_grid(problem, spec, options);
  QuantizedLayer out = nupes(problem, grid, options, progress);
  out.report.scale_search = to_string(spec.search);
  const VectorF& a = out.grid.exponent;
  out.report.notes.push_back(fmt::format("exponent a: data-free {:.3f}..{:.3f}, final {:.3f}..{:.3f}",
                                         grid.exponent.minCoeff(), grid.exponent.maxCoeff(),
                                         a.minCoeff(), a.maxCoeff()));
  out.report.notes.push_back(
      fmt::format("uniform RTN on the same spec (a = 1): {:.6g}",
                  problem.loss(fake_quant(problem.weights(), make_grid(problem, spec)))));
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace qround
