// Portable kernels: plain loops over the canonical layout (the production fallback).
#include <cstdint>
#include <cstring>

#include "../epilogue.hpp"
#include "../params.hpp"

namespace qround::kernels {

namespace {

// One 64-byte k-step of a 16-row block: int8 holds 4 inputs per row, int4 holds 8 as nibbles
// (low nibble = inputs 0..3, high = 4..7).
struct Int8Step {
  static constexpr std::int64_t kInputs = kInt8StepK;
  static void accumulate(const std::uint8_t* w, const std::int8_t* x, std::int32_t* acc) {
    for (int r = 0; r < kBlockRows; ++r)
      for (int i = 0; i < kInt8StepK; ++i)
        acc[r] += static_cast<std::int8_t>(w[r * 4 + i]) * x[i];
  }
  static void finish(const QgemmParams&, std::int64_t, std::int64_t, std::int64_t,
                     std::int32_t*) {}
};

struct Int4Step {
  static constexpr std::int64_t kInputs = kInt4StepK;
  static void accumulate(const std::uint8_t* w, const std::int8_t* x, std::int32_t* acc) {
    for (int r = 0; r < kBlockRows; ++r)
      for (int i = 0; i < 4; ++i) {
        const std::uint8_t byte = w[r * 4 + i];
        acc[r] += (byte & 0xF) * x[i] + (byte >> 4) * x[4 + i];
      }
  }
  // Nibbles are stored with an offset (8, or the zero point): remove offset·Σx per group.
  static void finish(const QgemmParams& p, std::int64_t b, std::int64_t t, std::int64_t g,
                     std::int32_t* acc) {
    subtract_offsets(p, b, t, g, acc);
  }
};

template <typename Step>
void qgemm_scalar(const QgemmParams& p) noexcept {
  for (std::int64_t b = p.block_begin; b < p.block_end; ++b) {
    for (std::int64_t t = p.token_begin; t < p.token_end; ++t) {
      const std::uint8_t* w = p.weights + b * p.block_bytes;
      const std::int8_t* x = p.xq + t * p.kp;
      float out[kBlockRows] = {};
      for (std::int64_t g = 0; g < p.groups; ++g) {
        const std::int64_t steps = g + 1 < p.groups ? p.group_steps : p.last_group_steps;
        std::int32_t acc[kBlockRows] = {};
        for (std::int64_t s = 0; s < steps; ++s, w += kStepBytes, x += Step::kInputs)
          Step::accumulate(w, x, acc);
        Step::finish(p, b, t, g, acc);
        finish_group(p, b, t, g, acc, out);
      }
      store_outputs(p, b, t, out);
    }
  }
}

}  // namespace

void qgemm_int8_scalar(const QgemmParams& p) noexcept { qgemm_scalar<Int8Step>(p); }
void qgemm_int4_scalar(const QgemmParams& p) noexcept { qgemm_scalar<Int4Step>(p); }

}  // namespace qround::kernels
