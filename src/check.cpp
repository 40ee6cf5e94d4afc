// The inference check: packed kernel vs the float simulation of the quantized layer.
#include "qround/check.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "qround/error.hpp"

namespace qround {
namespace {

void require_same_layer(const PackedMatrix& packed, const QuantizedLayer& layer) {
  const Grid& a = packed.grid();
  const Grid& b = layer.grid;
  const bool same = a.bits == b.bits && a.symmetric == b.symmetric && a.rows == b.rows &&
                    a.cols == b.cols && a.group_size == b.group_size && a.scales == b.scales &&
                    a.zeros == b.zeros && a.exponent.size() == b.exponent.size() &&
                    (a.exponent.size() == 0 || a.exponent == b.exponent) &&
                    layer.codes.rows() == packed.rows() && layer.codes.cols() == packed.cols() &&
                    packed.unpack_codes() == layer.codes;
  if (!same)
    throw InvalidArgument(
        fmt::format("check: the packed {}×{} matrix was not built from this "
                    "{}×{} quantized layer (codes or grid differ)",
                    packed.rows(), packed.cols(), layer.codes.rows(), layer.codes.cols()));
}

CheckResult run_check(const PackedMatrix& packed, const QuantizedLayer& layer, const MatrixFRef& x,
                      const MatrixFRef* w_float, const CheckOptions& options) {
  options.validate();
  require_same_layer(packed, layer);
  if (x.cols() != packed.cols())
    throw InvalidArgument(fmt::format("check: inputs are {}×{}, expected tokens × {}", x.rows(),
                                      x.cols(), packed.cols()));
  if (x.rows() == 0)
    throw InvalidArgument(
        fmt::format("check: inputs are 0×{} (no tokens); expected at least one token × {}",
                    x.cols(), packed.cols()));
  if (w_float != nullptr && (w_float->rows() != packed.rows() || w_float->cols() != packed.cols()))
    throw InvalidArgument(fmt::format("check: float weights are {}×{}, expected {}×{}",
                                      w_float->rows(), w_float->cols(), packed.rows(),
                                      packed.cols()));
  if (options.act_bits == 8 && !packed.is_uniform())
    throw InvalidArgument(
        "check: the grid has NUPES exponents, which the integer path cannot "
        "run; use act_bits = 32 (the float-activation path)");
  CheckResult r;
  r.isa = options.act_bits == 8 ? active_isa() : Isa::kScalar;  // float path: portable code
  r.act_bits = options.act_bits;
  r.tokens = x.rows();
  r.rows = packed.rows();
  r.cols = packed.cols();

  const MatrixF kernel_y = options.act_bits == 8 ? qgemm(packed, x, options.qgemm)
                                                 : qgemm_float(packed, x, options.qgemm);
  const MatrixD x_sim = options.act_bits == 8 ? MatrixD(fake_quant_activations(x).cast<double>())
                                              : MatrixD(x.cast<double>());
  const MatrixD w_sim = layer.dequantized().cast<double>();
  const MatrixD y_sim = x_sim * w_sim.transpose();
  const MatrixD y_kernel = kernel_y.cast<double>();

  r.max_abs_err = (y_kernel - y_sim).cwiseAbs().maxCoeff();
  const double sim_norm = y_sim.norm();
  r.rel_err = sim_norm > 0 ? (y_kernel - y_sim).norm() / sim_norm : 0.0;
  r.sqnr_int_vs_sim_db = sqnr_db(y_sim, y_kernel);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  r.sqnr_int_vs_float_db = r.sqnr_sim_vs_float_db = nan;
  if (w_float != nullptr) {
    const MatrixD y_float = x.cast<double>() * w_float->cast<double>().transpose();
    r.sqnr_int_vs_float_db = sqnr_db(y_float, y_kernel);
    r.sqnr_sim_vs_float_db = sqnr_db(y_float, y_sim);
  }
  return r;
}

}  // namespace

void CheckOptions::validate() const {
  if (act_bits != 8 && act_bits != 32)
    throw InvalidArgument(
        fmt::format("check act_bits = {}: expected 8 (integer path) or 32 "
                    "(float activations)",
                    act_bits));
  qgemm.validate();
}

double sqnr_db(const MatrixDRef& signal, const MatrixDRef& approx) {
  if (signal.rows() != approx.rows() || signal.cols() != approx.cols())
    throw InvalidArgument(fmt::format("sqnr: {}×{} vs {}×{}", signal.rows(), signal.cols(),
                                      approx.rows(), approx.cols()));
  const double s = signal.squaredNorm(), n = (signal - approx).squaredNorm();
  if (n == 0.0) return std::numeric_limits<double>::infinity();
  if (s == 0.0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(s / n);
}

CheckResult check(const PackedMatrix& packed, const QuantizedLayer& layer, const MatrixFRef& x,
                  const MatrixFRef& w_float, const CheckOptions& options) {
  return run_check(packed, layer, x, &w_float, options);
}

CheckResult check(const PackedMatrix& packed, const QuantizedLayer& layer, const MatrixFRef& x,
                  const CheckOptions& options) {
  return run_check(packed, layer, x, nullptr, options);
}

}  // namespace qround
