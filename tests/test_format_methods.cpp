// Every method on every ggml format grid: results stay on the frozen format grid (stored
// parameters consistent, codes in range) and are never worse than round-to-nearest on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "learned_rounding_data.hpp"
#include "qround/adaround.hpp"
#include "qround/flexround.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/gptq.hpp"
#include "qround/grid.hpp"
#include "qround/nearest.hpp"
#include "qround/nupes.hpp"
#include "qround/round_layer.hpp"
#include "qround/scale_search.hpp"

namespace qround {
namespace {

using testdata::random_problem;

// A plain min-max format grid written independently of the library's search: per block the
// ggml-style fit (symmetric: d = max/qmin with the sign of the largest magnitude; offsets:
// d = (max − min)/qmax, m = min; K-quants: sub-block fits, integer scales relative to the largest).
Grid naive_format_grid(const MatrixF& w, GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  Grid g = empty_format_grid(type, w.rows(), w.cols());
  const Index subs = w.cols() / t.sub_block, blocks = w.cols() / t.block;
  auto fp16_nonzero = [](double v) {
    const float f = round_to_fp16(static_cast<float>(v));
    return f == 0.0f ? 6.103515625e-05f : f;  // smallest normal fp16
  };
  for (Index r = 0; r < g.rows; ++r) {
    std::vector<double> s(static_cast<size_t>(subs)), mn(static_cast<size_t>(subs));
    for (Index j = 0; j < subs; ++j) {
      double lo = 0, hi = 0, amax = 0, signed_max = 0;
      for (Index c = j * t.sub_block; c < (j + 1) * t.sub_block; ++c) {
        lo = std::min<double>(lo, w(r, c));
        hi = std::max<double>(hi, w(r, c));
        if (std::fabs(w(r, c)) > amax) amax = std::fabs(w(r, c)), signed_max = w(r, c);
      }
      if (t.levels) {
        s[size_t(j)] = signed_max / -127.0;  // iq4_nl: the largest magnitude on T[0] = −127
      } else if (t.has_offset) {
        s[size_t(j)] = (hi - lo) / t.qmax;
        mn[size_t(j)] = -lo;
      } else {
        s[size_t(j)] = signed_max / t.qmin;
      }
    }
    if (!t.super_block) {
      for (Index j = 0; j < subs; ++j) {
        g.stored.d(r, j) = fp16_nonzero(s[size_t(j)]);
        if (t.has_offset) g.stored.dmin(r, j) = round_to_fp16(static_cast<float>(-mn[size_t(j)]));
      }
      continue;
    }
    const Index per = t.block / t.sub_block;
    const bool signed_sc = !t.has_offset;
    const int smax = type == GgmlType::kQ6_K ? 127 : type == GgmlType::kQ3_K ? 31 : (1 << t.scale_bits) - 1;
    for (Index b = 0; b < blocks; ++b) {
      double top = 0, top_min = 0;
      for (Index j = b * per; j < (b + 1) * per; ++j) {
        top = std::max(top, std::fabs(s[size_t(j)]));
        top_min = std::max(top_min, mn[size_t(j)]);
      }
      const float d = fp16_nonzero(top / smax);
      g.stored.d(r, b) = d;
      const float dmin = t.has_offset ? fp16_nonzero(top_min / smax) : 0.0f;
      if (t.has_offset) g.stored.dmin(r, b) = dmin;
      for (Index j = b * per; j < (b + 1) * per; ++j) {
        int sc = static_cast<int>(std::lround(s[size_t(j)] / d));
        const int lo = signed_sc ? -smax - (type == GgmlType::kQ3_K ? 1 : 1) : 1;
        sc = std::clamp(sc, lo, smax);
        if (sc == 0) sc = 1;
        g.stored.sc(r, j) = type == GgmlType::kQ3_K ? sc + 32 : sc;
        if (t.has_offset)
          g.stored.m(r, j) = std::clamp(static_cast<int>(std::lround(mn[size_t(j)] / dmin)), 0, smax);
      }
    }
  }
  derive_format_levels(g);
  g.validate(w.rows(), w.cols());
  return g;
}

void expect_on_format_grid(const QuantizedLayer& q, const Grid& start, const char* what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(q.grid.format.has_value());
  EXPECT_EQ(*q.grid.format, *start.format);
  EXPECT_NO_THROW(q.grid.validate(start.rows, start.cols));  // stored ↔ levels bit for bit
  const GgmlTypeTraits& t = ggml_traits(*start.format);
  EXPECT_GE(q.codes.minCoeff(), t.qmin);
  EXPECT_LE(q.codes.maxCoeff(), t.qmax);
}

class FormatMethods : public ::testing::TestWithParam<GgmlType> {};

TEST_P(FormatMethods, EveryMethodStaysOnTheGridAndBeatsRtn) {
  const GgmlType type = GetParam();
  const LayerProblem p = random_problem(12, 256, 384, 91);
  const Grid grid = naive_format_grid(p.weights(), type);
  const QuantizedLayer rtn = round_to_nearest(p, grid);
  expect_on_format_grid(rtn, grid, "nearest");
  const double rtn_loss = p.loss(rtn.dequantized());
  EXPECT_NEAR(rtn.report.loss, rtn_loss, 1e-9 * rtn_loss);

  // GPTQ with static groups rounds on the frozen grid make_grid(spec) fits up front (its code()
  // and level() per column): never worse than RTN there (the row guard), and without the guard
  // the plain algorithm must already beat RTN in total on this problem.
  const GridSpec spec = GridSpec::for_format(type, ScaleSearch::kHessian);
  const Grid frozen = make_grid(p, spec);
  const double rtn_frozen = p.loss(round_to_nearest(p, frozen).dequantized());
  GptqOptions go;
  go.static_groups = true;
  const QuantizedLayer gq = gptq(p, spec, go);
  expect_on_format_grid(gq, frozen, "gptq");
  EXPECT_TRUE(gq.grid.scales == frozen.scales);
  EXPECT_LE(p.loss(gq.dequantized()), rtn_frozen * (1 + 1e-9));
  go.rtn_guard = false;
  const QuantizedLayer gq_raw = gptq(p, spec, go);
  expect_on_format_grid(gq_raw, frozen, "gptq without the guard");
  EXPECT_LT(p.loss(gq_raw.dequantized()), rtn_frozen);

  if (ggml_traits(type).levels) {
    // Table formats: AdaRound and FlexRound move codes in uniform steps; refused, naming why.
    for (int m = 0; m < 2; ++m) {
      try {
        if (m == 0)
          adaround(p, grid, AdaRoundOptions{});
        else
          flexround(p, grid, FlexRoundOptions{});
        FAIL() << "expected InvalidArgument";
      } catch (const InvalidArgument& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(to_string(type)), std::string::npos) << msg;
        EXPECT_NE(msg.find("non-uniform table"), std::string::npos) << msg;
      }
    }
    return;
  }

  AdaRoundOptions ada;
  ada.iterations = 400;
  const QuantizedLayer a = adaround(p, grid, ada);
  expect_on_format_grid(a, grid, "adaround");
  // AdaRound freezes the grid: codes only move, and the result must beat RTN clearly.
  EXPECT_TRUE(a.grid.scales == grid.scales);
  EXPECT_LT(p.loss(a.dequantized()), rtn_loss);

  FlexRoundOptions flex;
  flex.iterations = 300;
  const QuantizedLayer f = flexround(p, grid, flex);
  expect_on_format_grid(f, grid, "flexround");  // learned scales projected onto the lattice
  EXPECT_LE(p.loss(f.dequantized()), rtn_loss * (1 + 1e-9));
  EXPECT_NEAR(f.report.loss, p.loss(f.dequantized()), 1e-6 * rtn_loss);
}

TEST_P(FormatMethods, AdaRoundTrainsInCodeUnitsOfTheOffsetGrid) {
  // h(α) starts at the float weight: the soft weight s·(⌊t⌋ + h − z) with t = (w − b)/s and
  // z = −b/s equals w up to float rounding at iteration 0.
  const GgmlType type = GetParam();
  const LayerProblem p = random_problem(4, 256, 64, 5);
  const Grid grid = naive_format_grid(p.weights(), type);
  AdaRoundOptions o;
  o.iterations = 1;
  o.lr = 1e-12;
  if (ggml_traits(type).levels) {  // table formats: no code units (see above)
    EXPECT_THROW(adaround_detailed(p, grid, o), InvalidArgument);
    return;
  }
  const AdaRoundResult r = adaround_detailed(p, grid, o);
  // Without learning the final code is ⌊t⌋ + [h ≥ 1/2]: nearest up to float rounding of t.
  const MatrixI8 nearest = quantize(p.weights(), grid);
  for (Index i = 0; i < nearest.rows(); ++i)
    for (Index c = 0; c < nearest.cols(); ++c)
      EXPECT_LE(std::abs(int(r.layer.codes(i, c)) - int(nearest(i, c))), 1) << i << "," << c;
}

INSTANTIATE_TEST_SUITE_P(AllFormats, FormatMethods, ::testing::ValuesIn(ggml_quantized_types()),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(FormatMethods, NupesIsRefusedWithTheReason) {
  const LayerProblem p = random_problem(4, 64, 64, 3);
  try {
    nupes(p, GridSpec::for_format(GgmlType::kQ4_0));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("q4_0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("power"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nupes(p, naive_format_grid(p.weights(), GgmlType::kQ4_0)), InvalidArgument);
  try {
    nupes(p, GridSpec::for_format(GgmlType::kIQ4_NL));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("iq4_nl"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nupes(p, naive_format_grid(p.weights(), GgmlType::kIQ4_NL)), InvalidArgument);
  // round_layer (the CLI's entry) refuses the same way before any work.
  RoundLayerOptions ro;
  ro.method = Method::kNupes;
  ro.grid = GridSpec::for_format(GgmlType::kIQ4_NL);
  EXPECT_THROW(round_layer(p, ro), InvalidArgument);
}

TEST(FormatMethods, ProjectionKeepsTheLattice) {
  const MatrixF w = testing::random_matrix(3, 512, 17, 0.05);
  for (GgmlType type : ggml_quantized_types()) {
    SCOPED_TRACE(to_string(type));
    const Grid g = naive_format_grid(w, type);
    MatrixF moved = g.scales * 1.037f;
    const Grid p = project_format_scales(g, moved);
    EXPECT_NO_THROW(p.validate(w.rows(), w.cols()));
    // Moved scales stay close to what was asked (32-blocks: fp16 rounding; K: a sub-block step).
    for (Index r = 0; r < p.rows; ++r)
      for (Index j = 0; j < p.groups(); ++j) {
        const double step = ggml_traits(type).super_block
                                ? std::fabs(p.stored.d(r, j / (ggml_traits(type).block /
                                                               ggml_traits(type).sub_block)))
                                : std::fabs(moved(r, j)) * 1e-3;
        const double lo = type == GgmlType::kQ2_K ? 15
                         : type == GgmlType::kQ6_K ? 127
                         : type == GgmlType::kQ3_K ? 31
                                                   : 63;
        if (std::fabs(moved(r, j)) < lo * step)  // inside the storable range
          EXPECT_LE(std::fabs(p.scales(r, j) - moved(r, j)), 0.5 * step + 1e-12) << r << "," << j;
      }
    EXPECT_THROW(project_format_scales(g, MatrixF::Ones(2, 2)), InvalidArgument);
  }
}

TEST(FormatMethods, CopyRowParametersMovesStoredParameters) {
  const MatrixF w = testing::random_matrix(2, 256, 23);
  const Grid a = naive_format_grid(w, GgmlType::kQ4_K);
  const Grid b = naive_format_grid(w * 0.5f, GgmlType::kQ4_K);
  Grid c = a;
  copy_row_parameters(c, b, 1);
  EXPECT_NO_THROW(c.validate(2, 256));
  EXPECT_TRUE(c.scales.row(1) == b.scales.row(1));
  EXPECT_TRUE(c.scales.row(0) == a.scales.row(0));
  EXPECT_TRUE(c.stored.sc.row(1) == b.stored.sc.row(1));
}

TEST(FormatMethods, GridRejectsInconsistentStoredParameters) {
  const MatrixF w = testing::random_matrix(2, 256, 29);
  Grid g = naive_format_grid(w, GgmlType::kQ4_K);
  g.scales(0, 0) *= 1.0001f;  // levels no longer what the stored parameters give
  EXPECT_THROW(g.validate(2, 256), InvalidArgument);
  Grid h = naive_format_grid(w, GgmlType::kQ4_K);
  h.stored.sc(0, 0) = 64;  // 6-bit field overflow
  EXPECT_THROW(derive_format_levels(h), InvalidArgument);
  Grid k = naive_format_grid(w, GgmlType::kQ4_0);
  k.stored.d(0, 0) = 0.1f;  // not an fp16 value
  EXPECT_THROW(derive_format_levels(k), InvalidArgument);
  EXPECT_THROW(GridSpec::for_format(GgmlType::kF16), InvalidArgument);
  GridSpec bad = GridSpec::for_format(GgmlType::kQ4_0);
  bad.symmetric = false;
  EXPECT_THROW(bad.validate(), InvalidArgument);
  bad = GridSpec::for_format(GgmlType::kQ4_0);
  bad.group_size = 64;
  EXPECT_THROW(bad.validate(), InvalidArgument);
}

TEST(FormatMethods, NearestIsTheNearestStoredLevel) {
  const MatrixF w = testing::random_matrix(3, 256, 31, 0.2);
  for (GgmlType type : ggml_quantized_types()) {
    SCOPED_TRACE(to_string(type));
    const Grid g = naive_format_grid(w, type);
    const MatrixI8 q = quantize(w, g);
    for (Index r = 0; r < w.rows(); ++r)
      for (Index c = 0; c < w.cols(); ++c) {
        const double e = std::fabs(double(w(r, c)) - g.level(r, c, q(r, c)));
        for (std::int32_t k = g.qmin(); k <= g.qmax(); ++k)
          ASSERT_LE(e, std::fabs(double(w(r, c)) - g.level(r, c, k))) << r << "," << c << " " << k;
      }
  }
}

}  // namespace
}  // namespace qround
