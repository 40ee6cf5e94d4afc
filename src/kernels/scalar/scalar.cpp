// Portable kernels: plain loops over the canonical layout (the production fallback).
#include <cstdint>
#include <cstring>

#include "../epilogue.hpp"
#include "../params.hpp"

namespace qround::kernels {

void qgemm_int8_scalar(const QgemmParams& p) noexcept {
  for (std::int64_t b = p.block_begin; b < p.block_end; ++b) {
    for (std::int64_t t = p.token_begin; t < p.token_end; ++t) {
      const std::uint8_t* w = p.weights + b * p.block_bytes;
      const std::int8_t* x = p.xq + t * p.kp;
      float out[kBlockRows] = {};
      for (std::int64_t g = 0; g < p.groups; ++g) {
        const std::int64_t steps = g + 1 < p.groups ? p.group_steps : p.last_group_steps;
        std::int32_t acc[kBlockRows] = {};
        for (std::int64_t s = 0; s < steps; ++s, w += kStepBytes, x += kInt8StepK)
          for (int r = 0; r < kBlockRows; ++r)
            for (int i = 0; i < kInt8StepK; ++i)
              acc[r] += static_cast<std::int8_t>(w[r * 4 + i]) * x[i];
        finish_group(p, b, t, g, acc, out);
      }
      store_outputs(p, b, t, out);
    }
  }
}

void qgemm_int4_scalar(const QgemmParams& p) noexcept {
  for (std::int64_t b = p.block_begin; b < p.block_end; ++b) {
    for (std::int64_t t = p.token_begin; t < p.token_end; ++t) {
      const std::uint8_t* w = p.weights + b * p.block_bytes;
      const std::int8_t* x = p.xq + t * p.kp;
      float out[kBlockRows] = {};
      for (std::int64_t g = 0; g < p.groups; ++g) {
        const std::int64_t steps = g + 1 < p.groups ? p.group_steps : p.last_group_steps;
        std::int32_t acc[kBlockRows] = {};
        for (std::int64_t s = 0; s < steps; ++s, w += kStepBytes, x += kInt4StepK)
          for (int r = 0; r < kBlockRows; ++r)
            for (int i = 0; i < 4; ++i) {
              const std::uint8_t byte = w[r * 4 + i];
              acc[r] += (byte & 0xF) * x[i] + (byte >> 4) * x[4 + i];
            }
        subtract_offsets(p, b, t, g, acc);
        finish_group(p, b, t, g, acc, out);
      }
      store_outputs(p, b, t, out);
    }
  }
}

}  // namespace qround::kernels
