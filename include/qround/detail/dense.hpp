// Dense double-precision products for Hessian-form statistics: C += A·B with A and B read from
// float or double matrices through strided views (so XᵀX needs no transposed or converted copy),
// blocked for the caches and multi-threaded (OpenMP) over output tiles.
//
// Every output element is accumulated in a fixed order (k in blocks of 256, each block summed from
// zero and then added to C), whichever thread computes it: results do not depend on the thread
// count. Products of floats are exact in double, so XᵀX carries only the rounding of the sums.
// The inner kernel is the widest the CPU and OS support (AVX-512, AVX2 or portable; QROUND_ISA=
// scalar|avx2 caps it); results of different kernels may differ in the last bits.
#pragma once

#include <string>
#include <vector>

#include "qround/isa.hpp"
#include "qround/types.hpp"

namespace qround::detail {

// Element (r, c) is at data[r·row_stride + c·col_stride]; exactly one of f32 / f64 is set.
struct DenseView {
  const float* f32 = nullptr;
  const double* f64 = nullptr;
  Index rows = 0, cols = 0, row_stride = 0, col_stride = 0;

  DenseView transposed() const { return {f32, f64, cols, rows, col_stride, row_stride}; }
};

// Views borrow the matrix's memory: pass a named matrix, not an expression (an expression would be
// evaluated into a temporary that dies with the call).
DenseView view(const MatrixFRef& m);
DenseView view(const MatrixDRef& m);

// c (a.rows × b.cols, row-major) += a · b. With `upper_only`, tiles lying entirely below the
// diagonal are skipped: entries (i, j ≥ i) are exact, entries below may be left unchanged.
void gemm_accumulate(const DenseView& a, const DenseView& b, Eigen::Ref<MatrixD> c,
                     bool upper_only = false);
// a · b as a new matrix.
MatrixD multiply(const DenseView& a, const DenseView& b);
// Σ_j (a·b)_ij · d_ij for every row i, without forming a·b (d is a.rows × b.cols, double). This is
// the loss Σ_i Δ_i H Δ_iᵀ at the cost of the product alone.
VectorD rowwise_dot_of_product(const DenseView& a, const DenseView& b, const MatrixDRef& d);
// h (n × n) += xᵀx for x tokens × n: one triangle computed, then mirrored (h stays symmetric).
void syrk_accumulate(const DenseView& x, Eigen::Ref<MatrixD> h);
// h(i, j) = h(j, i) for i > j.
void mirror_upper_to_lower(Eigen::Ref<MatrixD> h);

// The name of the inner kernel in use ("avx512", "avx2" or "scalar"), for benchmarks and
// `qround info`.
const char* dense_kernel_name();
// The same choice as the ISA family it belongs to (Isa::kScalar, kAvx2 or kAvx512Vnni), so that
// other dense float code (detail::gemm_sub) follows it without comparing names.
Isa dense_kernel_isa();

// Kernels this build can run here, narrowest first ("scalar", then "avx2", "avx512").
std::vector<std::string> dense_kernels();

// Forces one of dense_kernels() while alive (tests compare every kernel in one process); throws
// InvalidArgument for another name. Not meant to be used while products run on other threads.
class ScopedDenseKernel {
 public:
  explicit ScopedDenseKernel(const std::string& name);
  ~ScopedDenseKernel();
  ScopedDenseKernel(const ScopedDenseKernel&) = delete;
  ScopedDenseKernel& operator=(const ScopedDenseKernel&) = delete;

 private:
  const void* previous_ = nullptr;
};

}  // namespace qround::detail
