// LayerProblem: loss, gradient and statistics against naive double-precision references with the
// activations explicit, finite differences, batching independence and thread-count determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "qround/error.hpp"
#include "qround/memory_limit.hpp"
#include "qround/problem.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {
namespace {

using testing::random_matrix;

// Output i of token t: Σ_j x(t, j) a(i, j), in double.
double output(const MatrixF& x, Index t, const MatrixF& a, Index i) {
  double y = 0;
  for (Index j = 0; j < a.cols(); ++j) y += double(x(t, j)) * a(i, j);
  return y;
}

// ‖X_a Aᵀ − X_b Bᵀ‖²_F per output row, with plain loops in double.
std::vector<double> naive_row_losses(const MatrixF& xa, const MatrixF& a, const MatrixF& xb,
                                     const MatrixF& b) {
  std::vector<double> out(static_cast<size_t>(a.rows()), 0.0);
  for (Index i = 0; i < a.rows(); ++i)
    for (Index t = 0; t < xa.rows(); ++t) {
      const double d = output(xa, t, a, i) - output(xb, t, b, i);
      out[static_cast<size_t>(i)] += d * d;
    }
  return out;
}

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// ∂/∂B of ‖X_a Aᵀ − X_b Bᵀ‖²: 2 (B X_bᵀ − A X_aᵀ) X_b, with loops.
MatrixD naive_gradient(const MatrixF& xa, const MatrixF& a, const MatrixF& xb, const MatrixF& b) {
  MatrixD g = MatrixD::Zero(b.rows(), b.cols());
  for (Index i = 0; i < b.rows(); ++i)
    for (Index t = 0; t < xa.rows(); ++t) {
      const double d = output(xb, t, b, i) - output(xa, t, a, i);
      for (Index j = 0; j < b.cols(); ++j) g(i, j) += 2.0 * d * xb(t, j);
    }
  return g;
}

MatrixD naive_gram(const MatrixF& a, const MatrixF& b) {
  MatrixD g = MatrixD::Zero(a.cols(), b.cols());
  for (Index t = 0; t < a.rows(); ++t)
    for (Index i = 0; i < a.cols(); ++i)
      for (Index j = 0; j < b.cols(); ++j) g(i, j) += double(a(t, i)) * b(t, j);
  return g;
}

double max_abs(const MatrixD& m) { return m.cwiseAbs().maxCoeff(); }

struct Case {
  MatrixF w, w_hat, x, x_tilde;
};

Case make_case(Index out, Index in, Index tokens, std::uint64_t seed) {
  Case c;
  c.w = random_matrix(out, in, seed, 0.1);
  c.w_hat = c.w + random_matrix(out, in, seed + 1, 0.01);
  c.x = testing::llm_like_activations(tokens, in, seed + 2);
  c.x_tilde = c.x + random_matrix(tokens, in, seed + 3, 0.05);
  return c;
}

TEST(LayerProblem, LossAndGradientMatchNaiveReference) {
  const Case c = make_case(7, 19, 53, 1);
  LayerProblem p(c.w);
  p.add_batch(c.x);
  const std::vector<double> rows = naive_row_losses(c.x, c.w, c.x, c.w_hat);
  const VectorD got_rows = p.row_losses(c.w_hat);
  for (Index i = 0; i < c.w.rows(); ++i)
    EXPECT_NEAR(got_rows[i], rows[static_cast<size_t>(i)], 1e-9 * rows[static_cast<size_t>(i)]);
  EXPECT_NEAR(p.loss(c.w_hat), sum(rows), 1e-10 * sum(rows));
  const double energy = sum(naive_row_losses(c.x, c.w, c.x, MatrixF::Zero(7, 19)));
  EXPECT_NEAR(p.output_energy(), energy, 1e-10 * energy);
  EXPECT_NEAR(p.relative_loss(c.w_hat), sum(rows) / energy, 1e-9 * sum(rows) / energy);
  EXPECT_EQ(p.baseline_loss(), 0.0);
  EXPECT_EQ(p.loss(c.w), 0.0);
  EXPECT_TRUE(p.target_residual().isZero(0.0));

  const MatrixD g_ref = naive_gradient(c.x, c.w, c.x, c.w_hat);
  const MatrixD g = p.gradient(c.w_hat).cast<double>();
  EXPECT_LE(max_abs(g - g_ref), 1e-5 * max_abs(g_ref));
  EXPECT_LE(max_abs(p.hessian() - naive_gram(c.x, c.x)), 1e-12 * max_abs(p.hessian()));
  EXPECT_EQ(p.tokens(), 53);
}

TEST(LayerProblem, AsymmetricTargetMatchesNaiveReference) {
  const Case c = make_case(6, 21, 47, 2);
  LayerProblem p(c.w);
  p.add_batch(c.x_tilde.topRows(20), c.x.topRows(20));
  p.add_batch(c.x_tilde.bottomRows(27), c.x.bottomRows(27));
  ASSERT_TRUE(p.has_target());
  // ‖X Wᵀ − X̃ Ŵᵀ‖²: float inputs into the float layer, quantized upstream into the candidate.
  const std::vector<double> rows = naive_row_losses(c.x, c.w, c.x_tilde, c.w_hat);
  const VectorD got_rows = p.row_losses(c.w_hat);
  for (Index i = 0; i < c.w.rows(); ++i)
    EXPECT_NEAR(got_rows[i], rows[static_cast<size_t>(i)], 1e-9 * rows[static_cast<size_t>(i)]);
  EXPECT_NEAR(p.loss(c.w_hat), sum(rows), 1e-10 * sum(rows));
  const double baseline = sum(naive_row_losses(c.x, c.w, c.x_tilde, c.w));
  EXPECT_NEAR(p.baseline_loss(), baseline, 1e-8 * baseline);
  EXPECT_NEAR(p.loss(c.w), baseline, 1e-8 * baseline);
  const double energy = sum(naive_row_losses(c.x, c.w, c.x, MatrixF::Zero(6, 21)));
  EXPECT_NEAR(p.output_energy(), energy, 1e-10 * energy);

  EXPECT_LE(max_abs(p.hessian() - naive_gram(c.x_tilde, c.x_tilde)), 1e-12 * max_abs(p.hessian()));
  EXPECT_LE(max_abs(p.cross() - naive_gram(c.x_tilde, c.x)), 1e-12 * max_abs(p.cross()));
  EXPECT_LE(max_abs(p.target_hessian() - naive_gram(c.x, c.x)), 1e-12 * max_abs(p.hessian()));

  const MatrixD g_ref = naive_gradient(c.x, c.w, c.x_tilde, c.w_hat);
  EXPECT_LE(max_abs(p.gradient(c.w_hat).cast<double>() - g_ref), 1e-5 * max_abs(g_ref));
  // At Ŵ = W the gradient is the target's linear term alone: 2R.
  const MatrixD g_at_w = naive_gradient(c.x, c.w, c.x_tilde, c.w);
  EXPECT_LE(max_abs(2.0 * p.target_residual() - g_at_w), 1e-8 * max_abs(g_at_w));
}

TEST(LayerProblem, GradientMatchesFiniteDifferences) {
  for (bool target : {false, true}) {
    SCOPED_TRACE(target ? "with target" : "plain");
    const Case c = make_case(4, 9, 30, 3);
    LayerProblem p(c.w);
    if (target)
      p.add_batch(c.x_tilde, c.x);
    else
      p.add_batch(c.x);
    const MatrixF g = p.gradient(c.w_hat);
    for (Index i = 0; i < c.w.rows(); ++i)
      for (Index j = 0; j < c.w.cols(); ++j) {
        // The loss is quadratic, so a central difference is exact but for rounding; the step
        // actually taken is what float can represent.
        MatrixF plus = c.w_hat, minus = c.w_hat;
        plus(i, j) += 0.0625f;
        minus(i, j) -= 0.0625f;
        const double h = double(plus(i, j)) - double(minus(i, j));
        const double fd = (p.loss(plus) - p.loss(minus)) / h;
        EXPECT_NEAR(g(i, j), fd, 1e-4 * std::max(1.0, std::fabs(fd))) << i << "," << j;
      }
  }
}

TEST(LayerProblem, HessianIndependentOfBatching) {
  // More than one 128-wide block and more tokens than one conversion chunk.
  const Index in = 150, tokens = 1300;
  const MatrixF x = testing::llm_like_activations(tokens, in, 4);
  const MatrixF w = random_matrix(3, in, 5);
  LayerProblem one(w), many(w);
  one.add_batch(x);
  Index t = 0;
  for (Index n : {1, 100, 3, 1030, 0, 7}) {
    many.add_batch(x.middleRows(t, n));
    t += n;
  }
  many.add_batch(x.bottomRows(tokens - t));
  EXPECT_EQ(many.tokens(), tokens);
  const double scale = max_abs(one.hessian());
  EXPECT_LE(max_abs(one.hessian() - many.hessian()), 1e-13 * scale);
  EXPECT_LE(max_abs(one.hessian() - naive_gram(x, x)), 1e-12 * scale);
  EXPECT_TRUE(one.hessian().isApprox(one.hessian().transpose(), 0.0));  // exactly symmetric
  const MatrixF w_hat = w + random_matrix(3, in, 6, 0.01);
  EXPECT_NEAR(one.loss(w_hat), many.loss(w_hat), 1e-11 * one.loss(w_hat));

  // With a target: the same for H, C and H_xx.
  const MatrixF xq = x + random_matrix(tokens, in, 8, 0.1);
  LayerProblem tone(w), tmany(w);
  tone.add_batch(xq, x);
  tmany.add_batch(xq.topRows(5), x.topRows(5));
  tmany.add_batch(xq.bottomRows(tokens - 5), x.bottomRows(tokens - 5));
  EXPECT_LE(max_abs(tone.cross() - tmany.cross()), 1e-13 * max_abs(tone.cross()));
  EXPECT_LE(max_abs(tone.target_hessian() - tmany.target_hessian()), 1e-13 * scale);
}

TEST(LayerProblem, CopiesBeforeTheFirstReadOfHAreIndependent) {
  // H is mirrored lazily: a copy taken between add_batch and the first read must still see the
  // whole symmetric matrix, and later batches must not leak between copies.
  const MatrixF x = random_matrix(40, 30, 21), y = random_matrix(25, 30, 22);
  LayerProblem a(random_matrix(3, 30, 23));
  a.add_batch(x);
  LayerProblem b = a;
  b.add_batch(y);
  const MatrixD hx = naive_gram(x, x);
  EXPECT_LE(max_abs(a.hessian() - hx), 1e-12 * max_abs(hx));
  EXPECT_LE(max_abs(b.hessian() - hx - naive_gram(y, y)), 1e-12 * max_abs(hx));
  EXPECT_EQ(a.hessian(), a.hessian().transpose());
  EXPECT_EQ(b.hessian(), b.hessian().transpose());
  EXPECT_EQ(a.tokens(), 40);
  EXPECT_EQ(b.tokens(), 65);
}

TEST(LayerProblem, RetainsActivationsInOrder) {
  const MatrixF x = random_matrix(10, 6, 9), xf = random_matrix(10, 6, 10);
  LayerProblem p(random_matrix(2, 6, 1), LayerProblemOptions{true});
  p.add_batch(x.topRows(4), xf.topRows(4));
  p.add_batch(x.bottomRows(6), xf.bottomRows(6));
  EXPECT_EQ(p.activations(), x);
  EXPECT_EQ(p.target_activations(), xf);
  LayerProblem q(random_matrix(2, 6, 1));
  q.add_batch(x);
  EXPECT_THROW(q.activations(), InvalidArgument);
}

#ifdef _OPENMP
TEST(LayerProblem, DeterministicAcrossThreadCounts) {
  // Large enough that every stage (statistics, loss, gradient, MSE search) runs multi-threaded.
  const Index out = 160, in = 450, tokens = 517;
  const MatrixF w = random_matrix(out, in, 11, 0.1);
  const MatrixF x = testing::llm_like_activations(tokens, in, 12);
  const MatrixF xq = x + random_matrix(tokens, in, 13, 0.05);
  const MatrixF w_hat = w + random_matrix(out, in, 14, 0.01);
  GridSpec spec = GridSpec::with_group_size(3, 64);
  spec.search = ScaleSearch::kMse;
  struct Result {
    MatrixD h, c;
    double loss, energy;
    MatrixF grad, scales;
    VectorD rows;
  };
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    LayerProblem p(w);
    p.add_batch(xq.topRows(300), x.topRows(300));
    p.add_batch(xq.bottomRows(tokens - 300), x.bottomRows(tokens - 300));
    Result r{p.hessian(),        p.cross(),         p.loss(w_hat),
             p.output_energy(),  p.gradient(w_hat), make_grid(p, spec).scales,
             p.row_losses(w_hat)};
    return r;
  };
  const int saved = omp_get_max_threads();
  const Result a = run(1), b = run(2), c = run(3);
  omp_set_num_threads(saved);
  for (const Result* r : {&b, &c}) {
    EXPECT_EQ(a.h, r->h);
    EXPECT_EQ(a.c, r->c);
    EXPECT_EQ(a.loss, r->loss);
    EXPECT_EQ(a.energy, r->energy);
    EXPECT_EQ(a.grad, r->grad);
    EXPECT_EQ(a.scales, r->scales);
    EXPECT_EQ(a.rows, r->rows);
  }
}
#endif

TEST(LayerProblem, FromHessianMatchesBatchesAndValidates) {
  const Case c = make_case(5, 12, 40, 15);
  LayerProblem batches(c.w);
  batches.add_batch(c.x);
  const LayerProblem given = LayerProblem::from_hessian(c.w, batches.hessian(), 40);
  EXPECT_EQ(given.tokens(), 40);
  EXPECT_EQ(given.loss(c.w_hat), batches.loss(c.w_hat));
  EXPECT_EQ(given.gradient(c.w_hat), batches.gradient(c.w_hat));

  MatrixD h = batches.hessian();
  EXPECT_THROW(LayerProblem::from_hessian(c.w, h.topRows(11), 40), InvalidArgument);
  EXPECT_THROW(LayerProblem::from_hessian(c.w, h, 0), InvalidArgument);
  EXPECT_THROW(LayerProblem::from_hessian(c.w, h, -3), InvalidArgument);
  MatrixD asym = h;
  asym(2, 5) += 1.0;
  EXPECT_THROW(LayerProblem::from_hessian(c.w, asym, 40), InvalidArgument);
  MatrixD nan = h;
  nan(3, 3) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(LayerProblem::from_hessian(c.w, nan, 40), InvalidArgument);
  MatrixD neg = h;
  neg(4, 4) = -1.0;
  EXPECT_THROW(LayerProblem::from_hessian(c.w, neg, 40), InvalidArgument);
}

// The message of the InvalidArgument `f` throws ("" if it throws nothing).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

// Regression (issue 15): the weights were copied before the emptiness check, and copying a
// 2^62 × 0 matrix loops 2^62 times over its empty rows.
TEST(LayerProblem, EmptyWeightsWithAHugeDimensionAreRefusedBeforeAnyCopy) {
  const float none = 0.0f;
  const Index huge = Index{1} << 62;
  const Eigen::Map<const MatrixF> tall(&none, huge, 0), wide(&none, 0, huge);
  EXPECT_NE(error_of([&] { LayerProblem p(tall); }).find("4611686018427387904×0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { LayerProblem p(wide); }).find("0×4611686018427387904"),
            std::string::npos);
}

// Sets the process's memory limit for one scope.
class ScopedMemoryLimit {
 public:
  explicit ScopedMemoryLimit(std::uint64_t bytes) { set_memory_limit(bytes, "the test's limit"); }
  ~ScopedMemoryLimit() { set_memory_limit(0); }
  ScopedMemoryLimit(const ScopedMemoryLimit&) = delete;
  ScopedMemoryLimit& operator=(const ScopedMemoryLimit&) = delete;
};

std::string memory_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const MemoryLimitError& e) {
    return e.what();
  }
  return "";
}

// Regression (issue 15): a 1 × 30000 layer allocated its 7.2 GB Hessian up front and a small
// machine answered std::bad_alloc. The cost is checked first, against one limit.
TEST(LayerProblem, AHessianOverTheMemoryLimitIsRefusedBeforeAllocating) {
  ScopedMemoryLimit limit(1 << 20);
  const MatrixF w = MatrixF::Zero(1, 1000);  // 8 000 000 bytes of Hessian + 4 000 of weights
  const std::string what = memory_error_of([&] { LayerProblem p(w); });
  for (const char* part :
       {"1×1000 layer", "1000×1000 Hessian", "8004000 bytes", "1048576 bytes", "the test's limit"})
    EXPECT_NE(what.find(part), std::string::npos) << part << " in: " << what;
  // Under the limit it is built; an asymmetric target's two more in × in matrices are not.
  const MatrixF small = random_matrix(4, 240, 3);  // 460 800 bytes of H, 3× that with a target
  LayerProblem p(small);
  const MatrixF x = random_matrix(8, 240, 4);
  EXPECT_NE(memory_error_of([&] { p.add_batch(x, x); }).find("asymmetric target"),
            std::string::npos);
  EXPECT_EQ(p.tokens(), 0);
  p.add_batch(x);
  EXPECT_EQ(p.tokens(), 8);
}

TEST(MemoryLimit, ParsesSizesAndTheEnvironment) {
  EXPECT_EQ(parse_memory_size("123456"), 123456u);
  EXPECT_EQ(parse_memory_size("64k"), 65536u);
  EXPECT_EQ(parse_memory_size("512M"), 512u << 20);
  EXPECT_EQ(parse_memory_size("4G"), std::uint64_t{4} << 30);
  EXPECT_EQ(parse_memory_size("1.5GiB"), std::uint64_t{3} << 29);
  EXPECT_EQ(parse_memory_size("2TB"), std::uint64_t{2} << 40);
  EXPECT_GT(parse_memory_size("50%"), 0u);
  for (const char* bad : {"", "x", "4Q", "4GG", "0", "-1", "200%", "nan", "1e400"})
    EXPECT_THROW(parse_memory_size(bad), InvalidArgument) << bad;
  EXPECT_GT(memory_limit(), 0u);
  ::setenv("QROUND_MAX_MEMORY", "3M", 1);
  EXPECT_EQ(memory_limit(), 3u << 20);
  EXPECT_NE(memory_limit_source().find("QROUND_MAX_MEMORY"), std::string::npos);
  {
    ScopedMemoryLimit limit(5 << 20);  // an explicit setting wins over the environment
    EXPECT_EQ(memory_limit(), 5u << 20);
  }
  ::setenv("QROUND_MAX_MEMORY", "lots", 1);
  EXPECT_THROW(memory_limit(), InvalidArgument);
  ::unsetenv("QROUND_MAX_MEMORY");
  EXPECT_NO_THROW(require_memory(1, "one byte"));
  EXPECT_THROW(require_memory(UINT64_MAX, "everything"), MemoryLimitError);
  EXPECT_EQ(bytes_for(std::uint64_t{1} << 40, std::uint64_t{1} << 40, 8), UINT64_MAX);
}

// Regression (issue 15): inputs of 1e37 gave statistics beyond the float range the methods
// compute in (GPTQ's float tiles turned them into Inf) and a result was written. Now the batch is
// refused, before anything is accumulated, with a NumericalError.
TEST(LayerProblem, StatisticsBeyondTheFloatRangeAreANumericalError) {
  const MatrixF w = random_matrix(4, 8, 16);
  const MatrixF huge = MatrixF::Constant(4, 8, 1e37f);
  const auto numerical_error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const NumericalError& e) {
      return e.what();
    }
    return "";
  };
  LayerProblem p(w);
  EXPECT_NE(numerical_error_of([&] { p.add_batch(huge); }).find("XᵀX overflows"),
            std::string::npos);
  EXPECT_EQ(p.tokens(), 0);
  EXPECT_TRUE(p.hessian().isZero());
  // Several batches that are each fine but overflow together: refused at the batch that would.
  const MatrixF big = MatrixF::Constant(8, 8, 1e18f);  // each batch adds 8e36 to diag(H)
  p.add_batch(big);
  p.add_batch(big);
  EXPECT_NE(numerical_error_of([&] { p.add_batch(big); }).find("(0, 0)"), std::string::npos);
  EXPECT_EQ(p.tokens(), 16);
  EXPECT_TRUE(p.hessian().allFinite());
  // The asymmetric target: either side.
  LayerProblem t(w);
  const MatrixF x = random_matrix(4, 8, 17);
  EXPECT_NE(numerical_error_of([&] { t.add_batch(huge, x); }).find("quantized inputs"),
            std::string::npos);
  EXPECT_NE(numerical_error_of([&] { t.add_batch(x, huge); }).find("float inputs"),
            std::string::npos);
  EXPECT_EQ(t.tokens(), 0);
  // A Hessian given directly.
  const MatrixD h = MatrixD::Identity(8, 8) * 1e76;
  EXPECT_NE(numerical_error_of([&] { LayerProblem::from_hessian(w, h, 4); }).find("(0, 0)"),
            std::string::npos);
}

TEST(LayerProblem, BadInputsNameTheProblem) {
  const MatrixF w = random_matrix(4, 8, 16);
  MatrixF nan_w = w;
  nan_w(1, 2) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { LayerProblem p(nan_w); }).find("non-finite"), std::string::npos);
  MatrixF inf_w = w;
  inf_w(3, 7) = -std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { LayerProblem p(inf_w); }).find("(3, 7)"), std::string::npos);
  EXPECT_NE(error_of([&] { LayerProblem p(MatrixF(0, 8)); }).find("0×8"), std::string::npos);

  LayerProblem p(w);
  EXPECT_NE(error_of([&] { p.loss(w); }).find("empty calibration"), std::string::npos);
  EXPECT_NE(error_of([&] { p.add_batch(MatrixF::Ones(5, 7)); }).find("5×7"), std::string::npos);
  MatrixF x = random_matrix(5, 8, 17);
  x(4, 0) = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { p.add_batch(x); }).find("calibration batch"), std::string::npos);
  EXPECT_EQ(p.tokens(), 0);  // nothing was accumulated from the rejected batch
  x(4, 0) = 0.0f;
  p.add_batch(x);
  EXPECT_NE(error_of([&] { p.loss(MatrixF::Zero(4, 9)); }).find("4×9"), std::string::npos);
  EXPECT_NE(error_of([&] { p.gradient(MatrixF::Zero(3, 8)); }).find("3×8"), std::string::npos);
  EXPECT_NE(error_of([&] { p.add_batch(x, x); }).find("already added"), std::string::npos);

  LayerProblem t(w);
  EXPECT_NE(error_of([&] { t.add_batch(x, x.topRows(4)); }).find("must match"), std::string::npos);
  t.add_batch(x, x);
  EXPECT_NE(error_of([&] { t.add_batch(x); }).find("asymmetric target"), std::string::npos);
}

}  // namespace
}  // namespace qround
