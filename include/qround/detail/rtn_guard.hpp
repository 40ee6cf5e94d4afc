// The "never worse than round-to-nearest" guarantee of the learned methods. The loss splits over
// output rows, so each row keeps the lowest-loss choice among its learned result and RTN on each
// reference grid (compared in double, LayerProblem::row_losses), which can only lower the total.
#pragma once

#include <initializer_list>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "qround/detail/training_log.hpp"
#include "qround/grid.hpp"
#include "qround/nearest.hpp"
#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround::detail {

struct RtnGuardResult {
  int replaced = 0;                 // rows that took an RTN row
  std::vector<double> rtn_losses;  // total RTN loss on each reference grid, in order
};

// `grid` and every reference must have the same shape and granularity; exponents are per row,
// so mixed rows stay representable. Ties keep the learned row.
inline RtnGuardResult keep_rows_not_worse_than_rtn(const LayerProblem& problem,
                                                   std::initializer_list<const Grid*> references,
                                                   MatrixI8& codes, Grid& grid) {
  RtnGuardResult out;
  VectorD best = problem.row_losses(dequantize(codes, grid));
  std::vector<bool> replaced(static_cast<size_t>(codes.rows()), false);
  for (const Grid* ref : references) {
    const MatrixI8 rtn_codes = quantize(problem.weights(), *ref);
    const VectorD rtn = problem.row_losses(dequantize(rtn_codes, *ref));
    double total = 0.0;
    for (Index r = 0; r < rtn.size(); ++r) total += rtn[r];  // LayerProblem::loss's order
    out.rtn_losses.push_back(total);
    if (grid.exponent.size() == 0 && ref->exponent.size() != 0)
      grid.exponent = VectorF::Ones(grid.rows);
    for (Index r = 0; r < codes.rows(); ++r) {
      if (!(rtn[r] < best[r])) continue;
      best[r] = rtn[r];
      replaced[static_cast<size_t>(r)] = true;
      codes.row(r) = rtn_codes.row(r);
      copy_row_parameters(grid, *ref, r);
    }
  }
  for (bool b : replaced) out.replaced += b ? 1 : 0;
  return out;
}

// Makes `loss_rtn` (and its relative form) the RTN loss on the grid the method started from, the
// baseline every method reports against (fill_report measures RTN on the returned grid).
inline void report_rtn_baseline(RoundingReport& report, const LayerProblem& problem,
                                double loss_rtn) {
  const double energy = problem.output_energy();
  report.loss_rtn = loss_rtn;
  report.relative_loss_rtn = energy > 0.0 ? loss_rtn / energy
                                          : (loss_rtn == 0.0 ? 0.0
                                                             : std::numeric_limits<double>::infinity());
}

// The common ending of a learned method: `out` holds the learned codes and grid; applies the
// per-row RTN guard against the learned grid and `start_grid`, then fills the report (losses, RTN
// baseline on the starting grid, iterations, loss curve and notes).
inline void finish_learned_layer(QuantizedLayer& out, const LayerProblem& problem,
                                 const Grid& start_grid, const char* method, int iterations,
                                 TrainingLog& log) {
  const Grid learned_grid = out.grid;
  const RtnGuardResult guard =
      keep_rows_not_worse_than_rtn(problem, {&learned_grid, &start_grid}, out.codes, out.grid);
  fill_report(out.report, problem, out, method, nullptr);
  out.report.iterations = iterations;
  out.report.loss_curve = log.take_curve();
  report_rtn_baseline(out.report, problem, guard.rtn_losses[1]);
  out.report.notes.push_back(fmt::format(
      "loss_rtn is RTN on the starting grid; RTN on the learned grid would give {:.6g}",
      guard.rtn_losses[0]));
  if (guard.replaced > 0)
    out.report.notes.push_back(
        fmt::format("{} of {} rows kept an RTN row (the learned result was not better)",
                    guard.replaced, out.codes.rows()));
}

}  // namespace qround::detail
