#include "qround/nearest.hpp"

#include <chrono>
#include <limits>

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
  // Each loss is one out × in × in product: evaluate it once and derive the relative value from it
  // (relative_loss() would evaluate it again), and reuse it when the codes are the RTN codes.
  const double energy = problem.output_energy();
  auto relative = [energy](double loss) {
    if (energy > 0.0) return loss / energy;
    return loss == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  };
  report.loss = problem.loss(layer.dequantized());
  report.relative_loss = relative(report.loss);
  const MatrixI8 rtn_codes = quantize(problem.weights(), layer.grid);
  report.loss_rtn = rtn_codes == layer.codes ? report.loss
                                             : problem.loss(dequantize(rtn_codes, layer.grid));
  report.relative_loss_rtn = relative(report.loss_rtn);
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
