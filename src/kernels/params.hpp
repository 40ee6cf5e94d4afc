// Plain-old-data interface between the public qgemm entry and the per-ISA kernels. Included by
// kernel TUs compiled with ISA flags, so it may only use <cstdint>/<cstddef>: no Eigen, no STL.
//
// The weight layout the kernels read is the canonical PackedMatrix layout (see packed.hpp):
// blocks of 16 output rows; inside a block, k-steps of 64 bytes (4 inputs × 16 rows for int8,
// 8 inputs × 16 rows as nibbles for int4); groups are consecutive runs of k-steps.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qround::kernels {

constexpr int kBlockRows = 16;  // output rows interleaved in one block
constexpr int kStepBytes = 64;  // bytes of one k-step of one block
constexpr int kInt8StepK = 4;   // inputs per k-step, int8 container
constexpr int kInt4StepK = 8;   // inputs per k-step, int4 container

struct QgemmParams {
  // Weights (PackedMatrix internals).
  const std::uint8_t* weights;  // block b starts at weights + b * block_bytes
  std::int64_t block_bytes;
  const float* scales;           // [block][group][16] weight scales (0 on padded rows)
  const std::int32_t* row_sums;  // [block][group][16] Σ d over the group (int8 container)
  const std::int32_t* offsets;   // [block][group][16] nibble offset o, d = n − o (int4 container)
  std::int32_t common_offset;    // ≥ 0: every real row's offset equals it (symmetric int4: 8)
  std::int64_t groups;
  std::int64_t group_steps;       // k-steps of every group but the last (one group: = last)
  std::int64_t last_group_steps;  // k-steps of the last group (it may be shorter / padded)
  // Activations, quantized per token to int8 in [−127, 127], zero-padded to kp inputs.
  const std::int8_t* xq;     // tokens × kp
  std::int64_t kp;           // row stride of xq = padded input count
  const std::int32_t* xsum;  // tokens × groups, Σ xq over each group (int4 container)
  const float* xscale;       // per token
  // Work: row blocks [block_begin, block_end) × tokens [token_begin, token_end).
  std::int64_t block_begin, block_end, token_begin, token_end;
  std::int64_t rows;  // real output rows; padded rows of the last block are never written
  // Output: if acc != nullptr the raw exact group accumulators Σ_k d·xq are written to
  // acc[t * ld_acc + r * groups + g] and y is unused; otherwise
  // y[t * ldy + r] = xscale[t] · Σ_g scales[r][g] · acc[t][r][g] (f32).
  float* y;
  std::int64_t ldy;
  std::int32_t* acc;
  std::int64_t ld_acc;
};

using QgemmKernel = void (*)(const QgemmParams&) noexcept;

// Per-ISA entry points (defined only when the folder is compiled; see dispatch.cpp).
void qgemm_int8_scalar(const QgemmParams& p) noexcept;
void qgemm_int4_scalar(const QgemmParams& p) noexcept;
void qgemm_int8_avx2(const QgemmParams& p) noexcept;
void qgemm_int4_avx2(const QgemmParams& p) noexcept;
void qgemm_int8_avx512vnni(const QgemmParams& p) noexcept;
void qgemm_int4_avx512vnni(const QgemmParams& p) noexcept;

}  // namespace qround::kernels
