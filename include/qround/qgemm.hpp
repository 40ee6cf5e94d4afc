// Matrix products with packed weights: Y = X Ŵᵀ, X tokens × in (f32, token-major), Y tokens × out.
//
// Integer path (qgemm): each token is quantized to int8 (symmetric, dynamic: scale a_t =
// max_k |x_tk| / 127, xq = clamp(round_half_away(x / a_t), −127, 127); a zero token gets a_t = 0),
// the kernel accumulates Σ_k d_rk · xq_tk exactly in int32 per (token, row, group), then
//   y_tr = a_t · Σ_g s_rg · acc_trg   (f32).
// Works for the int8 (W8A8) and int4 (W4A8) containers of uniform grids; NUPES grids are rejected.
// Float-activation path (qgemm_float): weights dequantized on the fly, f32 accumulation; handles
// every grid including NUPES (W4A16/W8A16-style checks).
// Work is split over blocks of output rows (and over tokens for large batches) with OpenMP; each
// output is computed by one thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include "qround/packed.hpp"
#include "qround/types.hpp"

namespace qround {

// Per-token int8 activations: x_tk ≈ scales[t] · codes(t, k), codes in [−127, 127].
struct QuantizedActivations {
  MatrixI8 codes;
  VectorF scales;
};

// The kernel's activation quantizer (throws InvalidArgument on non-finite input).
QuantizedActivations quantize_activations(const MatrixFRef& x);
// scales[t] · codes(t, k) as floats: what the integer path sees, for float simulations.
MatrixF fake_quant_activations(const MatrixFRef& x);

struct QgemmOptions {
  int threads = 0;  // 0 = OpenMP default
  void validate() const;
};

// Integer path. x must be tokens × packed.cols(); returns tokens × packed.rows().
MatrixF qgemm(const PackedMatrix& packed, const MatrixFRef& x, const QgemmOptions& options = {});
// Same into a caller buffer: y[t * ldy + r] for r < rows; nothing else in y is written.
void qgemm_into(const PackedMatrix& packed, const MatrixFRef& x, float* y, Index ldy,
                const QgemmOptions& options = {});

// Raw exact int32 group accumulators Σ_{k ∈ g} d_rk · xq_tk, as tokens × (rows · groups) with
// column r · groups + g. The _into form writes acc[t * ld_acc + r * groups + g] only.
MatrixI32 qgemm_accumulators(const PackedMatrix& packed, const QuantizedActivations& xq,
                             const QgemmOptions& options = {});
void qgemm_accumulators_into(const PackedMatrix& packed, const QuantizedActivations& xq,
                             std::int32_t* acc, Index ld_acc, const QgemmOptions& options = {});

// Float-activation path: Y = X · dequantized(Ŵ)ᵀ with f32 accumulation, any grid.
MatrixF qgemm_float(const PackedMatrix& packed, const MatrixFRef& x,
                    const QgemmOptions& options = {});

}  // namespace qround
