#include "qround/detail/dense_gemm.hpp"

#include <Eigen/Core>
#include <algorithm>

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

// The kernels per dense-kernel ISA (detail::dense_kernel_isa(): the library's dense f64 products
// choose it once per active ISA, so QROUND_ISA, ScopedIsaOverride and ScopedDenseKernel steer both
// alike). The avx512 kernel translation unit is built with AVX-512 F/BW/VL/DQ/VNNI (GCC may use
// any of them, e.g. kmovb is DQ), so it runs only where that whole set is usable; the avx2 one
// with AVX2/FMA/F16C. An ISA not compiled in never becomes the dense-kernel ISA.
template <typename T>
using GemmSubFn = void (*)(T*, std::ptrdiff_t, const T*, std::ptrdiff_t, const T*, std::ptrdiff_t,
                           std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t);

template <typename T>
struct GemmSubChoice {
  GemmSubFn<T> fn;
  const char* name;
};

template <typename T>
void portable_fn(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b,
                 std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
  portable(c, ldc, a, lda, b, ldb, m, n, k);
}

template <typename T, typename Avx2, typename Avx512>
const GemmSubChoice<T>& choose(Avx2 avx2, Avx512 avx512) {
  static_assert(static_cast<int>(Isa::kScalar) == 0 && static_cast<int>(Isa::kAvx2) == 1 &&
                    static_cast<int>(Isa::kAvx512Vnni) == 2,
                "the table is indexed by Isa");
  static const GemmSubChoice<T> table[] = {
      {portable_fn<T>, "portable"}, {avx2, avx2 == nullptr ? "portable" : "avx2"},
      {avx512, avx512 == nullptr ? "portable" : "avx512"}};
  const GemmSubChoice<T>& c = table[static_cast<int>(dense_kernel_isa())];
  return c.fn != nullptr ? c : table[0];
}

template <typename T>
const GemmSubChoice<T>& choice();

template <>
const GemmSubChoice<float>& choice<float>() {
#ifdef QROUND_HAVE_AVX2
  constexpr GemmSubFn<float> avx2 = kernels::gemm_sub_f32_avx2;
#else
  constexpr GemmSubFn<float> avx2 = nullptr;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
  constexpr GemmSubFn<float> avx512 = kernels::gemm_sub_f32_avx512;
#else
  constexpr GemmSubFn<float> avx512 = nullptr;
#endif
  return choose<float>(avx2, avx512);
}

template <>
const GemmSubChoice<double>& choice<double>() {
#ifdef QROUND_HAVE_AVX2
  constexpr GemmSubFn<double> avx2 = kernels::gemm_sub_f64_avx2;
#else
  constexpr GemmSubFn<double> avx2 = nullptr;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
  constexpr GemmSubFn<double> avx512 = kernels::gemm_sub_f64_avx512;
#else
  constexpr GemmSubFn<double> avx512 = nullptr;
#endif
  return choose<double>(avx2, avx512);
}

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
  choice<float>().fn(c, ldc, a, lda, b, ldb, m, n, k);
}

void gemm_sub(double* c, std::ptrdiff_t ldc, const double* a, std::ptrdiff_t lda, const double* b,
              std::ptrdiff_t ldb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
  choice<double>().fn(c, ldc, a, lda, b, ldb, m, n, k);
}

const char* gemm_sub_path() { return choice<float>().name; }

}  // namespace qround::detail
