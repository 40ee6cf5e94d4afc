#include "qround/flexround.hpp"

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

void FlexRoundOptions::validate() const {
  if (iterations < 0)
    throw InvalidArgument(fmt::format("flexround: iterations = {} must be >= 0", iterations));
  if (!(lr > 0.0) || !std::isfinite(lr))
    throw InvalidArgument(fmt::format("flexround: lr = {} must be a positive finite number", lr));
  if (!(final_lr_fraction >= 0.0 && final_lr_fraction <= 1.0))
    throw InvalidArgument(
        fmt::format("flexround: final_lr_fraction = {} must be in [0, 1]", final_lr_fraction));
  if (threads < 0)
    throw InvalidArgument(fmt::format("flexround: threads = {} must be >= 0", threads));
}

FlexRoundState FlexRoundState::zeros(const Grid& grid) {
  FlexRoundState s;
  s.theta_s1 = MatrixF::Zero(grid.rows, grid.groups());
  s.theta_s2 = MatrixF::Zero(grid.rows, grid.cols);
  s.theta_s3 = VectorF::Zero(grid.rows);
  return s;
}

namespace {

// Parameters of one row laid out flat for Adam: [θ1 (groups) | θ2 (cols) | θ3].
struct RowLayout {
  Index groups, cols;
  Index size() const { return groups + cols + 1; }
  Index s2() const { return groups; }
  Index s3() const { return groups + cols; }
};

// Forward and backward of FlexRound for blocks of rows. Parameters live in `params`
// (rows × layout.size(), row-major), so a row's θ are contiguous for its Adam.
class FlexRoundModel {
 public:
  FlexRoundModel(const LayerProblem& problem, const Grid& grid, const FlexRoundOptions& options)
      : problem_(problem), grid_(grid), options_(options), loss_(problem),
        layout_{grid.groups(), grid.cols},
        learn_s1_(options.learn_s1 && grid.granularity != Granularity::kPerTensor),
        offsets_(grid.has_offsets()),
        params_(MatrixF::Zero(grid.rows, layout_.size())) {}

  const RowLayout& layout() const { return layout_; }
  MatrixF& params() { return params_; }
  const detail::RowBlockLoss& loss() const { return loss_; }

  // Output of one block: codes, Ŵ, s1 and the per-row loss (without the constant baseline).
  struct Block : detail::RowBlockBase {
    MatrixF s1, x;  // s1 per (row, group); W ⊘ (s1·S2·s3) per weight
  };

  // Hard forward pass for rows [row0, row0 + n) and its loss/gradient in Ŵ.
  void forward(Index row0, Index n, Block& b) const {
    const Index cols = grid_.cols, groups = grid_.groups();
    b.reset(row0, n, cols);
    b.x.resize(n, cols);
    b.s1.resize(n, groups);
    const float lo = static_cast<float>(grid_.qmin()), hi = static_cast<float>(grid_.qmax());
    const MatrixF& w = problem_.weights();
    for (Index k = 0; k < n; ++k) {
      const Index r = row0 + k;
      const float* theta = params_.data() + r * layout_.size();
      const float s3 = std::exp(theta[layout_.s3()]);
      for (Index g = 0; g < groups; ++g) b.s1(k, g) = grid_.scales(r, g) * std::exp(theta[g]);
      for (Index c = 0; c < cols; ++c) {
        const Index g = grid_.group_of(c);
        const float s1 = b.s1(k, g);
        const std::int32_t z = grid_.zeros(r, g);
        // A format grid's offset b stays fixed: Ŵ = s1·q + b, x = (W − b) ⊘ (s1·S2·s3).
        const float shifted = offsets_ ? w(r, c) - grid_.offsets(r, g) : w(r, c);
        const float x = shifted / (s1 * std::exp(theta[layout_.s2() + c]) * s3);
        const float q = std::clamp(std::round(x) + static_cast<float>(z), lo, hi);
        const std::int32_t code = static_cast<std::int32_t>(q);
        b.x(k, c) = x;
        b.codes(k, c) = static_cast<std::int8_t>(code);
        b.w_hat(k, c) = s1 * static_cast<float>(code - z);
        if (offsets_) b.w_hat(k, c) += grid_.offsets(r, g);
        b.delta(k, c) = b.w_hat(k, c) - w(r, c);
      }
    }
    loss_.evaluate(row0, b.delta, b.grad_w, b.row_loss.data());
  }

  // Straight-through gradient of the block's loss in θ, row k into grad[0..layout.size()).
  void backward(const Block& b, Index k, float* grad) const {
    const Index r = b.row0 + k, cols = grid_.cols;
    const float lo = static_cast<float>(grid_.qmin()), hi = static_cast<float>(grid_.qmax());
    std::fill(grad, grad + layout_.size(), 0.0f);
    double g3 = 0.0;
    std::vector<double> g1(static_cast<size_t>(layout_.groups), 0.0);
    for (Index c = 0; c < cols; ++c) {
      const Index g = grid_.group_of(c);
      const float gw = b.grad_w(k, c);
      const float x = b.x(k, c);
      const float t = std::round(x) + static_cast<float>(grid_.zeros(r, g));
      // ∂Ŵ/∂θ2 = ∂Ŵ/∂θ3 = −s1·x inside the clamp range (STE through ⌊·⌉), 0 outside.
      const float e = (t >= lo && t <= hi) ? -gw * b.s1(k, g) * x : 0.0f;
      grad[layout_.s2() + c] = e;
      g3 += e;
      // ∂Ŵ/∂θ1 = Ŵ − b (direct) − s1·x (through the division).
      const float direct = offsets_ ? b.w_hat(k, c) - grid_.offsets(r, g) : b.w_hat(k, c);
      g1[static_cast<size_t>(g)] += static_cast<double>(gw) * direct + e;
    }
    grad[layout_.s3()] = static_cast<float>(g3);
    if (learn_s1_)
      for (Index g = 0; g < layout_.groups; ++g) grad[g] = static_cast<float>(g1[size_t(g)]);
  }

  // Training state: Adam per row, and each row's best codes and s1.
  void start_training() {
    adam_.assign(static_cast<size_t>(grid_.rows),
                 detail::Adam(static_cast<size_t>(layout_.size()), {options_.lr}));
    best_codes_.resize(grid_.rows, grid_.cols);
    best_scales_.resize(grid_.rows, grid_.groups());
  }
  void keep(const Block& b, Index k) {
    best_codes_.row(b.row0 + k) = b.codes.row(k);
    best_scales_.row(b.row0 + k) = b.s1.row(k);
  }
  void step(const Block& b, Index k, int it) {
    std::vector<float> grad(static_cast<size_t>(layout_.size()));
    backward(b, k, grad.data());
    const double lr = detail::cosine_lr(options_.lr, it, options_.iterations,
                                        options_.final_lr_fraction);
    const Index r = b.row0 + k;
    adam_[static_cast<size_t>(r)].step(params_.data() + r * layout_.size(), grad.data(), lr);
  }
  const MatrixI8& best_codes() const { return best_codes_; }
  const MatrixF& best_scales() const { return best_scales_; }

 private:
  const LayerProblem& problem_;
  const Grid& grid_;
  FlexRoundOptions options_;
  detail::RowBlockLoss loss_;
  RowLayout layout_;
  bool learn_s1_;
  bool offsets_;
  MatrixF params_;
  std::vector<detail::Adam> adam_;
  MatrixI8 best_codes_;
  MatrixF best_scales_;
};

void check_inputs(const LayerProblem& problem, const Grid& grid) {
  problem.require_calibration();
  grid.validate(problem.rows(), problem.cols());
  if (!grid.is_uniform())
    throw InvalidArgument("flexround needs a uniform grid (this one has NUPES exponents)");
  if (grid.has_level_table())
    throw InvalidArgument(fmt::format(
        "flexround cannot round onto format {}: it learns Ŵ = s1·⌊W ⊘ (s1·S2·s3)⌉ on a uniform "
        "integer lattice, but {} levels are d·T[q] with a non-uniform table T; use nearest or "
        "gptq",
        to_string(*grid.format), to_string(*grid.format)));
}

}  // namespace

FlexRoundEvaluation flexround_evaluate(const LayerProblem& problem, const Grid& grid,
                                       const FlexRoundState& state, int threads) {
  check_inputs(problem, grid);
  if (state.theta_s1.rows() != grid.rows || state.theta_s1.cols() != grid.groups() ||
      state.theta_s2.rows() != grid.rows || state.theta_s2.cols() != grid.cols ||
      state.theta_s3.size() != grid.rows)
    throw InvalidArgument(fmt::format(
        "flexround state shapes θ1 {}×{}, θ2 {}×{}, θ3 {} do not match the grid ({}×{}, {} groups)",
        state.theta_s1.rows(), state.theta_s1.cols(), state.theta_s2.rows(),
        state.theta_s2.cols(), state.theta_s3.size(), grid.rows, grid.cols, grid.groups()));
  FlexRoundModel model(problem, grid, FlexRoundOptions{});
  const RowLayout& lay = model.layout();
  for (Index r = 0; r < grid.rows; ++r) {
    model.params().row(r).head(lay.groups) = state.theta_s1.row(r);
    model.params().row(r).segment(lay.s2(), lay.cols) = state.theta_s2.row(r);
    model.params()(r, lay.s3()) = state.theta_s3[r];
  }
  FlexRoundEvaluation out;
  out.codes.resize(grid.rows, grid.cols);
  out.w_hat.resize(grid.rows, grid.cols);
  out.scales.resize(grid.rows, grid.groups());
  out.gradient = FlexRoundState::zeros(grid);
  out.loss = detail::evaluate_row_blocks(
      model, model.loss(), grid.rows, grid.cols, threads,
      [&](const FlexRoundModel::Block& b, Index k) {
        const Index r = b.row0 + k;
        std::vector<float> grad(static_cast<size_t>(lay.size()));
        model.backward(b, k, grad.data());
        const Eigen::Map<const Eigen::RowVectorXf> g(grad.data(), lay.size());
        out.gradient.theta_s1.row(r) = g.head(lay.groups);
        out.gradient.theta_s2.row(r) = g.segment(lay.s2(), lay.cols);
        out.gradient.theta_s3[r] = g[lay.s3()];
        out.codes.row(r) = b.codes.row(k);
        out.w_hat.row(r) = b.w_hat.row(k);
        out.scales.row(r) = b.s1.row(k);
      });
  return out;
}

QuantizedLayer flexround(const LayerProblem& problem, const Grid& grid,
                         const FlexRoundOptions& options, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  options.validate();
  check_inputs(problem, grid);
  const Index rows = grid.rows, cols = grid.cols;
  FlexRoundModel model(problem, grid, options);
  model.start_training();
  detail::TrainingLog log("flexround", options.iterations, progress);
  detail::train_row_blocks(model, model.loss(), rows, cols, options.iterations,
                           options.keep_best, options.threads, log, "flexround");

  QuantizedLayer out;
  out.codes = model.best_codes();
  if (grid.format) {
    // The learned s1 back onto what the format can store; the guard below then keeps, per row,
    // the best of the learned codes on that grid and RTN on it or on the starting grid.
    out.grid = project_format_scales(grid, model.best_scales());
    out.report.notes.push_back(fmt::format(
        "learned scales projected onto the {} lattice (stored parameters re-quantized)",
        to_string(*grid.format)));
  } else {
    out.grid = grid;
    out.grid.scales = model.best_scales();
  }
  detail::finish_learned_layer(out, problem, grid, "flexround", options.iterations, log);
  if (grid.granularity == Granularity::kPerTensor && options.learn_s1)
    out.report.notes.push_back("per-tensor grid: s1 kept fixed (only S2 and s3 were learned)");
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

QuantizedLayer flexround(const LayerProblem& problem, const GridSpec& spec,
                         const FlexRoundOptions& options, const ProgressFn& progress) {
  options.validate();
  problem.require_calibration();
  QuantizedLayer out = flexround(problem, make_grid(problem, spec), options, progress);
  out.report.scale_search = to_string(spec.search);
  return out;
}

}  // namespace qround
