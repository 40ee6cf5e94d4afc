// The result every rounding method returns: integer codes on a grid, and a report of what it cost.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "qround/grid.hpp"

namespace qround {

struct RoundingReport {
  std::string method;
  int bits = 0;
  Index group_size = 0;  // 0 = per row (or per tensor)
  bool symmetric = false;
  std::string scale_search;
  double loss = 0.0;               // ‖X Wᵀ − X̃ Ŵᵀ‖² of the result
  double loss_rtn = 0.0;           // the same for round-to-nearest on the same grid
  double relative_loss = 0.0;      // loss / ‖X Wᵀ‖²
  double relative_loss_rtn = 0.0;
  double seconds = 0.0;
  int iterations = 0;
  std::vector<std::pair<int, double>> loss_curve;  // (iteration, loss), sampled
  std::vector<std::string> notes;  // soft outcomes: damping raised, not converged, …
};

struct QuantizedLayer {
  MatrixI8 codes;  // out × in, inside [grid.qmin(), grid.qmax()]
  Grid grid;
  RoundingReport report;

  MatrixF dequantized() const { return dequantize(codes, grid); }
};

}  // namespace qround
