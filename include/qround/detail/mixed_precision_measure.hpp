// measure_sensitivity() with the rounding step as a parameter, so tests can measure format
// candidates on grids they build themselves. measure_sensitivity() passes round_layer().
#pragma once

#include <functional>
#include <vector>

#include "qround/mixed_precision.hpp"

namespace qround::detail {

// Quantizes one layer at one candidate: called with the candidate's options (its grid spec is
// mixed_precision_grid / mixed_precision_format_grid of options.rounding.grid).
using RoundFn = std::function<QuantizedLayer(const LayerProblem&, const RoundLayerOptions&)>;

SensitivityTable measure_sensitivity(const std::vector<LayerSource>& layers,
                                     const SensitivityOptions& options, const ProgressFn& progress,
                                     const RoundFn& round);

}  // namespace qround::detail
