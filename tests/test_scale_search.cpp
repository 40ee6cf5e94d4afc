// Scale search: MSE/L_p and Hessian-weighted searches against a brute-force reference written
// here, and never worse than min-max on their own metric.
#include <gtest/gtest.h>

#include <cmath>

#include "qround/problem.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

// Heavy-tailed weights: clipping the range is worth it for most groups.
MatrixF heavy_tailed(Index rows, Index cols, std::uint64_t seed) {
  MatrixF w = testing::random_matrix(rows, cols, seed, 0.02);
  detail::Rng rng(seed, 3);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      if (rng.uniform() < 0.02) w(r, c) *= 15.0f;
  return w;
}

VectorD importance_vector(Index cols, std::uint64_t seed) {
  detail::Rng rng(seed, 5);
  VectorD imp(cols);
  for (Index c = 0; c < cols; ++c) imp[c] = std::exp(3.0 * rng.normal());  // spans decades
  imp[0] = 0.0;                                                            // a dead input
  return imp;
}

// The metric each search minimises, computed independently from the dequantized matrix.
double metric(const MatrixF& w, const MatrixF& w_hat, const GridSpec& spec, const VectorD* imp,
              Index c0, Index n, Index r) {
  double e = 0.0;
  for (Index c = c0; c < c0 + n; ++c) {
    const double d = double(w(r, c)) - double(w_hat(r, c));
    e += spec.search == ScaleSearch::kHessian ? (*imp)[c] * d * d
                                              : std::pow(std::fabs(d), spec.mse_norm);
  }
  return e;
}

// Brute force over p = 1 − i/100 with the min-max formula on the shrunk range, in double.
double best_reference_error(const MatrixF& w, const GridSpec& spec, const VectorD* imp, Index r,
                            Index c0, Index n) {
  double lo = 0, hi = 0;
  for (Index c = c0; c < c0 + n; ++c)
    lo = std::min(lo, double(w(r, c))), hi = std::max(hi, double(w(r, c)));
  if (lo == 0 && hi == 0) lo = -1, hi = 1;
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < spec.shrink_steps; ++i) {
    const double p = 1.0 - i / 100.0;
    double s, z = 0;
    if (spec.symmetric) {
      s = std::max(-p * lo, p * hi) / spec.qmax();
    } else {
      s = (p * hi - p * lo) / spec.qmax();
      z = std::round(-p * lo / s);
    }
    double e = 0;
    for (Index c = c0; c < c0 + n; ++c) {
      const double q =
          std::clamp(std::round(w(r, c) / s) + z, double(spec.qmin()), double(spec.qmax()));
      const double d = w(r, c) - s * (q - z);
      e += spec.search == ScaleSearch::kHessian ? (*imp)[c] * d * d
                                                : std::pow(std::fabs(d), spec.mse_norm);
    }
    best = std::min(best, e);
  }
  return best;
}

class SearchTest : public ::testing::TestWithParam<std::tuple<ScaleSearch, int, bool, int>> {};

TEST_P(SearchTest, NeverWorseThanMinMaxAndMatchesBruteForce) {
  const auto [search, bits, symmetric, group] = GetParam();
  const Index rows = 6, cols = 70;
  const MatrixF w = heavy_tailed(rows, cols, 17 + static_cast<std::uint64_t>(bits));
  const VectorD imp = importance_vector(cols, 9);
  GridSpec spec = GridSpec::with_group_size(bits, group, symmetric);
  GridSpec minmax = spec;
  spec.search = search;
  const Grid searched = make_grid(w, spec, imp);
  const Grid baseline = make_grid(w, minmax);
  const MatrixF w_s = fake_quant(w, searched), w_m = fake_quant(w, baseline);
  const Index g = searched.group_size;
  int improved = 0;
  for (Index r = 0; r < rows; ++r)
    for (Index c0 = 0; c0 < cols; c0 += g) {
      const Index n = std::min(g, cols - c0);
      const double e_s = metric(w, w_s, spec, &imp, c0, n, r);
      const double e_m = metric(w, w_m, spec, &imp, c0, n, r);
      ASSERT_LE(e_s, e_m * (1 + 1e-9) + 1e-300) << r << "," << c0;
      improved += e_s < e_m * (1 - 1e-6);
      // The search finds the brute-force optimum (up to float vs double rounding of the scale).
      const double best = best_reference_error(w, spec, &imp, r, c0, n);
      ASSERT_LE(e_s, best * (1 + 1e-3) + 1e-12) << r << "," << c0;
    }
  EXPECT_GT(improved, 0) << "the search never beat min-max: it would be a no-op";
  // The library's own metric agrees.
  EXPECT_LE(grid_search_error(w, searched, spec, &imp), grid_search_error(w, baseline, spec, &imp));
}

std::vector<std::tuple<ScaleSearch, int, bool, int>> search_cases() {
  std::vector<std::tuple<ScaleSearch, int, bool, int>> cases;
  for (ScaleSearch search : {ScaleSearch::kMse, ScaleSearch::kHessian})
    for (int bits : {2, 3, 4, 8})
      for (bool symmetric : {false, true})
        for (int group : {0, 16, 23})  // 23 does not divide the 70 inputs
          if (symmetric || bits < 8) cases.emplace_back(search, bits, symmetric, group);
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<SearchTest::ParamType>& info) {
  const auto& [search, bits, symmetric, group] = info.param;
  return std::string(to_string(search)) + "_b" + std::to_string(bits) +
         (symmetric ? "_sym" : "_asym") + "_g" + std::to_string(group);
}

INSTANTIATE_TEST_SUITE_P(Searches, SearchTest, ::testing::ValuesIn(search_cases()), case_name);

TEST(ScaleSearch, PerTensorSearchNeverWorse) {
  const MatrixF w = heavy_tailed(5, 40, 4);
  GridSpec spec;
  spec.granularity = Granularity::kPerTensor;
  spec.bits = 3;
  const Grid m = make_grid(w, spec);
  spec.search = ScaleSearch::kMse;
  const Grid s = make_grid(w, spec);
  EXPECT_LT(grid_search_error(w, s, spec), grid_search_error(w, m, spec));
  EXPECT_EQ(s.scales.minCoeff(), s.scales.maxCoeff());
}

TEST(ScaleSearch, HessianSearchNeedsAValidImportanceVector) {
  const MatrixF w = heavy_tailed(3, 10, 1);
  GridSpec spec;
  spec.search = ScaleSearch::kHessian;
  EXPECT_THROW(make_grid(w, spec), InvalidArgument);
  EXPECT_THROW(make_grid(w, spec, VectorD::Ones(9)), InvalidArgument);
  VectorD neg = VectorD::Ones(10);
  neg[4] = -1.0;
  EXPECT_THROW(make_grid(w, spec, neg), InvalidArgument);
  neg[4] = std::nan("");
  EXPECT_THROW(make_grid(w, spec, neg), InvalidArgument);
  // Through a LayerProblem the importance is diag(H), which needs calibration.
  LayerProblem problem(w);
  EXPECT_THROW(make_grid(problem, spec), InvalidArgument);
  const MatrixF x = testing::random_matrix(20, 10, 2);
  problem.add_batch(x);
  const Grid via_problem = make_grid(problem, spec);
  VectorD diag(10);
  for (Index j = 0; j < 10; ++j) diag[j] = x.col(j).cast<double>().squaredNorm();
  const Grid direct = make_grid(w, spec, diag);
  EXPECT_EQ(via_problem.scales, direct.scales);
  EXPECT_EQ(via_problem.zeros, direct.zeros);
}

TEST(ScaleSearch, ImportanceIsIgnoredByOtherSearches) {
  const MatrixF w = heavy_tailed(3, 10, 1);
  GridSpec spec;
  spec.search = ScaleSearch::kMse;
  EXPECT_EQ(make_grid(w, spec, VectorD::Ones(10)).scales, make_grid(w, spec).scales);
}

}  // namespace
}  // namespace qround
