// Shared helpers of the packed/qgemm/check tests: random grids and codes of a given shape.
#pragma once

#include <random>

#include "qround/grid.hpp"

namespace qround::testing_util {

// A grid with random scales in [0.01, 0.1) and random zero points; group 0 = per row (a group
// larger than cols becomes one group per row, as GridSpec::effective_group_size does).
inline Grid make_test_grid(Index rows, Index cols, int bits, bool symmetric, Index group,
                           std::mt19937& rng) {
  Grid g;
  g.bits = bits;
  g.symmetric = symmetric;
  g.restricted = symmetric && bits == 8;
  g.rows = rows;
  g.cols = cols;
  g.group_size = group == 0 || group > cols ? cols : group;
  g.granularity = group == 0 ? Granularity::kPerRow : Granularity::kPerGroup;
  const Index groups = (cols + g.group_size - 1) / g.group_size;
  std::uniform_real_distribution<float> s(0.01f, 0.1f);
  std::uniform_int_distribution<int> z(g.qmin(), g.qmax());
  g.scales.resize(rows, groups);
  g.zeros = MatrixI32::Zero(rows, groups);
  for (Index r = 0; r < rows; ++r)
    for (Index k = 0; k < groups; ++k) {
      g.scales(r, k) = s(rng);
      if (!symmetric) g.zeros(r, k) = z(rng);
    }
  return g;
}

inline MatrixI8 random_codes(const Grid& g, std::mt19937& rng) {
  std::uniform_int_distribution<int> q(g.qmin(), g.qmax());
  MatrixI8 c(g.rows, g.cols);
  for (Index r = 0; r < g.rows; ++r)
    for (Index k = 0; k < g.cols; ++k) c(r, k) = static_cast<std::int8_t>(q(rng));
  return c;
}

}  // namespace qround::testing_util
