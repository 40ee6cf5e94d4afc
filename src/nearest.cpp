#include "qround/nearest.hpp"

#include <chrono>

#include "qround/scale_search.hpp"

namespace qround {

void fill_report(RoundingReport& report, const LayerProblem& problem, const QuantizedLayer& layer,
                 const char* method, const GridSpec* spec) {
  report.method = method;
  report.bits = layer.grid.bits;
  report.group_size =
      layer.grid.granularity == Granularity::kPerGroup ? layer.grid.group_size : 0;
  report.symmetric = layer.grid.symmetric;
  if (spec) report.scale_search = to_string(spec->search);
  const MatrixF w_hat = layer.dequantized();
  report.loss = problem.loss(w_hat);
  report.relative_loss = problem.relative_loss(w_hat);
  const MatrixF w_rtn = fake_quant(problem.weights(), layer.grid);
  report.loss_rtn = problem.loss(w_rtn);
  report.relative_loss_rtn = problem.relative_loss(w_rtn);
}

QuantizedLayer round_to_nearest(const LayerProblem& problem, const Grid& grid) {
  const auto start = std::chrono::steady_clock::now();
  problem.require_calibration();
  QuantizedLayer out;
  out.grid = grid;
  out.codes = quantize(problem.weights(), grid);
  fill_report(out.report, problem, out, "nearest", nullptr);
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

QuantizedLayer round_to_nearest(const LayerProblem& problem, const GridSpec& spec) {
  const auto start = std::chrono::steady_clock::now();
  problem.require_calibration();
  QuantizedLayer out = round_to_nearest(problem, make_grid(problem, spec));
  out.report.scale_search = to_string(spec.search);
  out.report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace qround
