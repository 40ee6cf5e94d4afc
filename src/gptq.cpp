#include "qround/detail/threads.hpp"
#include "qround/gptq.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "qround/detail/dense_gemm.hpp"
#include "qround/detail/gptq_factor.hpp"
#include "qround/nearest.hpp"
#include "qround/scale_search.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {
namespace {

// Rows per task: fixed, so that the result never depends on the thread count (every row is
// processed by the same code on the same chunk boundaries whoever runs it).
constexpr Index kRowChunk = 64;

using MatrixFCol = Eigen::MatrixXf;  // column-major: one column of a block is contiguous

int thread_count(const GptqOptions& options) { return detail::resolve_threads(options.threads); }

struct Factor {
  MatrixF u;             // upper Cholesky factor of (H + λI)⁻¹, processed column order
  double damping = 0.0;  // λ actually used
  int retries = 0;
};

Factor factorize(const MatrixD& h, const GptqOptions& options) {
  const int threads = thread_count(options);
  const Index n = h.rows();
  const double mean_diag = h.diagonal().mean();
  // An all-dead or degenerate diagonal still needs a positive base for the relative damping.
  const double base = mean_diag > 0.0 && std::isfinite(mean_diag) ? mean_diag : 1.0;
  Factor f;
  double damping = options.damp * base;
  MatrixD u;
  for (int attempt = 0; attempt <= options.max_damping_retries; ++attempt) {
    MatrixD damped = h;
    damped.diagonal().array() += damping;
    if (detail::upper_factor_of_inverse(damped, u, threads)) {
      f.u = u.cast<float>();
      f.damping = damping;
      f.retries = attempt;
      return f;
    }
    damping *= 10.0;
  }
  throw NumericalError(fmt::format(
      "GPTQ: the {}×{} Hessian is not positive definite even with damping {} (= {} × mean(diag H) "
      "= {}, after {} retries ×10): check the calibration data for NaN or a non-PSD Hessian",
      n, n, damping / 10.0, damping / 10.0 / base, mean_diag, options.max_damping_retries));
}

GridSpec per_row_spec(GridSpec spec) {
  if (!spec.format) spec.granularity = Granularity::kPerRow;  // a format keeps its own blocks
  return spec;
}

// Writes the format grid `g`, fitted on rows [r0, r0 + g.rows) and the one block of columns
// starting at `col`, into `grid`.
void place_format_block(Grid& grid, const Grid& g, Index r0, Index col) {
  const GgmlTypeTraits& t = ggml_traits(*grid.format);
  const Index rows = g.rows, sub = col / t.sub_block, blk = col / t.block;
  const Index subs = g.groups(), blocks = g.cols / t.block;
  grid.scales.block(r0, sub, rows, subs) = g.scales;
  if (grid.has_offsets()) grid.offsets.block(r0, sub, rows, subs) = g.offsets;
  grid.stored.d.block(r0, blk, rows, blocks) = g.stored.d;
  if (g.stored.dmin.size()) grid.stored.dmin.block(r0, blk, rows, blocks) = g.stored.dmin;
  if (g.stored.sc.size()) grid.stored.sc.block(r0, sub, rows, subs) = g.stored.sc;
  if (g.stored.m.size()) grid.stored.m.block(r0, sub, rows, subs) = g.stored.m;
}

struct Prepared {
  MatrixF w;                // dead columns zeroed, original order
  MatrixD h;                // dead diagonal set to 1, original order
  std::vector<Index> perm;  // processed position → original column
  Grid grid;                // per-row / per-tensor / static groups (original order)
  bool dynamic_groups = false;
  Index dead = 0;
};

Prepared prepare(const LayerProblem& problem, const GridSpec& spec, const GptqOptions& options) {
  Prepared p;
  const Index n = problem.cols();
  p.w = problem.weights();
  p.h = problem.hessian();
  p.dynamic_groups = spec.granularity == Granularity::kPerGroup && !options.static_groups &&
                     spec.effective_group_size(n) < n;
  // Per-row / per-tensor grids come from the original weights (before dead columns are zeroed).
  if (spec.granularity != Granularity::kPerGroup) p.grid = make_grid(problem, spec);
  for (Index j = 0; j < n; ++j)
    if (p.h(j, j) == 0.0) {
      p.h(j, j) = 1.0;
      p.w.col(j).setZero();
      ++p.dead;
    }
  if (spec.granularity == Granularity::kPerGroup) {
    // Static groups (and the single group of a layer narrower than G) are fitted after zeroing,
    // as the reference does. With dynamic groups this only gives the grid its shape.
    p.grid = spec.search == ScaleSearch::kHessian ? make_grid(p.w, spec, problem.scale_importance())
                                                  : make_grid(p.w, spec);
  }
  p.perm.resize(static_cast<size_t>(n));
  std::iota(p.perm.begin(), p.perm.end(), Index{0});
  if (options.act_order) {
    // Stable, so equal H_jj keep their original order (torch.argsort does not promise that).
    std::stable_sort(p.perm.begin(), p.perm.end(),
                     [&](Index a, Index b) { return p.h(a, a) > p.h(b, b); });
  }
  return p;
}

struct CoreResult {
  MatrixI8 codes;  // processed column order
  Grid grid;       // dynamic groups: over the processed order; otherwise the prepared grid
  Factor factor;
  // Loss on H (dead inputs fixed), from GPTQ's own errors: W − Ŵ = E·U and UᵀU = (H + λI)⁻¹ give
  // ΔW (H + λI) ΔWᵀ = ‖E‖², so ΔW H ΔWᵀ = ‖E‖² − λ‖ΔW‖² at no extra cost, row by row.
  VectorD row_loss;
  double loss = 0.0;
};

// GPTQ proper, on columns in processed order.
CoreResult run_core(const LayerProblem& problem, const GridSpec& spec, const GptqOptions& options,
                    Prepared& p, const ProgressFn& progress) {
  const Index m = problem.rows(), n = problem.cols();
  MatrixD hp(n, n);
  MatrixF wp(m, n);
  // Row by row (both matrices are row-major).
  for (Index r = 0; r < m; ++r)
    for (Index k = 0; k < n; ++k) wp(r, k) = p.w(r, p.perm[static_cast<size_t>(k)]);
  for (Index a = 0; a < n; ++a) {
    const double* src = p.h.data() + p.perm[static_cast<size_t>(a)] * n;
    for (Index b = 0; b < n; ++b) hp(a, b) = src[p.perm[static_cast<size_t>(b)]];
  }

  CoreResult out;
  out.factor = factorize(hp, options);
  const MatrixF& u = out.factor.u;

  // Dynamic groups are refitted every `group` columns: the group itself, or a format's whole block
  // (32 or a 256 super-block), whose stored parameters are chosen together.
  const Index group = !p.dynamic_groups ? 0
                      : spec.format     ? ggml_traits(*spec.format).block
                                        : spec.effective_group_size(n);
  VectorD diag_p;  // importance of the processed columns, for Hessian-weighted group search
  if (p.dynamic_groups) {
    out.grid = p.grid;  // shape and metadata; scales/zeros are refitted group by group
    if (spec.search == ScaleSearch::kHessian) {
      const VectorD d = problem.scale_importance();
      diag_p.resize(n);
      for (Index k = 0; k < n; ++k) diag_p[k] = d[p.perm[static_cast<size_t>(k)]];
    }
  } else {
    out.grid = p.grid;
  }
  const Grid& grid = out.grid;
  // Column of `grid` that processed column k reads.
  const bool grid_in_original_order = !p.dynamic_groups;
  auto grid_col = [&](Index k) {
    return grid_in_original_order ? p.perm[static_cast<size_t>(k)] : k;
  };

  out.codes.resize(m, n);
  const Index chunks = (m + kRowChunk - 1) / kRowChunk;
  const GridSpec group_spec = per_row_spec(spec);
  VectorD row_err2 = VectorD::Zero(m), row_delta2 = VectorD::Zero(m);
  MatrixF work = wp;  // updated in place by the lazy GEMMs; wp keeps the original weights

  // Blocks outside, row chunks inside: every chunk then reads the same U block while it is still
  // in the shared cache (U is in² floats; chunk-outer order streamed all of it per chunk).
  for (Index i1 = 0; i1 < n; i1 += options.block) {
    const Index i2 = std::min(i1 + options.block, n), count = i2 - i1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(thread_count(options))
    for (Index c = 0; c < chunks; ++c) {
      const Index r0 = c * kRowChunk, rows = std::min(kRowChunk, m - r0);
      auto wc = work.middleRows(r0, rows);
      MatrixF w1 = wc.middleCols(i1, count);  // the current block, row-major (rows × count)
      MatrixFCol err1(rows,
                      count);  // its scaled errors, column-major: the A operand of both updates
      for (Index i = 0; i < count; ++i) {
        const Index j = i1 + i;
        if (group > 0 && j % group == 0) {
          // The reference fits the group on W as the previous blocks' GEMMs left it.
          const Index len = std::min(group, n - j);
          const Grid g = spec.search == ScaleSearch::kHessian
                             ? make_grid(wc.middleCols(j, len), group_spec, diag_p.segment(j, len))
                             : make_grid(wc.middleCols(j, len), group_spec);
          if (spec.format)
            place_format_block(out.grid, g, r0, j);
          else {
            out.grid.scales.block(r0, j / group, rows, 1) = g.scales;
            out.grid.zeros.block(r0, j / group, rows, 1) = g.zeros;
          }
        }
        const Index gc = grid_col(j);
        const float d = u(j, j);
        for (Index r = 0; r < rows; ++r) {
          const float w = w1(r, i);
          const std::int32_t q = grid.code(r0 + r, gc, w);
          out.codes(r0 + r, j) = static_cast<std::int8_t>(q);
          const float v = grid.level(r0 + r, gc, q);
          const float e = (w - v) / d;
          err1(r, i) = e;
          const double delta = static_cast<double>(wp(r0 + r, j)) - v;
          row_err2[r0 + r] += static_cast<double>(e) * e;
          row_delta2[r0 + r] += delta * delta;
        }
        if (i + 1 < count)  // W1[:, i+1:] −= err ⊗ U[j, i+1:] (a rank-1 update)
          detail::gemm_sub(w1.data() + i + 1, count, err1.data() + i * rows, rows,
                           u.data() + j * n + j + 1, n, rows, count - i - 1, 1);
      }
      if (i2 < n)  // W[:, i2:] −= Err1 · U[i1:i2, i2:]
        detail::gemm_sub(wc.data() + i2, n, err1.data(), rows, u.data() + i1 * n + i2, n, rows,
                         n - i2, count);
    }
    if (progress && !progress(static_cast<double>(i2) / static_cast<double>(n), "gptq"))
      throw Cancelled();
  }
  out.row_loss.resize(m);
  for (Index r = 0; r < m; ++r)
    out.row_loss[r] = std::max(0.0, row_err2[r] - out.factor.damping * row_delta2[r]);
  out.loss = out.row_loss.sum();
  return out;
}

MatrixI8 unpermute_codes(const MatrixI8& codes_p, const std::vector<Index>& perm) {
  MatrixI8 codes(codes_p.rows(), codes_p.cols());
  for (Index r = 0; r < codes_p.rows(); ++r)
    for (Index k = 0; k < codes_p.cols(); ++k)
      codes(r, perm[static_cast<size_t>(k)]) = codes_p(r, k);
  return codes;
}

void add_factor_notes(RoundingReport& report, const Factor& f, const GptqOptions& options,
                      Index dead) {
  if (f.retries > 0)
    report.notes.push_back(fmt::format(
        "Cholesky failed with damping {} × mean(diag H); succeeded after {} retries (×10 each) "
        "with damping {} (absolute {})",
        options.damp, f.retries, options.damp * std::pow(10.0, f.retries), f.damping));
  if (dead > 0)
    report.notes.push_back(fmt::format("{} dead inputs (H_jj = 0): weight columns zeroed", dead));
}

void check_inputs(const LayerProblem& problem, const GridSpec& spec, const GptqOptions& options) {
  spec.validate();
  options.validate();
  problem.require_calibration();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

constexpr Index kFormTile = 128;

// H in float with every entry right of its diagonal tile doubled: the only part of H the quadratic
// form below reads, each off-diagonal tile standing for itself and its mirror image.
MatrixF folded_hessian(const MatrixD& h) {
  const Index n = h.rows();
  MatrixF out(n, n);
  for (Index i = 0; i < n; ++i) {
    const Index tile_end = std::min(n, (i / kFormTile + 1) * kFormTile);
    for (Index j = 0; j < n; ++j)
      out(i, j) = static_cast<float>(j < tile_end ? h(i, j) : 2.0 * h(i, j));
  }
  return out;
}

// d_i H d_iᵀ for every row of d, given folded_hessian(H): only tiles on and right of the diagonal
// are multiplied (half the flops of a full product), in float through the GEMM kernel, and each
// row's dot products are summed in double. Used for the output energy and the RTN losses, whose
// errors are not concentrated in H's small eigenvalues, so float products are accurate to ~1e-6
// relative.
VectorD quadratic_form_rows(const MatrixF& d, const MatrixF& folded, int threads) {
  const Index m = d.rows(), n = d.cols();
  const Index chunks = (m + kRowChunk - 1) / kRowChunk;
  MatrixF acc = MatrixF::Zero(m, n);  // becomes −Σ_J D[:, J] · folded[J, j0:]
  // Row tiles of H outside, row chunks of d inside, so all chunks share H[J, J:] in cache.
  for (Index j0 = 0; j0 < n; j0 += kFormTile) {
    const Index jb = std::min(kFormTile, n - j0), width = n - j0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (Index c = 0; c < chunks; ++c) {
      const Index r0 = c * kRowChunk, rows = std::min(kRowChunk, m - r0);
      const MatrixFCol a = d.block(r0, j0, rows, jb);  // column-major A operand
      detail::gemm_sub(acc.data() + r0 * n + j0, n, a.data(), rows, folded.data() + j0 * n + j0, n,
                       rows, width, jb);
    }
  }
  VectorD out(m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (Index c = 0; c < chunks; ++c) {
    const Index r0 = c * kRowChunk, rows = std::min(kRowChunk, m - r0);
    for (Index r = r0; r < r0 + rows; ++r) {
      double sum = 0.0;
      for (Index j = 0; j < n; ++j) sum -= static_cast<double>(acc(r, j)) * d(r, j);
      out[r] = sum;
    }
  }
  return out;
}

double relative(double loss, double energy) {
  if (energy > 0.0) return loss / energy;
  return loss == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
}

// Per-row losses of GPTQ's result and of RTN on the report's RTN grid, and the output energy.
struct LossRows {
  VectorD gptq, rtn;
  double energy = 0.0;
};

LossRows loss_rows(const LayerProblem& problem, const MatrixF& w_hat, const MatrixF& w_rtn,
                   const CoreResult& core, const GptqOptions& options) {
  LossRows out;
  if (problem.has_target()) {  // the target's terms: the problem's own (double) evaluation
    out.gptq = problem.row_losses(w_hat);
    out.rtn = problem.row_losses(w_rtn);
    out.energy = problem.output_energy();
    return out;
  }
  const MatrixF h = folded_hessian(problem.hessian());
  const int threads = thread_count(options);
  out.energy = quadratic_form_rows(problem.weights(), h, threads).sum();
  out.gptq = core.row_loss;
  out.rtn = quadratic_form_rows(w_rtn - problem.weights(), h, threads);
  return out;
}

void fill_gptq_report(RoundingReport& report, const GridSpec& spec, const Grid& rtn_grid,
                      const LossRows& rows) {
  report.method = "gptq";
  report.bits = rtn_grid.bits;
  report.group_size = rtn_grid.granularity == Granularity::kPerGroup ? rtn_grid.group_size : 0;
  report.symmetric = rtn_grid.symmetric;
  report.scale_search = to_string(spec.search);
  report.loss = rows.gptq.sum();
  report.loss_rtn = rows.rtn.sum();
  report.relative_loss = relative(report.loss, rows.energy);
  report.relative_loss_rtn = relative(report.loss_rtn, rows.energy);
}

// Finishes a GPTQ layer: per row, RTN on `rtn_grid` replaces GPTQ's row where it is better
// (options.rtn_guard: never worse than RTN), then the report's losses. Returns the rows replaced.
int finish_gptq_layer(QuantizedLayer& out, const LayerProblem& problem, const GridSpec& spec,
                       const Grid& rtn_grid, const CoreResult& core, const GptqOptions& options) {
  const MatrixI8 rtn_codes = quantize(problem.weights(), rtn_grid);
  const MatrixF w_rtn = dequantize(rtn_codes, rtn_grid);
  LossRows rows = loss_rows(problem, out.dequantized(), w_rtn, core, options);
  int replaced = 0;
  if (options.rtn_guard)
    for (Index r = 0; r < out.codes.rows(); ++r) {
      if (!(rows.rtn[r] < rows.gptq[r])) continue;
      out.codes.row(r) = rtn_codes.row(r);
      copy_row_parameters(out.grid, rtn_grid, r);
      rows.gptq[r] = rows.rtn[r];
      ++replaced;
    }
  fill_gptq_report(out.report, spec, rtn_grid, rows);
  return replaced;
}

}  // namespace

void GptqOptions::validate() const {
  if (!(damp >= 0.0) || !std::isfinite(damp))
    throw InvalidArgument(fmt::format("GPTQ damp = {} must be a finite number >= 0", damp));
  if (block < 1) throw InvalidArgument(fmt::format("GPTQ block = {} must be >= 1 column", block));
  if (max_damping_retries < 0 || max_damping_retries > 20)
    throw InvalidArgument(
        fmt::format("GPTQ max_damping_retries = {} is out of range: expected "
                    "0..20",
                    max_damping_retries));
  if (threads < 0) throw InvalidArgument(fmt::format("GPTQ threads = {} must be >= 0", threads));
}

QuantizedLayer gptq(const LayerProblem& problem, const GridSpec& spec, const GptqOptions& options,
                    const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(problem, spec, options);
  Prepared p = prepare(problem, spec, options);
  if (options.act_order && p.dynamic_groups)
    throw InvalidArgument(
        "GPTQ act-order with dynamic groups needs a column → group index that a Grid cannot "
        "express: set static_groups (--static-groups), or call gptq_indexed()");
  CoreResult core = run_core(problem, spec, options, p, progress);
  QuantizedLayer out;
  out.codes = unpermute_codes(core.codes, p.perm);
  out.grid = std::move(core.grid);
  const Grid rtn_grid = p.dynamic_groups ? make_grid(problem, spec) : out.grid;
  const int replaced = finish_gptq_layer(out, problem, spec, rtn_grid, core, options);
  if (p.dynamic_groups)
    out.report.notes.push_back(
        "dynamic groups: loss_rtn is RTN on make_grid(spec) of the original weights, not on "
        "GPTQ's own grid");
  add_factor_notes(out.report, core.factor, options, p.dead);
  if (replaced > 0)
    out.report.notes.push_back(fmt::format(
        "{} of {} rows kept an RTN row (GPTQ's was not better)", replaced, out.codes.rows()));
  out.report.iterations = static_cast<int>(problem.cols());
  out.report.seconds = seconds_since(start);
  return out;
}

MatrixF GptqIndexedLayer::dequantized() const {
  MatrixF out(codes.rows(), codes.cols());
  for (Index k = 0; k < codes.cols(); ++k) {
    const Index c = permutation[static_cast<size_t>(k)];
    for (Index r = 0; r < codes.rows(); ++r) out(r, c) = grid.level(r, k, codes(r, c));
  }
  return out;
}

GptqIndexedLayer gptq_indexed(const LayerProblem& problem, const GridSpec& spec,
                              const GptqOptions& options, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(problem, spec, options);
  if (spec.format && options.act_order && !options.static_groups)
    throw InvalidArgument(fmt::format(
        "GPTQ act-order with dynamic groups cannot be stored in format {}: its blocks are runs of "
        "consecutive inputs; use static groups",
        to_string(*spec.format)));
  Prepared p = prepare(problem, spec, options);
  GptqIndexedLayer out;
  CoreResult core = run_core(problem, spec, options, p, progress);
  const Index n = problem.cols();
  out.codes = unpermute_codes(core.codes, p.perm);
  // Without dynamic groups the grid is already over the original columns: no index needed.
  if (!p.dynamic_groups) std::iota(p.perm.begin(), p.perm.end(), Index{0});
  out.permutation = p.perm;
  out.grid = std::move(core.grid);
  out.group_index.resize(static_cast<size_t>(n));
  for (Index k = 0; k < n; ++k)
    out.group_index[static_cast<size_t>(out.permutation[static_cast<size_t>(k)])] =
        static_cast<std::int32_t>(out.grid.group_of(k));
  const Grid rtn_grid = p.dynamic_groups ? make_grid(problem, spec) : out.grid;
  fill_gptq_report(out.report, spec, rtn_grid,
                   loss_rows(problem, out.dequantized(), fake_quant(problem.weights(), rtn_grid),
                             core, options));
  out.report.notes.push_back("loss_rtn is RTN on make_grid(spec) of the original weights");
  add_factor_notes(out.report, core.factor, options, p.dead);
  out.report.iterations = static_cast<int>(n);
  out.report.seconds = seconds_since(start);
  return out;
}

}  // namespace qround
