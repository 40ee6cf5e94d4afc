// The grid options every command shares: --bits, --group-size, --symmetric, --scale-search and
// --format (a ggml storage format, which implies the other three).
#pragma once

#include "args.hpp"
#include "qround/grid.hpp"

namespace qround::cli {

// Takes the grid options from `args`. With --format, --bits / --group-size / --symmetric may be
// given only when they agree with the format, the scale search defaults to hessian and mse is
// refused; any disagreement is a UsageError naming both sides.
GridSpec take_grid_spec(Args& args, int default_bits = 4, int default_group_size = 128);

}  // namespace qround::cli
