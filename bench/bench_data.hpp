// Inputs the benchmarks share: seeded Gaussian matrices (qround's own generator, so the same data
// on every platform).
#pragma once

#include <cstdint>

#include "qround/detail/rng.hpp"
#include "qround/types.hpp"

namespace qround::bench {

inline MatrixF random_matrix(Index rows, Index cols, std::uint64_t seed, float scale) {
  detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = scale * static_cast<float>(rng.normal());
  return m;
}

}  // namespace qround::bench
