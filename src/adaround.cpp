#include "qround/detail/threads.hpp"
#include "qround/adaround.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/adaround_elementwise.hpp"
#include "kernels/sgemm_packed.hpp"
#include "qround/detail/adam.hpp"
#include "qround/detail/progress.hpp"
#include "qround/detail/rectified_sigmoid.hpp"
#include "qround/detail/rng.hpp"
#include "qround/detail/rtn_guard.hpp"
#include "qround/detail/schedule.hpp"
#include "qround/nearest.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {

const char* to_string(AdaRoundMode m) {
  switch (m) {
    case AdaRoundMode::kAuto: return "auto";
    case AdaRoundMode::kHessian: return "hessian";
    case AdaRoundMode::kMinibatch: return "minibatch";
  }
  return "?";
}

AdaRoundMode parse_adaround_mode(const std::string& name) {
  if (name == "auto") return AdaRoundMode::kAuto;
  if (name == "hessian") return AdaRoundMode::kHessian;
  if (name == "minibatch") return AdaRoundMode::kMinibatch;
  throw InvalidArgument(
      fmt::format("unknown AdaRound mode '{}': expected auto, hessian or minibatch", name));
}

const char* to_string(BetaSchedule s) { return s == BetaSchedule::kCosine ? "cosine" : "linear"; }

BetaSchedule parse_beta_schedule(const std::string& name) {
  if (name == "cosine") return BetaSchedule::kCosine;
  if (name == "linear") return BetaSchedule::kLinear;
  throw InvalidArgument(
      fmt::format("unknown β schedule '{}': expected cosine or linear", name));
}

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw InvalidArgument("AdaRound option " + what);
}

}  // namespace

void AdaRoundOptions::validate() const {
  require(iterations >= 0, fmt::format("iterations = {} must be >= 0", iterations));
  require(lr > 0.0 && std::isfinite(lr), fmt::format("lr = {} must be positive and finite", lr));
  require(adam_beta1 >= 0.0 && adam_beta1 < 1.0,
          fmt::format("adam_beta1 = {} must be in [0, 1)", adam_beta1));
  require(adam_beta2 >= 0.0 && adam_beta2 < 1.0,
          fmt::format("adam_beta2 = {} must be in [0, 1)", adam_beta2));
  require(adam_eps > 0.0 && std::isfinite(adam_eps),
          fmt::format("adam_eps = {} must be positive", adam_eps));
  require(lambda >= 0.0 && std::isfinite(lambda),
          fmt::format("lambda = {} must be finite and >= 0", lambda));
  require(warm_start >= 0.0 && warm_start <= 1.0,
          fmt::format("warm_start = {} must be in [0, 1]", warm_start));
  // β < 1 makes the regulariser's derivative infinite at h = 1/2.
  require(beta_start >= 1.0 && std::isfinite(beta_start),
          fmt::format("beta_start = {} must be finite and >= 1", beta_start));
  require(beta_end >= 1.0 && std::isfinite(beta_end),
          fmt::format("beta_end = {} must be finite and >= 1", beta_end));
  // h must be able to reach both 0 and 1 (or at least approach them): γ ≤ 0 < 1 ≤ ζ.
  require(gamma <= 0.0 && std::isfinite(gamma),
          fmt::format("gamma = {} must be finite and <= 0", gamma));
  require(zeta >= 1.0 && std::isfinite(zeta),
          fmt::format("zeta = {} must be finite and >= 1", zeta));
  require(batch >= 1, fmt::format("batch = {} must be >= 1", batch));
  require(loss_interval >= 0, fmt::format("loss_interval = {} must be >= 0", loss_interval));
  require(threads >= 0, fmt::format("threads = {} must be >= 0 (0: OpenMP's default)", threads));
}

namespace {

// Rows per unit of parallel work. Fixed (never derived from the thread count), so every row is
// computed by the same arithmetic whatever the number of threads.
constexpr Index kRowBlock = kernels::kSgemmMc;
// Auto mode prefers minibatches (when activations are retained) above this many inputs: a Hessian
// iteration costs 2·out·in² flops, a minibatch one 4·batch·out·in.
constexpr Index kAutoMinibatchInputs = 8192;

// Multiply-adds of one Hessian iteration below which the row blocks run on one thread.
constexpr Index kParallelWork = Index{1} << 22;

int thread_count(const AdaRoundOptions& options) { return detail::resolve_threads(options.threads); }

int this_thread() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

using Buffer = Eigen::Matrix<float, Eigen::Dynamic, 1>;  // 64-byte aligned (EIGEN_MAX_ALIGN_BYTES)

// Scratch for one row block, owned by one thread.
struct Workspace {
  Buffer soft;    // Hessian mode: Ŵ − W; minibatch mode: Ŵ
  Buffer chain;   // ∂Ŵ/∂α = s·[q inside the grid]·dh/dα
  Buffer h, dh;   // h(α) and dh/dα
  Buffer grad_w;  // ∂L_rec/∂Ŵ (before the 1/N or 2/B factor for Hessian mode: ΔH)
  Buffer out_q;   // minibatch: quantized outputs, block rows × batch
  Buffer grad;    // ∂loss/∂α
  Buffer gemm;    // packing space of the GEMM kernel

  void resize(Index block_elems, Index block_outputs) {
    soft.resize(block_elems);
    chain.resize(block_elems);
    h.resize(block_elems);
    dh.resize(block_elems);
    grad_w.resize(block_elems);
    grad.resize(block_elems);
    out_q.resize(std::max<Index>(block_outputs, 1));
    gemm.resize(static_cast<Index>(kernels::kSgemmWorkspace));
  }
};

// The calibration rows of one minibatch step, packed for the two products of minibatch mode.
struct Batch {
  std::vector<Index> rows;  // indices into the retained activations
  Buffer packed_xt;         // Xbᵀ (in × batch), packed: Ŵ_block · Xbᵀ = outputs
  Buffer packed_x;          // Xb (batch × in), packed: dL/dY_blockᵀ · Xb = ∂L/∂Ŵ_block
  Buffer gathered;          // Xb, batch × in row-major
};

// Everything AdaRound needs for one layer, and the evaluation of its objective per row block.
class Objective {
 public:
  Objective(const LayerProblem& problem, const Grid& grid, const AdaRoundOptions& options,
            AdaRoundMode mode)
      : problem_(problem), grid_(grid), options_(options), mode_(mode),
        sigmoid_{static_cast<float>(options.zeta), static_cast<float>(options.gamma)},
        rows_(problem.rows()), cols_(problem.cols()),
        tokens_(static_cast<double>(problem.tokens())) {
    base_.resize(rows_, cols_);
    const float lo = static_cast<float>(grid.qmin()), hi = static_cast<float>(grid.qmax());
    for (Index r = 0; r < rows_; ++r)
      for (Index c = 0; c < cols_; ++c) {
        const float fl = static_cast<float>(std::floor(scaled_weight(r, c)));
        const float z = grid.has_offsets() ? 0.0f : static_cast<float>(grid.zeros(r, grid.group_of(c)));
        // Far outside the grid the clamp decides; keep the value out there but representable.
        base_(r, c) = std::clamp(fl + z, lo - 2.0f, hi + 1.0f);
      }
    if (mode_ == AdaRoundMode::kHessian) {
      const MatrixF hf = problem.hessian().cast<float>();
      packed_h_.resize(static_cast<Index>(kernels::sgemm_packed_b_size(cols_, cols_)));
      kernels::sgemm_pack_b(cols_, cols_, hf.data(), cols_, 1, packed_h_.data());
      if (problem.has_target()) residual_ = problem.target_residual().cast<float>();
      baseline_ = problem.baseline_loss();
    } else {
      prepare_float_outputs();
    }
  }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index blocks() const { return (rows_ + kRowBlock - 1) / kRowBlock; }
  Index block_rows(Index b) const { return std::min(kRowBlock, rows_ - b * kRowBlock); }
  Index tokens() const { return problem_.tokens(); }
  double baseline() const { return baseline_; }

  // α so that the soft weight starts at the float weight: h(α) = t − ⌊t⌋ (t = scaled_weight).
  MatrixF initial_alpha() const {
    MatrixF alpha(rows_, cols_);
    for (Index r = 0; r < rows_; ++r)
      for (Index c = 0; c < cols_; ++c) {
        const double x = scaled_weight(r, c);
        alpha(r, c) = sigmoid_.inverse(static_cast<float>(x - std::floor(x)));
      }
    return alpha;
  }

  // w/s (an integer zero point is added after ⌊·⌋), or (w − b)/s — already in code units — on a
  // format grid with offsets; snapped to the nearest integer when within 1e-5 of it: the ends of a
  // min-max range sit on grid points up to rounding, and ⌊·⌋ one below would clamp them with no
  // gradient.
  double scaled_weight(Index r, Index c) const {
    const Index g = grid_.group_of(c);
    const double w = problem_.weights()(r, c);
    const double s = grid_.scales(r, g);
    const double x = grid_.has_offsets() ? (w - grid_.offsets(r, g)) / s : w / s;
    const double nearest = std::round(x);
    return std::fabs(x - nearest) < 1e-5 * std::max(1.0, std::fabs(x)) ? nearest : x;
  }

  // Loss at `iteration` of the row block `b` for its variables `alpha` (block rows × in,
  // contiguous); writes ∂/∂α into ws.grad. Returns the block's reconstruction loss L_rec (sum over
  // tokens: exact in Hessian mode, batch estimate scaled to all tokens in minibatch mode) when
  // `want_loss`, and adds the regulariser's value to *reg when given.
  double evaluate(Index b, const float* alpha, int iteration, const Batch* batch, Workspace& ws,
                  bool want_loss, double* reg) const {
    const Index r0 = b * kRowBlock, nb = block_rows(b), n = nb * cols_;
    soft_weights(r0, nb, alpha, ws);
    double rec = 0.0;
    double scale;  // ∂L/∂Ŵ = scale · grad_w
    if (mode_ == AdaRoundMode::kHessian) {
      kernels::sgemm_packed(nb, cols_, cols_, ws.soft.data(), cols_, packed_h_.data(),
                            ws.grad_w.data(), cols_, ws.gemm.data());
      if (want_loss) rec = hessian_loss(r0, nb, ws);
      if (residual_.size() != 0)
        for (Index i = 0; i < n; ++i) ws.grad_w[i] += residual_.data()[r0 * cols_ + i];
      scale = 2.0 / tokens_;
    } else {
      rec = minibatch_gradient(r0, nb, *batch, ws);
      scale = 1.0;
    }
    const bool regularise = lambda_active(iteration);
    const float beta = static_cast<float>(beta_at(iteration));
    const float lambda = static_cast<float>(options_.lambda);
    const float fscale = static_cast<float>(scale);
    kernels::adaround_grad_pass({ws.grad_w.data(), ws.chain.data(), ws.h.data(), ws.dh.data(),
                                 ws.grad.data(), n, fscale, lambda, beta, regularise});
    double reg_sum = 0.0;
    if (regularise && reg)
      for (Index i = 0; i < n; ++i) {
        float value, dvalue;
        detail::rounding_regularizer(ws.h[i], beta, value, dvalue);
        reg_sum += value;
      }
    if (reg) *reg += static_cast<double>(lambda) * reg_sum;
    return rec;
  }

  // Draws the rows of step `iteration` (all of them, in order, when batch >= tokens) and packs them.
  void draw_batch(detail::Rng& rng, std::vector<Index>& perm, Batch& batch) const {
    const Index n_tok = problem_.tokens();
    const Index size = std::min<Index>(options_.batch, n_tok);
    batch.rows.resize(static_cast<size_t>(size));
    if (size == n_tok) {
      std::iota(batch.rows.begin(), batch.rows.end(), Index{0});
    } else {  // partial Fisher–Yates: a uniform subset without replacement, as randperm[:batch]
      for (Index i = 0; i < size; ++i) {
        const Index j = i + static_cast<Index>(rng.below(static_cast<std::uint64_t>(n_tok - i)));
        std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
        batch.rows[static_cast<size_t>(i)] = perm[static_cast<size_t>(i)];
      }
    }
    const MatrixF& x = problem_.activations();
    batch.gathered.resize(size * cols_);
    for (Index i = 0; i < size; ++i)
      std::copy_n(x.row(batch.rows[static_cast<size_t>(i)]).data(), cols_,
                  batch.gathered.data() + i * cols_);
    batch.packed_xt.resize(static_cast<Index>(kernels::sgemm_packed_b_size(cols_, size)));
    kernels::sgemm_pack_b(cols_, size, batch.gathered.data(), 1, cols_, batch.packed_xt.data());
    batch.packed_x.resize(static_cast<Index>(kernels::sgemm_packed_b_size(size, cols_)));
    kernels::sgemm_pack_b(size, cols_, batch.gathered.data(), cols_, 1, batch.packed_x.data());
  }

  bool lambda_active(int iteration) const {
    return static_cast<double>(iteration) >= options_.warm_start * options_.iterations;
  }
  double beta_at(int iteration) const {
    return detail::anneal(options_.beta_start, options_.beta_end, iteration, options_.iterations,
                          options_.warm_start,
                          options_.beta_schedule == BetaSchedule::kCosine
                              ? detail::AnnealShape::kCosine
                              : detail::AnnealShape::kLinear);
  }
  // h(α) of a whole block (for the report).
  float h_of(float alpha) const { return sigmoid_.h(alpha); }
  float base(Index r, Index c) const { return base_(r, c); }

 private:
  // Soft weights of rows [r0, r0 + nb) and the factors of their derivatives.
  void soft_weights(Index r0, Index nb, const float* alpha, Workspace& ws) const {
    const MatrixF& w = problem_.weights();
    const float lo = static_cast<float>(grid_.qmin()), hi = static_cast<float>(grid_.qmax());
    const bool hessian = mode_ == AdaRoundMode::kHessian;
    for (Index r = 0; r < nb; ++r)
      for (Index g = 0; g < grid_.groups(); ++g) {
        const float s = grid_.scales(r0 + r, g);
        const float z = grid_.zero_point(r0 + r, g);  // soft weight s·(q − z)
        const Index c0 = g * grid_.group_size;
        const Index len = std::min(cols_, c0 + grid_.group_size) - c0;
        const Index i = r * cols_ + c0;
        kernels::adaround_soft_pass({alpha + i, base_.data() + (r0 + r) * cols_ + c0,
                                     w.data() + (r0 + r) * cols_ + c0, ws.h.data() + i,
                                     ws.dh.data() + i, ws.chain.data() + i, ws.soft.data() + i,
                                     len, s, z, lo, hi, hessian ? 1.0f : 0.0f, sigmoid_.zeta,
                                     sigmoid_.gamma});
      }
  }

  // Σ_i Δ_i·(Δ_i H) + 2 Δ_i·R_i over the block's rows (ws.grad_w holds ΔH, R not yet added).
  double hessian_loss(Index r0, Index nb, const Workspace& ws) const {
    double total = 0.0;
    for (Index r = 0; r < nb; ++r) {
      double row = 0.0;
      for (Index c = 0; c < cols_; ++c) {
        const Index i = r * cols_ + c;
        double term = static_cast<double>(ws.grad_w[i]);
        if (residual_.size() != 0) term += 2.0 * residual_(r0 + r, c);
        row += static_cast<double>(ws.soft[i]) * term;
      }
      total += row;
    }
    return total;
  }

  // Minibatch: outputs of the block on the batch, their error against the float layer, and
  // ∂L/∂Ŵ (L = mean over the batch of the squared output error) into ws.grad_w. Returns the batch
  // loss scaled to the whole calibration set.
  double minibatch_gradient(Index r0, Index nb, const Batch& batch, Workspace& ws) const {
    const Index size = static_cast<Index>(batch.rows.size());
    kernels::sgemm_packed(nb, size, cols_, ws.soft.data(), cols_, batch.packed_xt.data(),
                          ws.out_q.data(), size, ws.gemm.data());
    const float inv = 2.0f / static_cast<float>(size);
    double sum = 0.0;
    for (Index r = 0; r < nb; ++r)
      for (Index t = 0; t < size; ++t) {
        float& yq = ws.out_q[r * size + t];
        const float yf = float_outputs_(r0 + r, batch.rows[static_cast<size_t>(t)]);
        float e, d;
        if (options_.relu) {
          e = std::max(yq, 0.0f) - std::max(yf, 0.0f);
          d = yq > 0.0f ? inv * e : 0.0f;
        } else {
          e = yq - yf;
          d = inv * e;
        }
        sum += static_cast<double>(e) * e;
        yq = d;  // reuse the buffer for ∂L/∂Y (block rows × batch)
      }
    kernels::sgemm_packed(nb, cols_, size, ws.out_q.data(), size, batch.packed_x.data(),
                          ws.grad_w.data(), cols_, ws.gemm.data());
    return sum * tokens_ / static_cast<double>(size);
  }

  // Float layer outputs on every retained row, out × tokens (what minibatch errors compare with).
  void prepare_float_outputs() {
    const MatrixF& x = problem_.target_activations();
    const Index n_tok = x.rows();
    Buffer packed(static_cast<Index>(kernels::sgemm_packed_b_size(cols_, n_tok)));
    kernels::sgemm_pack_b(cols_, n_tok, x.data(), 1, cols_, packed.data());
    float_outputs_.resize(rows_, n_tok);
    const MatrixF& w = problem_.weights();
    const Index nblocks = blocks();
#pragma omp parallel num_threads(thread_count(options_))
    {
      Buffer work(static_cast<Index>(kernels::kSgemmWorkspace));
#pragma omp for schedule(dynamic, 1)
      for (Index b = 0; b < nblocks; ++b)
        kernels::sgemm_packed(block_rows(b), n_tok, cols_, w.data() + b * kRowBlock * cols_,
                              cols_, packed.data(), float_outputs_.data() + b * kRowBlock * n_tok,
                              n_tok, work.data());
    }
  }

  const LayerProblem& problem_;
  const Grid& grid_;
  const AdaRoundOptions& options_;
  AdaRoundMode mode_;
  detail::RectifiedSigmoid sigmoid_;
  Index rows_, cols_;
  double tokens_;
  MatrixF base_;           // ⌊w/s⌋ + z
  Buffer packed_h_;        // Hessian mode: H packed for the GEMM kernel
  MatrixF residual_;       // Hessian mode with a target: R = W(H − C)ᵀ
  double baseline_ = 0.0;  // Hessian mode: loss of Ŵ = W (input mismatch alone)
  MatrixF float_outputs_;  // minibatch mode: W·Xᵀ, out × tokens
};

void check_inputs(const LayerProblem& problem, const Grid& grid, const AdaRoundOptions& options) {
  options.validate();
  problem.require_calibration();
  grid.validate(problem.rows(), problem.cols());
  if (!grid.is_uniform())
    throw InvalidArgument("AdaRound rounds on uniform grids: this grid has a NUPES exponent");
  if (grid.has_level_table())
    throw InvalidArgument(fmt::format(
        "adaround cannot round onto format {}: it moves each weight between two neighbouring "
        "levels one uniform step s apart (soft weight s·(⌊w/s⌋ + h(α) − z)), but {} levels are "
        "d·T[q] with a non-uniform table T; use nearest or gptq",
        to_string(*grid.format), to_string(*grid.format)));
}

// Runs the block loop body for every row block in parallel.
template <typename Body>
void for_each_block(const Objective& objective, int threads, std::vector<Workspace>& spaces,
                    Body body) {
  const Index nblocks = objective.blocks();
  // Waking a team costs microseconds, and far more on a loaded machine: small layers run serially.
  const bool parallel = threads > 1 && nblocks > 1 &&
                        objective.rows() * objective.cols() * objective.cols() >= kParallelWork;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (parallel)
  for (Index b = 0; b < nblocks; ++b) body(b, spaces[static_cast<size_t>(this_thread())]);
}

std::vector<Workspace> make_workspaces(const Objective& objective, int threads,
                                       Index batch_size) {
  std::vector<Workspace> spaces(static_cast<size_t>(threads));
  for (auto& ws : spaces) ws.resize(kRowBlock * objective.cols(), kRowBlock * batch_size);
  return spaces;
}

}  // namespace

AdaRoundMode resolve_adaround_mode(const LayerProblem& problem, const AdaRoundOptions& options) {
  if (options.mode == AdaRoundMode::kHessian) {
    if (options.relu)
      throw InvalidArgument("AdaRound: a ReLU on the outputs needs minibatch mode (the loss is "
                            "no longer a quadratic form in H)");
    return AdaRoundMode::kHessian;
  }
  if (options.mode == AdaRoundMode::kMinibatch || options.relu) {
    if (!problem.retains_activations())
      throw InvalidArgument(fmt::format(
          "AdaRound {} needs the calibration rows: set LayerProblemOptions::retain_activations "
          "before adding batches",
          options.relu ? "with ReLU" : "in minibatch mode"));
    return AdaRoundMode::kMinibatch;
  }
  if (problem.retains_activations() && problem.cols() > kAutoMinibatchInputs)
    return AdaRoundMode::kMinibatch;
  return AdaRoundMode::kHessian;
}

double adaround_objective(const LayerProblem& problem, const Grid& grid,
                          const AdaRoundOptions& options, const MatrixFRef& alpha, int iteration,
                          MatrixF* gradient) {
  check_inputs(problem, grid, options);
  problem.require_shape(alpha, "AdaRound variables α");
  const AdaRoundMode mode = resolve_adaround_mode(problem, options);
  AdaRoundOptions full = options;
  full.batch = static_cast<int>(std::min<Index>(problem.tokens(), 2147483647));
  const Objective objective(problem, grid, full, mode);
  Batch batch;
  if (mode == AdaRoundMode::kMinibatch) {
    detail::Rng rng(options.seed);
    std::vector<Index> perm;
    objective.draw_batch(rng, perm, batch);
  }
  const int threads = thread_count(options);
  std::vector<Workspace> spaces = make_workspaces(objective, threads, problem.tokens());
  const MatrixF a = alpha;
  if (gradient) gradient->resize(problem.rows(), problem.cols());
  std::vector<double> rec(static_cast<size_t>(objective.blocks())), reg(rec.size(), 0.0);
  for_each_block(objective, threads, spaces, [&](Index b, Workspace& ws) {
    const Index off = b * kRowBlock * objective.cols();
    rec[static_cast<size_t>(b)] = objective.evaluate(b, a.data() + off, iteration, &batch, ws,
                                                     true, &reg[static_cast<size_t>(b)]);
    if (gradient)
      std::copy_n(ws.grad.data(), objective.block_rows(b) * objective.cols(),
                  gradient->data() + off);
  });
  double total_rec = mode == AdaRoundMode::kHessian ? objective.baseline() : 0.0, total_reg = 0.0;
  for (size_t b = 0; b < rec.size(); ++b) {
    total_rec += rec[b];
    total_reg += reg[b];
  }
  return total_rec / static_cast<double>(problem.tokens()) + total_reg;
}

AdaRoundResult adaround_detailed(const LayerProblem& problem, const Grid& grid,
                                 const AdaRoundOptions& options, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(problem, grid, options);
  const AdaRoundMode mode = resolve_adaround_mode(problem, options);
  detail::ProgressThrottle report_progress(progress, options.iterations, "adaround");
  const Objective objective(problem, grid, options, mode);
  const int threads = thread_count(options);
  const Index batch_size = std::min<Index>(options.batch, problem.tokens());
  std::vector<Workspace> spaces = make_workspaces(objective, threads, batch_size);
  const Index nblocks = objective.blocks(), cols = objective.cols();

  MatrixF alpha = objective.initial_alpha();
  std::vector<detail::Adam> adam;
  const detail::AdamConfig config{options.lr, options.adam_beta1, options.adam_beta2,
                                  options.adam_eps};
  for (Index b = 0; b < nblocks; ++b)
    adam.emplace_back(static_cast<size_t>(objective.block_rows(b) * cols), config);

  AdaRoundResult result;
  RoundingReport& report = result.layer.report;
  Batch batch;
  detail::Rng rng(options.seed);  // one stream, drawn serially: the same batches for any threads
  std::vector<Index> perm(static_cast<size_t>(problem.tokens()));
  std::iota(perm.begin(), perm.end(), Index{0});
  std::vector<double> block_loss(static_cast<size_t>(nblocks), 0.0);
  for (int it = 0; it < options.iterations; ++it) {
    const bool record =
        it == 0 || (options.loss_interval > 0 && it % options.loss_interval == 0);
    if (mode == AdaRoundMode::kMinibatch) objective.draw_batch(rng, perm, batch);
    for_each_block(objective, threads, spaces, [&](Index b, Workspace& ws) {
      float* a = alpha.data() + b * kRowBlock * cols;
      block_loss[static_cast<size_t>(b)] =
          objective.evaluate(b, a, it, &batch, ws, record, nullptr);
      adam[static_cast<size_t>(b)].step(a, ws.grad.data());
    });
    if (record) {
      double total = mode == AdaRoundMode::kHessian ? objective.baseline() : 0.0;
      for (double l : block_loss) total += l;  // block order: independent of threads
      report.loss_curve.emplace_back(it, total);
    }
    report_progress.update(it + 1);
  }

  // Final codes ⌊w/s⌋ + z + [α ≥ 0], clamped to the grid.
  QuantizedLayer& layer = result.layer;
  layer.grid = grid;
  layer.codes.resize(objective.rows(), cols);
  result.h.resize(objective.rows(), cols);
  const float lo = static_cast<float>(grid.qmin()), hi = static_cast<float>(grid.qmax());
  Index soft_count = 0;
  for (Index r = 0; r < objective.rows(); ++r)
    for (Index c = 0; c < cols; ++c) {
      const float q = objective.base(r, c) + (alpha(r, c) >= 0.0f ? 1.0f : 0.0f);
      layer.codes(r, c) = static_cast<std::int8_t>(std::clamp(q, lo, hi));
      const float h = objective.h_of(alpha(r, c));
      result.h(r, c) = h;
      if (std::min(h, 1.0f - h) > 1e-3f) ++soft_count;
    }
  int guarded = 0;
  if (options.rtn_guard && !options.relu) {
    Grid learned = layer.grid;
    guarded = detail::keep_rows_not_worse_than_rtn(problem, {&learned}, layer.codes, layer.grid)
                  .replaced;
  }
  fill_report(report, problem, layer, "adaround", nullptr);
  report.iterations = options.iterations;

  report.notes.push_back(fmt::format("mode {}, GEMM kernel {}", to_string(mode),
                                     kernels::sgemm_packed_isa()));
  if (guarded > 0)
    report.notes.push_back(fmt::format(
        "{} of {} rows kept the RTN row (the learned one was not better)", guarded,
        layer.codes.rows()));
  if (soft_count > 0 && options.iterations > 0)
    report.notes.push_back(fmt::format(
        "{} of {} rounding variables h are not yet 0 or 1 (more iterations or a larger lambda)",
        soft_count, objective.rows() * cols));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

QuantizedLayer adaround(const LayerProblem& problem, const Grid& grid,
                        const AdaRoundOptions& options, const ProgressFn& progress) {
  return adaround_detailed(problem, grid, options, progress).layer;
}

QuantizedLayer adaround(const LayerProblem& problem, const GridSpec& spec,
                        const AdaRoundOptions& options, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  options.validate();
  problem.require_calibration();
  spec.validate();
  QuantizedLayer out = adaround(problem, make_grid(problem, spec), options, progress);
  out.report.scale_search = to_string(spec.search);
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace qround
