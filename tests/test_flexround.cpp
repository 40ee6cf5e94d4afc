#include "qround/flexround.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "learned_rounding_data.hpp"
#include "qround/nearest.hpp"
#include "qround/round_layer.hpp"
#include "qround/scale_search.hpp"

namespace qround {
namespace {

using testdata::random_problem;

TEST(FlexRound, IterationZeroIsRoundToNearest) {
  const LayerProblem p = random_problem(20, 48, 200, 11);
  for (const GridSpec& spec : {GridSpec::with_group_size(3, 16), GridSpec::with_group_size(4, 0, true)}) {
    const Grid grid = make_grid(p, spec);
    FlexRoundOptions opt;
    opt.iterations = 0;
    const QuantizedLayer q = flexround(p, grid, opt);
    EXPECT_EQ(q.codes, quantize(p.weights(), grid));
    EXPECT_EQ(q.grid.scales, grid.scales);
    EXPECT_EQ(q.report.loss, q.report.loss_rtn);
    // The exposed objective at θ = 0 is RTN too, with the same loss up to float GEMM rounding.
    const FlexRoundEvaluation e = flexround_evaluate(p, grid, FlexRoundState::zeros(grid));
    EXPECT_EQ(e.codes, quantize(p.weights(), grid));
    EXPECT_EQ(e.w_hat, fake_quant(p.weights(), grid));
    EXPECT_NEAR(e.loss, q.report.loss_rtn, 1e-4 * q.report.loss_rtn);
  }
}

// Plain double reference of the straight-through surrogate: ⌊x⌉ is replaced by x + δ with the
// offset δ = ⌊x₀⌉ − x₀ frozen at the evaluation point (inside the clamp range; outside, the code
// is a constant), so its exact derivative is the STE gradient.
struct SurrogateRef {
  const LayerProblem& p;
  const Grid& grid;
  MatrixD offset;  // δ per weight, NaN where clamped
  MatrixD code0;   // clamped code at the base point

  SurrogateRef(const LayerProblem& problem, const Grid& g, const FlexRoundState& base)
      : p(problem), grid(g), offset(g.rows, g.cols), code0(g.rows, g.cols) {
    for (Index r = 0; r < g.rows; ++r)
      for (Index c = 0; c < g.cols; ++c) {
        const double x = x_of(base, r, c);
        const double t = std::round(x) + g.zeros(r, g.group_of(c));
        const bool inside = t >= g.qmin() && t <= g.qmax();
        offset(r, c) = inside ? std::round(x) - x : std::numeric_limits<double>::quiet_NaN();
        code0(r, c) = std::clamp<double>(t, g.qmin(), g.qmax());
      }
  }
  double s1(const FlexRoundState& s, Index r, Index c) const {
    const Index g = grid.group_of(c);
    return grid.scales(r, g) * std::exp(double(s.theta_s1(r, g)));
  }
  double x_of(const FlexRoundState& s, Index r, Index c) const {
    return p.weights()(r, c) /
           (s1(s, r, c) * std::exp(double(s.theta_s2(r, c))) * std::exp(double(s.theta_s3[r])));
  }
  double loss(const FlexRoundState& s) const {
    MatrixD delta(grid.rows, grid.cols);
    for (Index r = 0; r < grid.rows; ++r)
      for (Index c = 0; c < grid.cols; ++c) {
        const double z = grid.zeros(r, grid.group_of(c));
        const double q = std::isnan(offset(r, c)) ? code0(r, c) : x_of(s, r, c) + offset(r, c) + z;
        delta(r, c) = s1(s, r, c) * (q - z) - p.weights()(r, c);
      }
    return testdata::reference_loss(p, delta);
  }
};

void expect_close(double analytic, double numeric, double scale, const char* what, Index i) {
  EXPECT_NEAR(analytic, numeric, 2e-3 * std::fabs(numeric) + 1e-4 * scale) << what << " " << i;
}

void check_gradient(const LayerProblem& p, const Grid& grid, std::uint64_t seed) {
  FlexRoundState s = FlexRoundState::zeros(grid);
  s.theta_s1 = testdata::random_matrix(grid.rows, grid.groups(), seed, 0.05);
  s.theta_s2 = testdata::random_matrix(grid.rows, grid.cols, seed + 1, 0.2);
  s.theta_s3 = testdata::random_matrix(grid.rows, 1, seed + 2, 0.05).col(0);
  const FlexRoundEvaluation e = flexround_evaluate(p, grid, s);
  const SurrogateRef ref(p, grid, s);
  EXPECT_NEAR(e.loss, ref.loss(s), 1e-4 * ref.loss(s));
  auto fd = [&](float& theta) {
    return testdata::central_difference(theta, 1e-4, [&] { return ref.loss(s); });
  };
  const double scale = e.gradient.theta_s2.cwiseAbs().maxCoeff() +
                       e.gradient.theta_s1.cwiseAbs().maxCoeff();
  ASSERT_GT(scale, 0.0);
  for (Index r = 0; r < grid.rows; ++r) {
    for (Index g = 0; g < grid.groups(); ++g)
      expect_close(e.gradient.theta_s1(r, g), fd(s.theta_s1(r, g)), scale, "theta_s1", r);
    for (Index c = 0; c < grid.cols; ++c)
      expect_close(e.gradient.theta_s2(r, c), fd(s.theta_s2(r, c)), scale, "theta_s2", c);
    expect_close(e.gradient.theta_s3[r], fd(s.theta_s3[r]), scale, "theta_s3", r);
  }
}

TEST(FlexRound, GradientMatchesFiniteDifferencesOfTheSurrogate) {
  const LayerProblem p = random_problem(3, 12, 40, 21);
  check_gradient(p, make_grid(p, GridSpec::with_group_size(3, 4)), 5);       // asymmetric, groups
  check_gradient(p, make_grid(p, GridSpec::with_group_size(2, 0, true)), 6);  // symmetric, clamps
}

TEST(FlexRound, GradientWithAsymmetricTarget) {
  LayerProblem p(testdata::random_matrix(3, 10, 31, 0.1));
  const MatrixF xf = testdata::random_matrix(30, 10, 32);
  const MatrixF xq = xf + testdata::random_matrix(30, 10, 33, 0.1);
  p.add_batch(xq, xf);
  check_gradient(p, make_grid(p, GridSpec::with_group_size(3, 5)), 7);
}

TEST(FlexRound, LearnsAndStaysOnTheGrid) {
  const LayerProblem p = random_problem(24, 64, 256, 41);
  FlexRoundOptions opt;
  opt.iterations = 300;
  const QuantizedLayer q = flexround(p, GridSpec::with_group_size(3, 32), opt);
  EXPECT_LE(q.codes.cast<int>().maxCoeff(), q.grid.qmax());
  EXPECT_GE(q.codes.cast<int>().minCoeff(), q.grid.qmin());
  const double rtn = round_to_nearest(p, GridSpec::with_group_size(3, 32)).report.loss;
  EXPECT_LT(q.report.loss, 0.9 * rtn);
  EXPECT_EQ(q.report.loss_rtn, rtn);
  EXPECT_LE(q.report.loss, p.loss(fake_quant(p.weights(), q.grid)));  // RTN on the learned scales
  EXPECT_EQ(q.report.loss, p.loss(q.dequantized()));
  ASSERT_FALSE(q.report.loss_curve.empty());
  EXPECT_EQ(q.report.loss_curve.front().first, 0);
  EXPECT_EQ(q.report.loss_curve.back().first, 300);
  EXPECT_NEAR(q.report.loss_curve.front().second, rtn, 1e-4 * rtn);
  EXPECT_EQ(q.report.iterations, 300);
}

TEST(FlexRound, IdenticalForAnyThreadCount) {
  // Large enough (rows · in² ≥ 2^20) for the row blocks to be spread over threads.
  const LayerProblem p = random_problem(70, 128, 256, 51);
  FlexRoundOptions opt;
  opt.iterations = 20;
  opt.threads = 1;
  const QuantizedLayer a = flexround(p, GridSpec::with_group_size(4, 8), opt);
  opt.threads = 2;
  const QuantizedLayer b = flexround(p, GridSpec::with_group_size(4, 8), opt);
  opt.threads = 3;
  const QuantizedLayer c = flexround(p, GridSpec::with_group_size(4, 8), opt);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.grid.scales, b.grid.scales);
  EXPECT_EQ(a.report.loss_curve, b.report.loss_curve);
  EXPECT_EQ(a.codes, c.codes);
  EXPECT_EQ(a.report.loss_curve, c.report.loss_curve);
}

TEST(FlexRound, RejectsBadInput) {
  const LayerProblem p = random_problem(4, 8, 16, 61);
  const GridSpec spec = GridSpec::with_group_size(4, 0);
  auto with = [](auto edit) {
    FlexRoundOptions o;
    edit(o);
    return o;
  };
  EXPECT_THROW(flexround(p, spec, with([](auto& o) { o.iterations = -1; })), InvalidArgument);
  EXPECT_THROW(flexround(p, spec, with([](auto& o) { o.lr = 0.0; })), InvalidArgument);
  EXPECT_THROW(flexround(p, spec, with([](auto& o) { o.lr = std::nan(""); })), InvalidArgument);
  EXPECT_THROW(flexround(p, spec, with([](auto& o) { o.threads = -2; })), InvalidArgument);
  EXPECT_THROW(flexround(p, spec, with([](auto& o) { o.final_lr_fraction = 2; })),
               InvalidArgument);
  Grid power = make_grid(p, spec);
  power.exponent = VectorF::Constant(4, 0.5f);
  EXPECT_THROW(flexround(p, power), InvalidArgument);
  EXPECT_THROW(flexround(p, make_grid(random_problem(4, 9, 16, 62), spec)), InvalidArgument);
  LayerProblem empty(p.weights());
  EXPECT_THROW(flexround(empty, spec), InvalidArgument);
  EXPECT_THROW(flexround_evaluate(p, make_grid(p, spec), FlexRoundState{}), InvalidArgument);

  RoundLayerOptions ro;
  ro.method = Method::kFlexRound;
  ro.grid = spec;
  ro.iterations = 5;
  ro.params = {{"lr", "fast"}};
  EXPECT_THROW(round_layer(p, ro), InvalidArgument);
  ro.params = {{"lambda", "0.01"}};
  EXPECT_THROW(round_layer(p, ro), InvalidArgument);
  ro.params = {{"lr", "2.5e-3"}, {"keep-best", "false"}};
  EXPECT_NO_THROW(round_layer(p, ro));
}

TEST(FlexRound, CancelledByProgress) {
  const LayerProblem p = random_problem(4, 8, 16, 71);
  FlexRoundOptions opt;
  opt.iterations = 200;
  int calls = 0;
  EXPECT_THROW(flexround(p, GridSpec::with_group_size(4, 0), opt,
                         [&](double, std::string_view) { return ++calls < 3; }),
               Cancelled);
  EXPECT_EQ(calls, 3);
}

TEST(FlexRound, DivergedRowsFallBackToRoundToNearest) {
  const LayerProblem p = random_problem(12, 32, 64, 81);
  const GridSpec spec = GridSpec::with_group_size(3, 16);
  FlexRoundOptions opt;
  opt.iterations = 30;
  opt.lr = 2.0;  // far too large: the last iterate is worse than RTN on most rows
  opt.keep_best = false;
  const QuantizedLayer q = flexround(p, spec, opt);
  const QuantizedLayer rtn = round_to_nearest(p, spec);
  EXPECT_LE(q.report.loss, rtn.report.loss);
  EXPECT_LE(q.report.loss, q.report.loss_rtn);
  bool noted = false;
  for (const auto& n : q.report.notes) noted |= n.find("kept an RTN row") != std::string::npos;
  EXPECT_TRUE(noted);
  const VectorD ours = p.row_losses(q.dequantized()), base = p.row_losses(rtn.dequantized());
  for (Index r = 0; r < 12; ++r) EXPECT_LE(ours[r], base[r]) << r;
}

TEST(FlexRound, PerTensorGridKeepsItsScale) {
  const LayerProblem p = random_problem(8, 32, 64, 91);
  GridSpec spec = GridSpec::with_group_size(4, 0);
  spec.granularity = Granularity::kPerTensor;
  FlexRoundOptions opt;
  opt.iterations = 50;
  const QuantizedLayer q = flexround(p, spec, opt);
  EXPECT_EQ(q.grid.scales, make_grid(p, spec).scales);
  EXPECT_LE(q.report.loss, q.report.loss_rtn);
}

// Real stories260K layers: FlexRound (lr 2.5e-3 at 3 bits, 3e-3 at 4 bits, 200 iterations to keep
// the test short) against RTN on the same min-max grid. Summed loss ratios measured on this
// machine are written beside the assertions; the margin allows other BLAS/compiler rounding.
TEST(FlexRound, BeatsRoundToNearestOnRealLayers) {
  const auto layers = testdata::real_layers();
  if (layers.empty()) GTEST_SKIP() << "real layers not found under " << testdata::data_dir();
  struct Setting {
    GridSpec spec;
    double lr, expected_ratio;
  };
  // Measured (200 iterations): 3 bits g32 0.564, 4 bits per row 0.583 of RTN's summed relative
  // loss (asymmetric min-max grids).
  const Setting settings[] = {{GridSpec::with_group_size(3, 32), 2.5e-3, 0.62},
                              {GridSpec::with_group_size(4, 0), 3e-3, 0.64}};
  for (const Setting& s : settings) {
    double loss = 0.0, rtn = 0.0;
    for (const auto& l : layers) {
      LayerProblem p(l.w);
      p.add_batch(l.x);
      FlexRoundOptions opt;
      opt.iterations = 200;
      opt.lr = s.lr;
      const QuantizedLayer q = flexround(p, s.spec, opt);
      const QuantizedLayer r = round_to_nearest(p, s.spec);
      EXPECT_LE(q.report.loss, r.report.loss) << l.name;
      EXPECT_LE(q.report.loss, q.report.loss_rtn) << l.name;
      loss += q.report.relative_loss;
      rtn += r.report.relative_loss;
    }
    std::printf("flexround %d bits: summed relative loss / RTN = %.4f\n", s.spec.bits, loss / rtn);
    EXPECT_LT(loss / rtn, s.expected_ratio) << "bits " << s.spec.bits;
  }
}

}  // namespace
}  // namespace qround
