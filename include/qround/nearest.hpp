// Round-to-nearest: every weight to its nearest level of the grid. The baseline every other method
// must beat, and the reference they report against (RoundingReport::loss_rtn).
#pragma once

#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround {

// Grid from the spec's scale search, then nearest codes; the report carries the layer loss.
QuantizedLayer round_to_nearest(const LayerProblem& problem, const GridSpec& spec);
// Nearest codes on a given grid.
QuantizedLayer round_to_nearest(const LayerProblem& problem, const Grid& grid);

// Fills the report fields every method shares (shape of the grid, losses against the problem,
// RTN loss on the same grid). `seconds` and `iterations` are left to the caller.
void fill_report(RoundingReport& report, const LayerProblem& problem, const QuantizedLayer& layer,
                 const char* method, const GridSpec* spec);

}  // namespace qround
