// Public entry of the packed matrix products: validation, activation quantization, work split,
// dispatch to the per-ISA kernels; and the float-activation path.
#include "qround/detail/threads.hpp"
#include "qround/qgemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/dispatch.hpp"
#include "qround/detail/aligned.hpp"
#include "qround/error.hpp"
#include "qround/isa.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {
namespace {

using kernels::kBlockRows;

int thread_count(const QgemmOptions& o) { return detail::resolve_threads(o.threads); }

void check_inputs(const PackedMatrix& packed, Index x_rows, Index x_cols, const char* what) {
  if (packed.rows() == 0)
    throw InvalidArgument(fmt::format("{}: the packed matrix is empty", what));
  if (x_cols != packed.cols())
    throw InvalidArgument(
        fmt::format("{}: activations are {}×{}, expected tokens × {} (the packed "
                    "matrix is {}×{})",
                    what, x_rows, x_cols, packed.cols(), packed.rows(), packed.cols()));
}

void require_integer_path(const PackedMatrix& packed, const char* what) {
  if (!packed.is_uniform())
    throw InvalidArgument(fmt::format(
        "{}: the integer path needs a uniform grid, but this one has NUPES exponents (its levels "
        "are not integers times a scale); use qgemm_float",
        what));
}

std::int8_t quantize_one(float x, float scale) {
  if (scale == 0.0f) return 0;
  const float q = std::round(x / scale);
  return static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
}

// Activations in the kernel's form: zero-padded rows of kp int8, group sums, scales.
struct KernelActivations {
  detail::AlignedVector<std::int8_t> xq;
  detail::AlignedVector<std::int32_t> xsum;
  const float* scales = nullptr;
  Index tokens = 0, kp = 0;
};

KernelActivations prepare(const PackedMatrix& packed, const QuantizedActivations& a) {
  KernelActivations k;
  k.tokens = a.codes.rows();
  k.kp = packed.padded_cols();
  const Index groups = packed.groups(), gs = packed.group_size(), cols = packed.cols();
  k.xq.assign(static_cast<std::size_t>(k.tokens * k.kp), 0);
  k.xsum.assign(static_cast<std::size_t>(k.tokens * groups), 0);
  for (Index t = 0; t < k.tokens; ++t) {
    std::int8_t* dst = k.xq.data() + t * k.kp;
    std::int32_t* sums = k.xsum.data() + t * groups;
    for (Index c = 0; c < cols; ++c) {
      dst[c] = a.codes(t, c);
      sums[c / gs] += a.codes(t, c);
    }
  }
  k.scales = a.scales.data();
  return k;
}

void run_integer(const PackedMatrix& packed, const KernelActivations& a, float* y, Index ldy,
                 std::int32_t* acc, Index ld_acc, const QgemmOptions& options) {
  const auto pair = kernels::kernels_for(active_isa());
  const kernels::QgemmKernel kernel =
      packed.container() == Container::kInt8 ? pair.int8 : pair.int4;
  kernels::QgemmParams base{};
  base.weights = packed.data();
  base.block_bytes = packed.block_bytes();
  base.scales = packed.block_scales();
  base.row_sums = packed.block_row_sums();
  base.offsets = packed.block_offsets();
  base.common_offset = packed.container() == Container::kInt4 && packed.grid().symmetric ? 8 : -1;
  base.groups = packed.groups();
  const Index step = packed.step_inputs();
  const Index gs = std::min(packed.group_size(), packed.cols());
  base.last_group_steps = (packed.padded_cols() - (packed.groups() - 1) * gs) / step;
  base.group_steps = packed.groups() > 1 ? gs / step : base.last_group_steps;
  base.xq = a.xq.data();
  base.kp = a.kp;
  base.xsum = a.xsum.data();
  base.xscale = a.scales;
  base.rows = packed.rows();
  base.y = y;
  base.ldy = ldy;
  base.acc = acc;
  base.ld_acc = ld_acc;

  // Work items: chunks of row blocks (multiples of 4, the kernels' register blocking) × token
  // tiles. Each output belongs to exactly one item, so the split never changes a result.
  const int threads = thread_count(options);
  const Index blocks = packed.blocks();
  const Index token_tile = a.tokens > 256 ? 128 : std::max<Index>(a.tokens, 1);
  const Index token_chunks = (a.tokens + token_tile - 1) / token_tile;
  Index block_chunk = (blocks + 4 * threads - 1) / (4 * threads);
  block_chunk = std::max<Index>(4, (block_chunk + 3) / 4 * 4);
  const Index block_chunks = (blocks + block_chunk - 1) / block_chunk;
  const Index items = block_chunks * token_chunks;
  const bool parallel = threads > 1 && items > 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (Index item = 0; item < items; ++item) {
    kernels::QgemmParams p = base;
    detail::AlignedVector<std::uint8_t> scratch;
    if (token_tile > 1) {
      scratch.resize(kernels::kKernelScratchBytes);
      p.scratch = scratch.data();
    }
    const Index bc = item / token_chunks, tc = item % token_chunks;
    p.block_begin = bc * block_chunk;
    p.block_end = std::min(blocks, p.block_begin + block_chunk);
    p.token_begin = tc * token_tile;
    p.token_end = std::min(a.tokens, p.token_begin + token_tile);
    kernel(p);
  }
}

}  // namespace

void QgemmOptions::validate() const {
  if (threads < 0)
    throw InvalidArgument(fmt::format("qgemm threads = {} must be ≥ 0 (0 = default)", threads));
}

QuantizedActivations quantize_activations(const MatrixFRef& x) {
  require_finite(x, "activations");
  QuantizedActivations a;
  a.codes.resize(x.rows(), x.cols());
  a.scales.resize(x.rows());
  for (Index t = 0; t < x.rows(); ++t) {
    float amax = 0.0f;
    for (Index c = 0; c < x.cols(); ++c) amax = std::max(amax, std::fabs(x(t, c)));
    const float scale = amax / 127.0f;
    a.scales[t] = scale;
    for (Index c = 0; c < x.cols(); ++c) a.codes(t, c) = quantize_one(x(t, c), scale);
  }
  return a;
}

MatrixF fake_quant_activations(const MatrixFRef& x) {
  const QuantizedActivations a = quantize_activations(x);
  MatrixF out(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t)
    for (Index c = 0; c < x.cols(); ++c)
      out(t, c) = a.scales[t] * static_cast<float>(a.codes(t, c));
  return out;
}

void qgemm_into(const PackedMatrix& packed, const MatrixFRef& x, float* y, Index ldy,
                const QgemmOptions& options) {
  options.validate();
  check_inputs(packed, x.rows(), x.cols(), "qgemm");
  require_integer_path(packed, "qgemm");
  if (x.rows() == 0) return;
  if (y == nullptr || ldy < packed.rows())
    throw InvalidArgument(
        fmt::format("qgemm: output needs a buffer with ldy ≥ {} (got {})", packed.rows(), ldy));
  const QuantizedActivations q = quantize_activations(x);
  const KernelActivations a = prepare(packed, q);
  run_integer(packed, a, y, ldy, nullptr, 0, options);
}

MatrixF qgemm(const PackedMatrix& packed, const MatrixFRef& x, const QgemmOptions& options) {
  MatrixF y(x.rows(), packed.rows());
  qgemm_into(packed, x, y.data(), packed.rows(), options);
  return y;
}

void qgemm_accumulators_into(const PackedMatrix& packed, const QuantizedActivations& xq,
                             std::int32_t* acc, Index ld_acc, const QgemmOptions& options) {
  options.validate();
  check_inputs(packed, xq.codes.rows(), xq.codes.cols(), "qgemm_accumulators");
  require_integer_path(packed, "qgemm_accumulators");
  if (xq.scales.size() != xq.codes.rows())
    throw InvalidArgument(fmt::format("qgemm_accumulators: {} activation scales for {} tokens",
                                      xq.scales.size(), xq.codes.rows()));
  for (Index t = 0; t < xq.codes.rows(); ++t)
    for (Index c = 0; c < xq.codes.cols(); ++c)
      if (xq.codes(t, c) == -128)
        throw InvalidArgument(
            fmt::format("qgemm_accumulators: activation code −128 at ({}, {}); "
                        "the kernels take [−127, 127]",
                        t, c));
  if (xq.codes.rows() == 0) return;
  const Index width = packed.rows() * packed.groups();
  if (acc == nullptr || ld_acc < width)
    throw InvalidArgument(
        fmt::format("qgemm_accumulators: needs ld_acc ≥ rows · groups = {} "
                    "(got {})",
                    width, ld_acc));
  const KernelActivations a = prepare(packed, xq);
  run_integer(packed, a, nullptr, 0, acc, ld_acc, options);
}

MatrixI32 qgemm_accumulators(const PackedMatrix& packed, const QuantizedActivations& xq,
                             const QgemmOptions& options) {
  MatrixI32 acc(xq.codes.rows(), packed.rows() * packed.groups());
  qgemm_accumulators_into(packed, xq, acc.data(), acc.cols(), options);
  return acc;
}

// ---- float-activation path -------------------------------------------------------------------

namespace {

// Dequantizes block b (16 rows × kp inputs) from the packed layout into w (row-major, stride kp).
// Non-uniform (NUPES) levels factor as s^(1/a) · sign(d)|d|^(1/a): lut holds sign(d)|d|^(1/a) of
// each row at [row][d + 127] and eff_scales the s^(1/a) per [row][group].
void dequantize_block(const PackedMatrix& packed, Index b, const float* lut,
                      const float* eff_scales, float* w) {
  const Index kp = packed.padded_cols(), groups = packed.groups();
  const Index gs = std::min(packed.group_size(), packed.cols());
  const bool int8 = packed.container() == Container::kInt8;
  const std::uint8_t* bytes = packed.data() + b * packed.block_bytes();
  const Index steps = kp / packed.step_inputs();
  const Index step_k = packed.step_inputs();
  for (Index st = 0; st < steps; ++st, bytes += kernels::kStepBytes) {
    // A k-step never straddles groups (group sizes are whole k-steps), so g is per step.
    const Index g = std::min(st * step_k / gs, groups - 1);
    for (Index rr = 0; rr < kBlockRows; ++rr) {
      const Index side = (b * groups + g) * kBlockRows + rr;
      const float scale = lut ? eff_scales[rr * groups + g] : packed.block_scales()[side];
      const std::int32_t offset = packed.block_offsets()[side];
      float* out = w + rr * kp + st * step_k;
      for (Index i = 0; i < 4; ++i) {
        const std::uint8_t byte = bytes[rr * 4 + i];
        const std::int32_t d0 = int8 ? static_cast<std::int8_t>(byte) : (byte & 0xF) - offset;
        out[i] = scale * (lut ? lut[rr * 255 + d0 + 127] : static_cast<float>(d0));
        if (!int8) {
          const std::int32_t d1 = (byte >> 4) - offset;
          out[4 + i] = scale * (lut ? lut[rr * 255 + d1 + 127] : static_cast<float>(d1));
        }
      }
    }
  }
}

}  // namespace

MatrixF qgemm_float(const PackedMatrix& packed, const MatrixFRef& x, const QgemmOptions& options) {
  options.validate();
  check_inputs(packed, x.rows(), x.cols(), "qgemm_float");
  require_finite(x, "activations");
  const Grid& grid = packed.grid();
  const Index rows = packed.rows(), cols = packed.cols(), tokens = x.rows();
  const Index groups = packed.groups(), kp = packed.padded_cols();
  MatrixF y = MatrixF::Zero(tokens, rows);
  if (tokens == 0) return y;

  const bool uniform = packed.is_uniform();
  const int threads = thread_count(options);
  const Index blocks = packed.blocks();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && blocks > 1)
  for (Index b = 0; b < blocks; ++b) {
    const Index r0 = b * kBlockRows, live = std::min<Index>(kBlockRows, rows - r0);
    std::vector<float> w(static_cast<std::size_t>(kBlockRows * kp), 0.0f);
    std::vector<float> lut, eff_scales;
    if (!uniform) {
      lut.assign(kBlockRows * 255, 0.0f);
      eff_scales.assign(static_cast<std::size_t>(kBlockRows * groups), 0.0f);
      for (Index rr = 0; rr < live; ++rr) {
        const float inv_a = 1.0f / grid.power(r0 + rr);
        for (int d = -127; d <= 127; ++d)
          lut[static_cast<std::size_t>(rr * 255 + d + 127)] = std::copysign(
              std::pow(std::fabs(static_cast<float>(d)), inv_a), static_cast<float>(d));
        for (Index g = 0; g < groups; ++g)
          eff_scales[static_cast<std::size_t>(rr * groups + g)] =
              std::pow(grid.scales(r0 + rr, g), inv_a);
      }
    }
    dequantize_block(packed, b, uniform ? nullptr : lut.data(),
                     uniform ? nullptr : eff_scales.data(), w.data());
    // Dot products with 8 independent partial sums (vectorizable, fixed order → deterministic).
    for (Index t = 0; t < tokens; ++t) {
      const float* xr = x.data() + t * x.outerStride();
      for (Index rr = 0; rr < live; ++rr) {
        const float* wr = w.data() + rr * kp;
        float part[8] = {};
        Index k = 0;
        for (; k + 8 <= cols; k += 8)
          for (int u = 0; u < 8; ++u) part[u] += xr[k + u] * wr[k + u];
        for (; k < cols; ++k) part[k % 8] += xr[k] * wr[k];
        y(t, r0 + rr) = ((part[0] + part[1]) + (part[2] + part[3])) +
                        ((part[4] + part[5]) + (part[6] + part[7]));
      }
    }
  }
  return y;
}

}  // namespace qround
