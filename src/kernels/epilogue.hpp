// Shared per-group epilogue on 16 int32 accumulators (scalar code, usable from every kernel TU:
// only <cstdint> and params.hpp).
#pragma once

#include <cstdint>

#include "params.hpp"

namespace qround::kernels {

inline std::int64_t side_index(const QgemmParams& p, std::int64_t block, std::int64_t group) {
  return (block * p.groups + group) * kBlockRows;
}

// int4 container: Σ n·x → Σ (n − o)·x = Σ n·x − o · Σ x.
inline void subtract_offsets(const QgemmParams& p, std::int64_t b, std::int64_t t, std::int64_t g,
                             std::int32_t* acc) noexcept {
  const std::int32_t* o = p.offsets + side_index(p, b, g);
  const std::int32_t xs = p.xsum[t * p.groups + g];
  for (int r = 0; r < kBlockRows; ++r) acc[r] -= o[r] * xs;
}

// Either store the raw accumulators of group g, or add s_rg · acc to the f32 row outputs.
inline void finish_group(const QgemmParams& p, std::int64_t b, std::int64_t t, std::int64_t g,
                         const std::int32_t* acc, float* out) noexcept {
  if (p.acc != nullptr) {
    for (int r = 0; r < kBlockRows; ++r) {
      const std::int64_t row = b * kBlockRows + r;
      if (row < p.rows) p.acc[t * p.ld_acc + row * p.groups + g] = acc[r];
    }
    return;
  }
  const float* s = p.scales + side_index(p, b, g);
  for (int r = 0; r < kBlockRows; ++r) out[r] += s[r] * static_cast<float>(acc[r]);
}

inline void store_outputs(const QgemmParams& p, std::int64_t b, std::int64_t t,
                          const float* out) noexcept {
  if (p.acc != nullptr) return;
  const float a = p.xscale[t];
  for (int r = 0; r < kBlockRows; ++r) {
    const std::int64_t row = b * kBlockRows + r;
    if (row < p.rows) p.y[t * p.ldy + row] = a * out[r];
  }
}

}  // namespace qround::kernels
