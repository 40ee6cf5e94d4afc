// Grids: ranges, round trips and the exact min-max formula, against a reference written here in
// double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "qround/ggml_codec.hpp"
#include "qround/grid.hpp"
#include "qround/packed.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

// Weights with rare large values (as trained LLM weights have), including a constant-zero row.
MatrixF test_weights(Index rows, Index cols, std::uint64_t seed) {
  MatrixF w = testing::random_matrix(rows, cols, seed, 0.05);
  detail::Rng rng(seed, 7);
  for (int k = 0; k < 6; ++k)
    w(static_cast<Index>(rng.below(static_cast<std::uint64_t>(rows))),
      static_cast<Index>(rng.below(static_cast<std::uint64_t>(cols)))) *= 20.0f;
  w.row(rows / 2).setZero();
  w.row(1) = w.row(1).cwiseAbs();  // a row that is all >= 0 (min-max widens to include 0)
  return w;
}

std::vector<GridSpec> all_specs(Index cols) {
  std::vector<GridSpec> specs;
  for (int bits = 2; bits <= 8; ++bits)
    for (int kind = 0; kind < 3; ++kind) {  // asymmetric, symmetric, restricted symmetric
      if (kind == 0 && bits == 8) continue;
      for (int gran = 0; gran < 5; ++gran) {
        GridSpec s;
        s.bits = bits;
        s.symmetric = kind > 0;
        s.restricted = kind == 2;
        const Index groups[] = {0, 0, 4, 5, cols + 3};  // 5 does not divide cols; > cols too
        s.granularity = gran == 0 ? Granularity::kPerTensor
                                  : (gran == 1 ? Granularity::kPerRow : Granularity::kPerGroup);
        s.group_size = static_cast<int>(groups[gran]);
        if (gran < 2) s.group_size = 128;
        specs.push_back(s);
      }
    }
  return specs;
}

std::string describe(const GridSpec& s) {
  return std::to_string(s.bits) + " bits " + (s.symmetric ? "sym" : "asym") +
         (s.restricted ? " restricted " : " ") + to_string(s.granularity) +
         " G=" + std::to_string(s.group_size);
}

TEST(Grid, QminQmaxForEveryBitWidth) {
  for (int bits = 2; bits <= 8; ++bits) {
    GridSpec s;
    s.bits = bits;
    s.symmetric = false;
    if (bits < 8) {
      EXPECT_EQ(s.qmin(), 0);
      EXPECT_EQ(s.qmax(), (1 << bits) - 1);
    }
    s.symmetric = true;
    EXPECT_EQ(s.qmin(), -(1 << (bits - 1)));
    EXPECT_EQ(s.qmax(), (1 << (bits - 1)) - 1);
    s.restricted = true;
    EXPECT_EQ(s.qmin(), -((1 << (bits - 1)) - 1));
  }
}

TEST(Grid, CodesInsideRangeAndRoundTrips) {
  const Index rows = 7, cols = 13;
  const MatrixF w = test_weights(rows, cols, 11);
  for (const GridSpec& spec : all_specs(cols)) {
    SCOPED_TRACE(describe(spec));
    const Grid grid = make_grid(w, spec);
    ASSERT_NO_THROW(grid.validate(rows, cols));
    const Index g = spec.effective_group_size(cols);
    EXPECT_EQ(grid.group_size, g);
    EXPECT_EQ(grid.groups(), (cols + g - 1) / g);
    EXPECT_EQ(grid.qmin(), spec.qmin());
    EXPECT_EQ(grid.qmax(), spec.qmax());
    const MatrixI8 q = quantize(w, grid);
    ASSERT_GE(q.cast<int>().minCoeff(), spec.qmin());
    ASSERT_LE(q.cast<int>().maxCoeff(), spec.qmax());
    const MatrixF w_hat = dequantize(q, grid);
    EXPECT_EQ(fake_quant(w, grid), w_hat);
    // Levels are fixed points: quantizing a dequantized matrix gives the same codes back.
    EXPECT_EQ(quantize(w_hat, grid), q);
    // Min-max covers every weight, so nearest rounding is within half a step.
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < cols; ++c) {
        const double s = grid.scales(r, grid.group_of(c));
        ASSERT_LE(std::fabs(double(w(r, c)) - w_hat(r, c)), 0.5 * s * (1 + 1e-5) + 1e-12)
            << r << "," << c;
      }
    // Zero is exactly representable on every grid (the all-zero row quantizes to exact zeros).
    EXPECT_TRUE(w_hat.row(rows / 2).isZero(0.0f));
    if (spec.granularity == Granularity::kPerTensor) {
      EXPECT_EQ(grid.scales.minCoeff(), grid.scales.maxCoeff());
    }
  }
}

// The min-max formula written independently in double precision.
struct RefFit {
  double scale;
  double zero;
  double zero_unrounded;
};
RefFit reference_minmax(const float* v, Index n, const GridSpec& spec) {
  double lo = 0.0, hi = 0.0;
  for (Index i = 0; i < n; ++i) {
    lo = std::min(lo, double(v[i]));
    hi = std::max(hi, double(v[i]));
  }
  if (lo == 0.0 && hi == 0.0) lo = -1.0, hi = 1.0;
  if (spec.symmetric) return {std::max(-lo, hi) / ((1 << (spec.bits - 1)) - 1), 0.0, 0.0};
  const double s = (hi - lo) / ((1 << spec.bits) - 1);
  return {s, std::round(-lo / s), -lo / s};
}

bool near_tie(double x) { return std::fabs(std::fabs(x - std::trunc(x)) - 0.5) < 1e-4; }

TEST(Grid, MinMaxMatchesTheFormulaExactly) {
  const Index rows = 9, cols = 70;
  const MatrixF w = test_weights(rows, cols, 5);
  int ties = 0, checked = 0;
  for (const GridSpec& spec : all_specs(cols)) {
    if (spec.granularity == Granularity::kPerTensor) continue;  // covered below
    SCOPED_TRACE(describe(spec));
    const Grid grid = make_grid(w, spec);
    const MatrixI8 q = quantize(w, grid);
    const Index g = grid.group_size;
    for (Index r = 0; r < rows; ++r)
      for (Index c0 = 0; c0 < cols; c0 += g) {
        const Index n = std::min(g, cols - c0);
        const RefFit ref = reference_minmax(w.row(r).data() + c0, n, spec);
        ASSERT_EQ(grid.scales(r, c0 / g), static_cast<float>(ref.scale)) << r << "," << c0;
        // At an exact tie of −xmin/s (e.g. the all-zero group's [−1, 1]) the float scale decides.
        const double zero = grid.zeros(r, c0 / g);
        if (near_tie(ref.zero_unrounded)) {
          ASSERT_LE(std::fabs(zero - ref.zero_unrounded), 0.5 + 1e-4);
        } else {
          ASSERT_EQ(zero, ref.zero);
        }
        for (Index c = c0; c < c0 + n; ++c) {
          const double t = double(w(r, c)) / ref.scale;
          const double expect =
              std::clamp(std::round(t) + zero, double(spec.qmin()), double(spec.qmax()));
          ++checked;
          if (near_tie(t)) {
            ++ties;
            continue;
          }
          ASSERT_EQ(q(r, c), expect) << r << "," << c << " w=" << w(r, c);
        }
      }
  }
  EXPECT_GT(checked, 10000);
  EXPECT_LT(ties, checked / 1000);
}

TEST(Grid, RoundsHalfAwayFromZero) {
  // s = 1 exactly: range [-1.5, 1.5] over 3 levels (2 bits), z = round(1.5) = 2.
  MatrixF w(1, 6);
  w << -1.5f, -0.5f, 0.5f, 1.5f, 0.0f, -1.0f;
  GridSpec spec = GridSpec::with_group_size(2, 0);
  const Grid grid = make_grid(w, spec);
  EXPECT_EQ(grid.scales(0, 0), 1.0f);
  EXPECT_EQ(grid.zeros(0, 0), 2);
  MatrixI8 expect(1, 6);
  // round(w) + 2 clamped to [0, 3]: -2+2, -1+2, 1+2, 2+2→3, 0+2, -1+2
  expect << 0, 1, 3, 3, 2, 1;
  EXPECT_EQ(quantize(w, grid), expect);
  // Symmetric 3 bits: s = 3 / 3 = 1 exactly; ±1.5 → ±2 and ±0.5 → ±1.
  MatrixF ws(1, 5);
  ws << 3.0f, 1.5f, -1.5f, 0.5f, -0.5f;
  const Grid gs = make_grid(ws, GridSpec::with_group_size(3, 0, true));
  EXPECT_EQ(gs.scales(0, 0), 1.0f);
  MatrixI8 expect_s(1, 5);
  expect_s << 3, 2, -2, 1, -1;
  EXPECT_EQ(quantize(ws, gs), expect_s);
}

TEST(Grid, AllZeroGroupUsesMinusOneToOne) {
  const MatrixF w = MatrixF::Zero(2, 8);
  for (int bits = 2; bits <= 7; ++bits) {
    const Grid asym = make_grid(w, GridSpec::with_group_size(bits, 4));
    EXPECT_EQ(asym.scales(0, 0), static_cast<float>(2.0 / ((1 << bits) - 1)));
    // z = round((2^b − 1)/2) is an exact tie: either neighbour keeps 0 exact.
    EXPECT_NEAR(asym.zeros(1, 1), (1 << (bits - 1)) - 0.5, 0.5);
    EXPECT_TRUE(dequantize(quantize(w, asym), asym).isZero(0.0f));
    const Grid sym = make_grid(w, GridSpec::with_group_size(bits, 0, true));
    EXPECT_EQ(sym.scales(1, 0), static_cast<float>(1.0 / ((1 << (bits - 1)) - 1)));
    EXPECT_EQ(sym.zeros(1, 0), 0);
  }
}

TEST(Grid, PerTensorMatchesTheFormulaOverTheWholeMatrix) {
  const MatrixF w = test_weights(6, 11, 3);
  GridSpec spec;
  spec.bits = 4;
  spec.granularity = Granularity::kPerTensor;
  const Grid grid = make_grid(w, spec);
  const MatrixF contiguous = w;  // reference over all values at once
  const RefFit ref = reference_minmax(contiguous.data(), contiguous.size(), spec);
  EXPECT_TRUE((grid.scales.array() == static_cast<float>(ref.scale)).all());
  EXPECT_TRUE((grid.zeros.array() == static_cast<std::int32_t>(ref.zero)).all());
}

TEST(Grid, SpecValidationNamesTheField) {
  auto message = [](GridSpec s) {
    try {
      s.validate();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  GridSpec s;
  s.bits = 1;
  EXPECT_NE(message(s).find("bits = 1"), std::string::npos) << message(s);
  s.bits = 9;
  EXPECT_NE(message(s).find("bits = 9"), std::string::npos);
  s.bits = 8;
  s.symmetric = false;
  EXPECT_NE(message(s).find("8-bit"), std::string::npos);
  s = GridSpec{};
  s.restricted = true;
  EXPECT_NE(message(s).find("restricted"), std::string::npos);
  s = GridSpec{};
  s.group_size = 0;
  EXPECT_NE(message(s).find("group size 0"), std::string::npos);
  s = GridSpec{};
  s.shrink_steps = 0;
  EXPECT_NE(message(s).find("shrink_steps"), std::string::npos);
  EXPECT_THROW(GridSpec::with_group_size(4, -1), InvalidArgument);
  EXPECT_THROW(parse_scale_search("l2"), InvalidArgument);
  EXPECT_EQ(parse_scale_search("hessian"), ScaleSearch::kHessian);
  EXPECT_THROW(make_grid(MatrixF(0, 4), GridSpec{}), InvalidArgument);
}

TEST(Grid, QuantizeRejectsMismatchedGridsCodesAndNonFiniteWeights) {
  const MatrixF w = test_weights(4, 16, 2);
  const Grid grid = make_grid(w, GridSpec::with_group_size(4, 8));
  EXPECT_THROW(quantize(MatrixF::Zero(4, 15), grid), InvalidArgument);
  EXPECT_THROW(dequantize(MatrixI8::Zero(5, 16), grid), InvalidArgument);
  MatrixI8 codes = quantize(w, grid);
  codes(2, 3) = 16;  // outside [0, 15]
  EXPECT_THROW(dequantize(codes, grid), InvalidArgument);
  Grid broken = grid;
  broken.scales(1, 1) = 0.0f;
  EXPECT_THROW(quantize(w, broken), InvalidArgument);
  MatrixF bad = w;
  bad(3, 3) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(make_grid(bad, GridSpec{}), InvalidArgument);
  EXPECT_THROW(quantize(bad, grid), InvalidArgument);
  bad(3, 3) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(fake_quant(bad, grid), InvalidArgument);
}

// ---- table formats (iq4_nl) --------------------------------------------------------------------

// kvalues_iq4nl as ggml-common.h lists it, written here independently of format.hpp.
const int kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// A 1 × 64 iq4_nl grid with the two block scales d0, d1 (fp16 values).
Grid iq4_grid(float d0, float d1) {
  Grid g = empty_format_grid(GgmlType::kIQ4_NL, 1, 64);
  g.stored.d(0, 0) = d0;
  g.stored.d(0, 1) = d1;
  derive_format_levels(g);
  return g;
}

TEST(Grid, TableFormatLevelsAreDTimesTheTable) {
  const Grid g = iq4_grid(0.125f, -3.5f);
  ASSERT_NO_THROW(g.validate(1, 64));
  EXPECT_EQ(g.qmin(), 0);
  EXPECT_EQ(g.qmax(), 15);
  EXPECT_FALSE(g.symmetric);  // codes are table indices 0..15
  for (int q = 0; q < 16; ++q) {
    EXPECT_EQ(g.level(0, 3, q), static_cast<float>(0.125 * kIq4[q])) << q;
    EXPECT_EQ(g.level(0, 40, q), static_cast<float>(-3.5 * kIq4[q])) << q;
  }
  const GridSpec spec = GridSpec::for_format(GgmlType::kIQ4_NL);
  EXPECT_NO_THROW(spec.validate());
  EXPECT_EQ(spec.group_size, 32);
  EXPECT_EQ(spec.qmin(), 0);
  EXPECT_EQ(spec.qmax(), 15);
}

TEST(Grid, TableFormatCodeIsTheNearestLevelTiesToTheSmallerCode) {
  for (const float d : {0.125f, -3.5f, 6.103515625e-05f, -1.0f}) {
    const Grid g = iq4_grid(d, d);
    // Brute force over the 16 levels in double, on a dense sweep, every midpoint and its
    // neighbouring floats, and values beyond both ends.
    std::vector<double> ws;
    for (int i = -1500; i <= 1500; ++i) ws.push_back(std::fabs(d) * 0.1 * i);
    for (int k = 0; k < 15; ++k) {
      const float mid = static_cast<float>(0.5 * (double(d) * kIq4[k] + double(d) * kIq4[k + 1]));
      ws.push_back(mid);
      ws.push_back(std::nextafter(mid, 1e30f));
      ws.push_back(std::nextafter(mid, -1e30f));
    }
    for (const double w : ws) {
      const float wf = static_cast<float>(w);
      int best = 0;
      double be = std::fabs(double(wf) - double(d) * kIq4[0]);
      for (int k = 1; k < 16; ++k) {
        const double e = std::fabs(double(wf) - double(d) * kIq4[k]);
        if (e < be) be = e, best = k;  // strict: a tie keeps the smaller code
      }
      ASSERT_EQ(g.code(0, 7, wf), best) << "d " << d << " w " << wf;
      ASSERT_EQ(g.code(0, 33, wf), best) << "d " << d << " w " << wf;
    }
  }
  // An exact tie: with d = 1 the midpoint of −10 and 1 is −4.5, exactly representable.
  const Grid one = iq4_grid(1.0f, 1.0f);
  EXPECT_EQ(one.code(0, 0, -4.5f), 7);  // kvalues[7] = −10, kvalues[8] = 1: the smaller code
  const Grid neg = iq4_grid(-1.0f, -1.0f);
  EXPECT_EQ(neg.code(0, 0, 4.5f), 7);  // levels 10 and −1: again the smaller code
  // d = 0 (ggml's all-zero block): every level is 0, the code is 0.
  const Grid zero = iq4_grid(0.0f, 0.0f);
  EXPECT_NO_THROW(zero.validate(1, 64));
  EXPECT_EQ(zero.code(0, 0, 0.0f), 0);
  EXPECT_EQ(zero.code(0, 0, 2.0f), 0);
  EXPECT_EQ(zero.level(0, 0, 0), 0.0f);
}

TEST(Grid, ValidateChecksTableGrids) {
  Grid g = iq4_grid(0.5f, 0.25f);
  ASSERT_NO_THROW(g.validate(1, 64));
  Grid no_table = g;
  no_table.level_table = nullptr;  // levels would silently become uniform
  EXPECT_THROW(no_table.validate(1, 64), InvalidArgument);
  Grid stale = g;
  stale.scales(0, 1) = 0.5f;  // not what the stored d gives
  EXPECT_THROW(stale.validate(1, 64), InvalidArgument);
  Grid sym = g;
  sym.symmetric = true;
  EXPECT_THROW(sym.validate(1, 64), InvalidArgument);
  Grid not_half = g;
  not_half.stored.d(0, 0) = 0.1f;  // not an fp16 value
  EXPECT_THROW(not_half.validate(1, 64), InvalidArgument);
  Grid plain = g;
  plain.format.reset();  // a table without a format
  EXPECT_THROW(plain.validate(1, 64), InvalidArgument);
  // A q4_0 grid with a table is refused too.
  Grid q4 = empty_format_grid(GgmlType::kQ4_0, 1, 64);
  q4.stored.d.setConstant(0.5f);
  derive_format_levels(q4);
  q4.level_table = kIq4NlValues;
  EXPECT_THROW(q4.validate(1, 64), InvalidArgument);
  GridSpec spec = GridSpec::for_format(GgmlType::kIQ4_NL);
  spec.symmetric = true;
  EXPECT_THROW(spec.validate(), InvalidArgument);
}

TEST(Grid, TableGridsAreNotPackedIntoUniformContainers) {
  const Grid g = iq4_grid(0.5f, 0.25f);
  try {
    PackedMatrix p(MatrixI8::Zero(1, 64), g, PackOptions{});
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("iq4_nl"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qround
