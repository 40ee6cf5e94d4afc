// The inference check: run the packed kernel on real inputs and compare it with the float
// simulation of the quantized layer, which models both quantizations — weights on their grid
// (dequantize(codes, grid)) and, on the integer path, activations fake-quantized per token exactly
// as the kernel does (fake_quant_activations) — computed in double. On the integer path the two
// must agree to float rounding (SQNR ≳ 100 dB); a lower number means a kernel or packing bug.
// The SQNR of either against the float layer X Wᵀ is the cost of quantization itself.
#pragma once

#include <string>

#include "qround/isa.hpp"
#include "qround/packed.hpp"
#include "qround/qgemm.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround {

struct CheckOptions {
  int act_bits = 8;  // 8: integer path (W8A8 / W4A8); 32: float-activation path (qgemm_float)
  QgemmOptions qgemm;
  void validate() const;
};

struct CheckResult {
  Isa isa = Isa::kScalar;  // kernels used (the float-activation path is portable code)
  int act_bits = 8;
  Index tokens = 0, rows = 0, cols = 0;
  double max_abs_err = 0.0;         // max |Y_kernel − Y_sim|
  double rel_err = 0.0;             // ‖Y_kernel − Y_sim‖ / ‖Y_sim‖
  double sqnr_int_vs_sim_db = 0.0;  // 10 log10(‖Y_sim‖² / ‖Y_kernel − Y_sim‖²); +inf if equal
  double sqnr_int_vs_float_db = 0.0;  // kernel vs X Wᵀ (NaN when no float weights were given)
  double sqnr_sim_vs_float_db = 0.0;  // simulation vs X Wᵀ (NaN when no float weights)
};

// `packed` must hold exactly `layer` (codes and grid), else InvalidArgument. x is tokens × in
// with at least one token (0 tokens: InvalidArgument).
CheckResult check(const PackedMatrix& packed, const QuantizedLayer& layer, const MatrixFRef& x,
                  const MatrixFRef& w_float, const CheckOptions& options = {});
CheckResult check(const PackedMatrix& packed, const QuantizedLayer& layer, const MatrixFRef& x,
                  const CheckOptions& options = {});

// 10 log10(‖signal‖² / ‖signal − approx‖²) in double; +inf when identical, −inf for zero signal.
double sqnr_db(const MatrixDRef& signal, const MatrixDRef& approx);

}  // namespace qround
