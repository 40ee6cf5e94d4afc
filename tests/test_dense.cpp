// The dense double products behind H = XᵀX and the loss: against naive loops on odd shapes, every
// view kind (float/double, transposed), the upper-only mode, both kernels and any thread count.
#include <gtest/gtest.h>

#include "qround/detail/dense.hpp"
#include "qround/detail/syrk.hpp"
#include "qround/error.hpp"
#include "test_helpers.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {
namespace {

using detail::DenseView;
using detail::view;

// Σ_k a(i, k) b(k, j) with plain loops, in long double.
MatrixD naive_product(const DenseView& a, const DenseView& b) {
  auto at = [](const DenseView& v, Index r, Index c) -> long double {
    const Index off = r * v.row_stride + c * v.col_stride;
    return v.f32 ? v.f32[off] : v.f64[off];
  };
  MatrixD c(a.rows, b.cols);
  for (Index i = 0; i < a.rows; ++i)
    for (Index j = 0; j < b.cols; ++j) {
      long double s = 0;
      for (Index k = 0; k < a.cols; ++k) s += at(a, i, k) * at(b, k, j);
      c(i, j) = static_cast<double>(s);
    }
  return c;
}

void expect_close(const MatrixD& got, const MatrixD& want, double rel) {
  ASSERT_EQ(got.rows(), want.rows());
  ASSERT_EQ(got.cols(), want.cols());
  const double scale = std::max(1e-300, want.cwiseAbs().maxCoeff());
  EXPECT_LE((got - want).cwiseAbs().maxCoeff(), rel * scale);
}

struct Shape {
  Index m, k, n;
};
// Edges of every block size: tiles of 8 × 24, k blocks of 256, row blocks of 96, column blocks
// of 2400 (the last one with a narrow k to stay fast).
constexpr Shape kShapes[] = {{1, 1, 1},     {7, 3, 23},    {8, 256, 24}, {9, 257, 25},
                             {97, 300, 50}, {33, 513, 71}, {5, 2, 2405}};

TEST(Dense, ProductsMatchNaiveLoopsForEveryViewKind) {
  for (const std::string& name : detail::dense_kernels()) {
    const detail::ScopedDenseKernel force(name);
    SCOPED_TRACE(detail::dense_kernel_name());
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << s.m << "x" << s.k << "x" << s.n);
      const MatrixF af = testing::random_matrix(s.m, s.k, 1);
      const MatrixF at = testing::random_matrix(s.k, s.m, 2);  // used transposed
      const MatrixD bd = testing::random_matrix(s.k, s.n, 3).cast<double>();
      const MatrixD bt = testing::random_matrix(s.n, s.k, 4).cast<double>();
      expect_close(detail::multiply(view(af), view(bd)), naive_product(view(af), view(bd)), 1e-13);
      const DenseView a_t = view(at).transposed(), b_t = view(bt).transposed();
      expect_close(detail::multiply(a_t, b_t), naive_product(a_t, b_t), 1e-13);
      // The fused row-wise dot with a third matrix equals the dot with the full product.
      const MatrixD d = testing::random_matrix(s.m, s.n, 5).cast<double>();
      const VectorD dots = detail::rowwise_dot_of_product(view(af), view(bd), d);
      const MatrixD full = naive_product(view(af), view(bd));
      for (Index i = 0; i < s.m; ++i) {
        const double want = full.row(i).dot(d.row(i));
        const double scale = full.row(i).cwiseAbs().dot(d.row(i).cwiseAbs());
        ASSERT_NEAR(dots[i], want, 1e-13 * scale) << i;
      }
      // Accumulates into what is there.
      MatrixD c = MatrixD::Constant(s.m, s.n, 2.5);
      detail::gemm_accumulate(a_t, view(bd), c);
      expect_close(c, naive_product(a_t, view(bd)).array() + 2.5, 1e-13);
    }
  }
}

TEST(Dense, SyrkIsExactlySymmetricAndMatchesNaive) {
  for (Index n : {1, 5, 24, 25, 130, 301}) {
    const MatrixF x = testing::llm_like_activations(260, n, static_cast<std::uint64_t>(n));
    MatrixD h = MatrixD::Zero(n, n);
    detail::syrk_accumulate(view(x), h);
    expect_close(h, naive_product(view(x).transposed(), view(x)), 1e-13);
    EXPECT_EQ(h, h.transpose()) << n;
    // The header-only adapter over column-major double matrices agrees.
    MatrixD h2 = MatrixD::Zero(n, n);
    const Eigen::MatrixXd xd = x.cast<double>();
    detail::accumulate_gram(h2, xd, xd, true);
    EXPECT_EQ(h, h2);
  }
}

TEST(Dense, UpperOnlyComputesTheUpperTriangle) {
  const MatrixF x = testing::random_matrix(40, 101, 5);
  MatrixD c = MatrixD::Constant(101, 101, -7.0);
  detail::gemm_accumulate(view(x).transposed(), view(x), c, /*upper_only=*/true);
  const MatrixD want = naive_product(view(x).transposed(), view(x)).array() - 7.0;
  for (Index i = 0; i < 101; ++i)
    for (Index j = i; j < 101; ++j) ASSERT_NEAR(c(i, j), want(i, j), 1e-11) << i << "," << j;
}

TEST(Dense, KernelsAgreeAndOverridesAreScoped) {
  const std::vector<std::string> names = detail::dense_kernels();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "scalar");
  const std::string automatic = detail::dense_kernel_name();
  {
    const detail::ScopedDenseKernel force("scalar");
    EXPECT_STREQ(detail::dense_kernel_name(), "scalar");
  }
  EXPECT_EQ(detail::dense_kernel_name(), automatic);
  EXPECT_THROW(detail::ScopedDenseKernel("amx"), InvalidArgument);
  const MatrixF x = testing::random_matrix(300, 77, 8);
  MatrixD reference = MatrixD::Zero(77, 77);
  {
    const detail::ScopedDenseKernel force("scalar");
    detail::syrk_accumulate(view(x), reference);
  }
  for (const std::string& name : names) {
    const detail::ScopedDenseKernel force(name);
    MatrixD h = MatrixD::Zero(77, 77);
    detail::syrk_accumulate(view(x), h);
    expect_close(h, reference, 1e-14);
  }
}

TEST(Dense, RejectsMismatchedShapes) {
  const MatrixF a = MatrixF::Ones(3, 4);
  const MatrixD b55 = MatrixD::Ones(5, 5), b44 = MatrixD::Ones(4, 4);
  MatrixD c(3, 5);
  EXPECT_THROW(detail::gemm_accumulate(view(a), view(b55), c), InvalidArgument);
  EXPECT_THROW(detail::gemm_accumulate(view(a), view(b44), c), InvalidArgument);
  EXPECT_THROW(detail::rowwise_dot_of_product(view(a), view(b44), b44), InvalidArgument);
}

#ifdef _OPENMP
TEST(Dense, BitIdenticalAcrossThreadCounts) {
  const MatrixF x = testing::llm_like_activations(700, 333, 6);
  const MatrixD b = testing::random_matrix(333, 290, 7).cast<double>();
  const int saved = omp_get_max_threads();
  std::vector<MatrixD> h, p;
  std::vector<VectorD> dots;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    MatrixD hh = MatrixD::Zero(333, 333);
    detail::syrk_accumulate(view(x), hh);
    h.push_back(hh);
    p.push_back(detail::multiply(view(x), view(b)));
    dots.push_back(detail::rowwise_dot_of_product(view(x).transposed(), view(x), hh));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(h[0], h[1]);
  EXPECT_EQ(h[0], h[2]);
  EXPECT_EQ(p[0], p[1]);
  EXPECT_EQ(p[0], p[2]);
  EXPECT_EQ(dots[0], dots[1]);
  EXPECT_EQ(dots[0], dots[2]);
}
#endif

}  // namespace
}  // namespace qround
