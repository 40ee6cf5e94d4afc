// Round-to-nearest on the real layers against a plain min-max RTN reference written here, its
// report, and round_layer's dispatch and validation.
#include <gtest/gtest.h>

#include <cmath>

#include "qround/io/npy.hpp"
#include "qround/nearest.hpp"
#include "qround/round_layer.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

struct RealLayer {
  const char* weights;
  const char* inputs;
};
// Which activations feed which weights (see layers/README.md).
constexpr RealLayer kRealLayers[] = {
    {"wq", "attn_in"}, {"wk", "attn_in"}, {"wv", "attn_in"},    {"wo", "attn_out"},
    {"w1", "ffn_in"},  {"w3", "ffn_in"},  {"w2", "ffn_hidden"},
};

// Plain min-max RTN, per group, in double: codes and the count of weights at exact ties (where
// float and double arithmetic may legitimately round differently).
MatrixI8 reference_rtn(const MatrixF& w, int bits, Index group, bool symmetric, Index* ties) {
  MatrixI8 q(w.rows(), w.cols());
  const Index g = group == 0 ? w.cols() : std::min(group, w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c0 = 0; c0 < w.cols(); c0 += g) {
      const Index n = std::min(g, w.cols() - c0);
      double lo = 0, hi = 0;
      for (Index c = c0; c < c0 + n; ++c)
        lo = std::min(lo, double(w(r, c))), hi = std::max(hi, double(w(r, c)));
      if (lo == 0 && hi == 0) lo = -1, hi = 1;
      double s, z = 0, qmin, qmax;
      if (symmetric) {
        qmax = (1 << (bits - 1)) - 1;
        qmin = -qmax - 1;
        s = std::max(-lo, hi) / qmax;
      } else {
        qmin = 0;
        qmax = (1 << bits) - 1;
        s = (hi - lo) / qmax;
        z = std::round(-lo / s);
      }
      for (Index c = c0; c < c0 + n; ++c) {
        const double t = w(r, c) / s;
        if (std::fabs(std::fabs(t - std::trunc(t)) - 0.5) < 1e-5) ++*ties;
        q(r, c) = static_cast<std::int8_t>(std::clamp(std::round(t) + z, qmin, qmax));
      }
    }
  return q;
}

TEST(Nearest, RealLayersReproduceMinMaxReference) {
  if (!std::filesystem::exists(testing::layers_dir() / "layers.0.wq.W.npy"))
    GTEST_SKIP() << "real layers not found in " << testing::layers_dir()
                 << " (set QROUND_DATA_DIR)";
  Index compared = 0, ties = 0, mismatches = 0;
  for (int layer = 0; layer < 2; ++layer)
    for (const RealLayer& rl : kRealLayers) {
      const std::string prefix =
          (testing::layers_dir() / ("layers." + std::to_string(layer) + ".")).string();
      const MatrixF w = io::load_npy_f32(prefix + rl.weights + ".W.npy");
      const MatrixF x = io::load_npy_f32(prefix + rl.inputs + ".X.npy");
      LayerProblem problem(w);
      problem.add_batch(x);
      for (int bits : {2, 3, 4, 8})
        for (int group : {0, 32, 48})
          for (bool symmetric : {false, true}) {
            if (bits == 8 && !symmetric) continue;
            SCOPED_TRACE(prefix + rl.weights + " bits " + std::to_string(bits) + " group " +
                         std::to_string(group) + (symmetric ? " sym" : " asym"));
            const QuantizedLayer out =
                round_to_nearest(problem, GridSpec::with_group_size(bits, group, symmetric));
            Index layer_ties = 0;
            const MatrixI8 ref = reference_rtn(w, bits, group, symmetric, &layer_ties);
            const Index diff = (out.codes.array() != ref.array()).count();
            ASSERT_LE(diff, layer_ties) << "codes differ beyond exact ties";
            compared += w.size();
            ties += layer_ties;
            mismatches += diff;
            // The report is the loss of these codes, and RTN is its own reference.
            const MatrixF w_hat = out.dequantized();
            EXPECT_EQ(out.report.loss, problem.loss(w_hat));
            EXPECT_EQ(out.report.loss_rtn, out.report.loss);
            EXPECT_EQ(out.report.relative_loss, problem.relative_loss(w_hat));
            EXPECT_GT(out.report.loss, 0.0);
            EXPECT_LT(out.report.relative_loss, bits == 8 ? 1e-3 : 1.5);
          }
    }
  EXPECT_GT(compared, 100000);
  EXPECT_LE(mismatches, ties);
  RecordProperty("ties", static_cast<int>(ties));
  RecordProperty("mismatches", static_cast<int>(mismatches));
  RecordProperty("compared", static_cast<int>(compared));
}

TEST(Nearest, ReportDescribesTheRun) {
  const MatrixF w = testing::random_matrix(8, 40, 1, 0.1);
  LayerProblem problem(w);
  problem.add_batch(testing::random_matrix(64, 40, 2));
  GridSpec spec = GridSpec::with_group_size(3, 16, true);
  spec.search = ScaleSearch::kMse;
  const QuantizedLayer out = round_to_nearest(problem, spec);
  EXPECT_EQ(out.report.method, "nearest");
  EXPECT_EQ(out.report.bits, 3);
  EXPECT_EQ(out.report.group_size, 16);
  EXPECT_TRUE(out.report.symmetric);
  EXPECT_EQ(out.report.scale_search, "mse");
  EXPECT_GE(out.report.seconds, 0.0);
  EXPECT_EQ(out.codes, quantize(w, make_grid(w, spec)));
  const QuantizedLayer per_row = round_to_nearest(problem, GridSpec::with_group_size(4, 0));
  EXPECT_EQ(per_row.report.group_size, 0);
  EXPECT_EQ(per_row.grid.groups(), 1);
}

TEST(Nearest, RejectsBadInputs) {
  const MatrixF w = testing::random_matrix(4, 8, 1);
  LayerProblem empty(w);
  EXPECT_THROW(round_to_nearest(empty, GridSpec{}), InvalidArgument);
  LayerProblem problem(w);
  problem.add_batch(testing::random_matrix(10, 8, 2));
  for (int bits : {0, 1, 9, 16}) {
    try {
      round_to_nearest(problem, GridSpec::with_group_size(bits, 0, true));
      ADD_FAILURE() << "bits " << bits << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("bits = " + std::to_string(bits)), std::string::npos)
          << e.what();
    }
  }
  const Grid other = make_grid(testing::random_matrix(4, 9, 3), GridSpec{});
  EXPECT_THROW(round_to_nearest(problem, other), InvalidArgument);
}

TEST(RoundLayer, DispatchesNearestAndRejectsUnknownSettings) {
  const MatrixF w = testing::random_matrix(6, 32, 1, 0.1);
  LayerProblem problem(w);
  problem.add_batch(testing::random_matrix(50, 32, 2));
  RoundLayerOptions options;
  options.grid = GridSpec::with_group_size(4, 8);
  options.threads = 1;
  const QuantizedLayer via = round_layer(problem, options);
  EXPECT_EQ(via.codes, round_to_nearest(problem, options.grid).codes);
  EXPECT_EQ(via.report.method, "nearest");

  options.params["lambda"] = "0.01";
  try {
    round_layer(problem, options);
    ADD_FAILURE() << "unknown setting accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'lambda'"), std::string::npos) << e.what();
  }
  options.params.clear();
  options.threads = -1;
  EXPECT_THROW(round_layer(problem, options), InvalidArgument);
  options.threads = 0;
  options.grid.bits = 1;
  EXPECT_THROW(round_layer(problem, options), InvalidArgument);
  EXPECT_THROW(parse_method("roundy"), InvalidArgument);
  EXPECT_EQ(parse_method("nearest"), Method::kNearest);
}

}  // namespace
}  // namespace qround
