// The iteration loop shared by the learned rounding methods whose parameters are independent per
// output row (FlexRound, NUPES): rows are processed in fixed blocks of RowBlockLoss::kRowBlock,
// in parallel, so every row's trajectory is the same for any thread count.
//
// A Model provides
//   struct Block : RowBlockBase { … };
//   void forward(Index row0, Index n, Block& b) const;  // hard forward + loss (+ ∂L/∂Ŵ) of rows
//   void keep(const Block& b, Index k);                 // remember row k's current state as best
//   void step(const Block& b, Index k, int it);         // backward + optimizer step of row k
// Iteration `it` evaluates the current parameters (iteration 0 = the starting point), keeps each
// row's best (or last) state, then steps; the final evaluation follows the last step.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "qround/detail/row_block_loss.hpp"
#include "qround/detail/threads.hpp"
#include "qround/detail/training_log.hpp"

namespace qround::detail {

// What every Model::Block holds (models derive and add their own per-row state).
struct RowBlockBase {
  Index row0 = 0, n = 0;
  MatrixI8 codes;
  MatrixF w_hat, delta, grad_w;  // Ŵ, Ŵ − W and ∂L/∂Ŵ of the block's rows
  std::vector<double> row_loss;  // per row, without the constant baseline

  void reset(Index first_row, Index count, Index cols) {
    row0 = first_row;
    n = count;
    codes.resize(count, cols);
    w_hat.resize(count, cols);
    delta.resize(count, cols);
    row_loss.assign(static_cast<size_t>(count), 0.0);
  }
};

template <class Model>
void train_row_blocks(Model& model, const RowBlockLoss& loss, Index rows, Index cols,
                      int iterations, bool keep_best, int threads, TrainingLog& log,
                      const char* method) {
  std::vector<double> best(static_cast<size_t>(rows), std::numeric_limits<double>::infinity());
  std::vector<double> row_loss(static_cast<size_t>(rows));
  const Index blocks = loss.blocks(rows);
  constexpr Index kB = RowBlockLoss::kRowBlock;
  const int nt = resolve_threads(threads);
  const bool parallel = worth_parallel(rows, cols);
  for (int it = 0; it <= iterations; ++it) {
#pragma omp parallel for schedule(static) num_threads(nt) if (parallel)
    for (Index bi = 0; bi < blocks; ++bi) {
      typename Model::Block b;
      model.forward(bi * kB, std::min(kB, rows - bi * kB), b);
      for (Index k = 0; k < b.n; ++k) {
        const size_t r = static_cast<size_t>(b.row0 + k);
        row_loss[r] = b.row_loss[static_cast<size_t>(k)];
        if (row_loss[r] < best[r] || !keep_best) {
          best[r] = row_loss[r];
          model.keep(b, k);
        }
        if (it < iterations) model.step(b, k, it);
      }
    }
    double total = loss.baseline();
    for (double l : row_loss) total += l;  // fixed order
    if (!std::isfinite(total))
      throw NumericalError(fmt::format("{}: the loss became {} at iteration {}", method, total, it));
    log.record(it, total);
    log.progress(it, total);
  }
}

// Evaluation only (no step), for the gradient tests: calls `visit(b, k)` for every row.
template <class Model, class Visit>
double evaluate_row_blocks(const Model& model, const RowBlockLoss& loss, Index rows, Index cols,
                           int threads, Visit visit) {
  std::vector<double> row_loss(static_cast<size_t>(rows));
  const Index blocks = loss.blocks(rows);
  constexpr Index kB = RowBlockLoss::kRowBlock;
#pragma omp parallel for schedule(static) num_threads(resolve_threads(threads)) \
    if (worth_parallel(rows, cols))
  for (Index bi = 0; bi < blocks; ++bi) {
    typename Model::Block b;
    model.forward(bi * kB, std::min(kB, rows - bi * kB), b);
    for (Index k = 0; k < b.n; ++k) {
      row_loss[static_cast<size_t>(b.row0 + k)] = b.row_loss[static_cast<size_t>(k)];
      visit(b, k);
    }
  }
  double total = loss.baseline();
  for (double l : row_loss) total += l;
  return total;
}

}  // namespace qround::detail
