#include "qround/detail/dense_gemm.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

#include "kernels/dense_gemm_kernels.hpp"
#include "qround/detail/dense.hpp"

namespace qround::detail {
namespace {

// Eigen, in slices of at most kSlice products: within a slice Eigen's k-blocking cannot depend on
// its thread count, so the result does not either.
template <typename T>
void portable(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
  constexpr std::ptrdiff_t kSlice = 128;
  if (m == 0 || n == 0) return;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<Eigen::Matrix<T, -1, -1, Eigen::RowMajor>, 0, Stride> cm(c, m, n, Stride(ldc));
  for (std::ptrdiff_t k0 = 0; k0 < k; k0 += kSlice) {
    const std::ptrdiff_t kc = std::min(kSlice, k - k0);
    Eigen::Map<const Eigen::Matrix<T, -1, -1, Eigen::ColMajor>, 0, Stride> am(a + k0 * lda, m, kc,
                                                                              Stride(lda));
    Eigen::Map<const Eigen::Matrix<T, -1, -1, Eigen::RowMajor>, 0, Stride> bm(b + k0 * ldb, kc, n,
                                                                              Stride(ldb));
    cm.noalias() -= am * bm;
  }
}

// The same decision as the library's dense f64 products (detail::dense_kernel_name()): the kernel
// translation unit is built with AVX-512 F/BW/VL/DQ/VNNI (GCC may use any of them, e.g. kmovb is
// DQ), so it runs only where that whole set is usable; QROUND_ISA=scalar|avx2 and
// ScopedDenseKernel steer both alike.
bool use_avx512() { return std::strcmp(dense_kernel_name(), "avx512") == 0; }

// The AVX-512 kernels when compiled in (use_avx512() is false otherwise, so these never run).
#ifdef QROUND_HAVE_AVX512VNNI
constexpr auto simd_f32 = kernels::gemm_sub_f32_avx512;
constexpr auto simd_f64 = kernels::gemm_sub_f64_avx512;
#else
constexpr auto simd_f32 = portable<float>;
constexpr auto simd_f64 = portable<double>;
#endif

}  // namespace

void gemm_sub_portable(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda,
                       const float* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) {
  portable(c, ldc, a, lda, b, ldb, m, n, k);
}
void gemm_sub_portable(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda,
                       const double* b, std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n,
                       std::ptrdiff_t k) {
  portable(c, ldc, a, lda, b, ldb, m, n, k);
}

void gemm_sub(float* c, std::ptrdiff_t ldc, const float* a, std::ptrdiff_t lda, const float* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
  (use_avx512() ? simd_f32 : portable<float>)(c, ldc, a, lda, b, ldb, m, n, k);
}

void gemm_sub(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda, const double* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
  (use_avx512() ? simd_f64 : portable<double>)(c, ldc, a, lda, b, ldb, m, n, k);
}

const char* gemm_sub_path() { return use_avx512() ? "avx512" : "portable"; }

}  // namespace qround::detail
