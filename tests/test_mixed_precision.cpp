#include <fmt/format.h>
#include <gtest/gtest.h>

#include "qround/ggml_codec.hpp"

#include <limits>
#include <map>

#include "qround/detail/mixed_precision_measure.hpp"
#include "qround/detail/rng.hpp"
#include "qround/mixed_precision.hpp"
#include "qround/nearest.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

// A random table: costs grow with bits (plus a per-layer overhead), sensitivities fall with bits
// but not always (a layer where more bits do not help exercises dominated choices).
SensitivityTable random_table(int layers, std::vector<int> bits, std::uint64_t seed) {
  detail::Rng rng(seed);
  SensitivityTable t;
  t.bits = bits;
  const Index k = static_cast<Index>(bits.size());
  t.sensitivity.resize(layers, k);
  t.cost_bits.resize(layers, k);
  for (int i = 0; i < layers; ++i) {
    t.names.push_back("layer" + std::to_string(i));
    const Index w = 64 * (1 + static_cast<Index>(rng.below(8)));
    t.weights.push_back(w);
    double s = 1.0 + 10.0 * rng.uniform();
    for (Index j = 0; j < k; ++j) {
      t.cost_bits(i, j) = w * bits[static_cast<size_t>(j)] + 16 * (w / 32);
      t.sensitivity(i, j) = s;
      s *= rng.uniform() < 0.1 ? 1.2 : 0.2 + 0.5 * rng.uniform();
    }
  }
  return t;
}

struct Brute {
  std::int64_t cost;
  double loss;
};

std::vector<Brute> enumerate(const SensitivityTable& t) {
  const size_t n = t.names.size(), k = t.bits.size();
  size_t total = 1;
  for (size_t i = 0; i < n; ++i) total *= k;
  std::vector<Brute> all;
  for (size_t code = 0; code < total; ++code) {
    Brute b{0, 0.0};
    size_t c = code;
    for (size_t i = 0; i < n; ++i, c /= k) {
      b.cost += t.cost_bits(static_cast<Index>(i), static_cast<Index>(c % k));
      b.loss += t.sensitivity(static_cast<Index>(i), static_cast<Index>(c % k));
    }
    all.push_back(b);
  }
  return all;
}

double brute_best(const std::vector<Brute>& all, std::int64_t budget) {
  double best = std::numeric_limits<double>::infinity();
  for (const Brute& b : all)
    if (b.cost <= budget) best = std::min(best, b.loss);
  return best;
}

void expect_consistent_point(const SensitivityTable& t, const AllocationPoint& p) {
  std::int64_t cost = 0;
  double loss = 0.0;
  for (size_t i = 0; i < p.bits.size(); ++i) {
    const auto it = std::find(t.bits.begin(), t.bits.end(), p.bits[i]);
    ASSERT_NE(it, t.bits.end());
    const Index j = it - t.bits.begin();
    cost += t.cost_bits(static_cast<Index>(i), j);
    loss += t.sensitivity(static_cast<Index>(i), j);
  }
  EXPECT_EQ(cost, p.total_bits);
  EXPECT_NEAR(loss, p.loss, 1e-12 * std::abs(loss));
}

TEST(MixedPrecision, FrontIsExactlyTheBruteForceParetoSet) {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const SensitivityTable t = random_table(6, {2, 3, 4, 8}, seed);
    const ParetoFront front = pareto_front(t);
    ASSERT_TRUE(front.exact);
    const std::vector<Brute> all = enumerate(t);
    // Every point is optimal for its own cost, and the optimum of every budget is on the front.
    for (const AllocationPoint& p : front.points) {
      expect_consistent_point(t, p);
      EXPECT_DOUBLE_EQ(p.loss, brute_best(all, p.total_bits));
    }
    for (const Brute& b : all) {
      const double budget_bpw =
          static_cast<double>(b.cost) / static_cast<double>(front.total_weights);
      const AllocationPoint& chosen = choose(front, Budget::bits_per_weight(budget_bpw));
      EXPECT_LE(chosen.total_bits, b.cost);
      EXPECT_DOUBLE_EQ(chosen.loss, brute_best(all, b.cost));
    }
  }
}

TEST(MixedPrecision, FrontIsMonotone) {
  const SensitivityTable t = random_table(12, {2, 3, 4, 6, 8}, 7);
  const ParetoFront front = pareto_front(t);
  ASSERT_GT(front.points.size(), 10u);
  EXPECT_EQ(front.points.front().total_bits, front.min_total_bits);
  for (size_t i = 1; i < front.points.size(); ++i) {
    EXPECT_GT(front.points[i].total_bits, front.points[i - 1].total_bits);
    EXPECT_GT(front.points[i].bits_per_weight, front.points[i - 1].bits_per_weight);
    EXPECT_LT(front.points[i].loss, front.points[i - 1].loss);
  }
}

TEST(MixedPrecision, RoundedCostsStayFeasibleAndNearOptimal) {
  const SensitivityTable t = random_table(8, {2, 3, 4, 8}, 11);
  const ParetoFront exact = pareto_front(t);
  AllocationOptions tight;
  tight.max_front_points = 8;  // forces the rounded-cost merge
  tight.cost_steps = 1000;
  const ParetoFront rounded = pareto_front(t, tight);
  ASSERT_FALSE(rounded.exact);
  EXPECT_GT(rounded.cost_quantum_bits, 1);
  const std::vector<Brute> all = enumerate(t);
  for (const AllocationPoint& p : rounded.points) {
    expect_consistent_point(t, p);  // the stated cost is the true cost of the allocation
    EXPECT_GE(p.loss, brute_best(all, p.total_bits));
  }
  for (size_t i = 1; i < rounded.points.size(); ++i)
    EXPECT_LT(rounded.points[i].loss, rounded.points[i - 1].loss);
  // Rounding loses at most n quanta of budget: the exact optimum at budget B is matched by the
  // rounded front at B + n·quantum.
  for (const AllocationPoint& p : exact.points) {
    const std::int64_t slack = 8 * rounded.cost_quantum_bits;
    if (p.total_bits + slack > rounded.max_total_bits) continue;
    const AllocationPoint& r =
        choose(rounded, Budget::total_bytes(static_cast<double>(p.total_bits + slack) / 8.0));
    EXPECT_LE(r.loss, p.loss + 1e-12);
  }
}

TEST(MixedPrecision, BudgetsOutsideTheRangeAreClearErrors) {
  const SensitivityTable t = random_table(4, {2, 4, 8}, 3);
  const ParetoFront front = pareto_front(t);
  const double lo = static_cast<double>(front.min_total_bits) / front.total_weights;
  const double hi = static_cast<double>(front.max_total_bits) / front.total_weights;
  EXPECT_EQ(choose(front, Budget::bits_per_weight(lo)).total_bits, front.min_total_bits);
  EXPECT_EQ(&choose(front, Budget::bits_per_weight(hi)), &front.points.back());
  try {
    choose(front, Budget::bits_per_weight(lo * 0.99));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("below the minimum"), std::string::npos) << e.what();
  }
  try {
    choose(front, Budget::bits_per_weight(hi * 1.01));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("above the maximum"), std::string::npos) << e.what();
  }
  EXPECT_THROW(choose(front, Budget::total_bytes(-1.0)), InvalidArgument);
  EXPECT_EQ(choose(front, Budget::total_bytes(front.max_total_bits / 8.0)).total_bits,
            front.points.back().total_bits);
}

TEST(MixedPrecision, TableValidation) {
  SensitivityTable t = random_table(3, {2, 4}, 5);
  t.sensitivity(1, 1) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(pareto_front(t), InvalidArgument);
  t = random_table(3, {2, 4}, 5);
  t.names.pop_back();
  EXPECT_THROW(pareto_front(t), InvalidArgument);
  SensitivityOptions o;
  o.bits = {2, 2};
  EXPECT_THROW(o.validate(), InvalidArgument);
  o.bits = {1, 4};
  EXPECT_THROW(o.validate(), InvalidArgument);
}

std::vector<LayerSource> small_layers() {
  std::vector<LayerSource> layers;
  for (int i = 0; i < 3; ++i) {
    const MatrixF w = qround::testing::random_matrix(8 + 4 * i, 32, 100 + i);
    LayerProblem p(w);
    p.add_batch(qround::testing::random_matrix(64, 32, 200 + i));
    layers.push_back(layer_source("l" + std::to_string(i), std::move(p)));
  }
  return layers;
}

TEST(MixedPrecision, DefaultSensitivityIsRelativeLossAndCostsCountOverhead) {
  const std::vector<LayerSource> layers = small_layers();
  SensitivityOptions o;
  o.bits = {8, 2, 4};
  o.rounding.grid = GridSpec::with_group_size(4, 16);
  const SensitivityTable t = measure_sensitivity(layers, o);
  EXPECT_EQ(t.bits, (std::vector<int>{2, 4, 8}));
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerProblem p = layers[i].make_problem();
    EXPECT_EQ(t.weights[i], p.rows() * 32);
    for (size_t j = 0; j < t.bits.size(); ++j) {
      RoundLayerOptions r = o.rounding;
      r.grid.bits = t.bits[j];
      r.grid.symmetric = t.bits[j] == 8;
      const QuantizedLayer q = round_layer(p, r);
      EXPECT_DOUBLE_EQ(t.sensitivity(static_cast<Index>(i), static_cast<Index>(j)),
                       q.report.relative_loss);
      // codes + per group (16 inputs) one f16 scale and, asymmetric, a `bits`-bit zero point
      const std::int64_t groups = p.rows() * 2;
      const std::int64_t expect =
          t.weights[i] * t.bits[j] + groups * (16 + (t.bits[j] == 8 ? 0 : t.bits[j]));
      EXPECT_EQ(t.cost_bits(static_cast<Index>(i), static_cast<Index>(j)), expect);
    }
    EXPECT_GT(t.sensitivity(static_cast<Index>(i), 0), t.sensitivity(static_cast<Index>(i), 2));
  }
}

TEST(MixedPrecision, CallbackSensitivity) {
  const std::vector<LayerSource> layers = small_layers();
  SensitivityOptions o;
  o.bits = {2, 4};
  o.rounding.grid = GridSpec::with_group_size(4, 0);
  int calls = 0;
  o.metric = [&](const std::string& name, int bits, const QuantizedLayer& q) {
    ++calls;
    EXPECT_EQ(q.grid.bits, bits);
    return name == "l1" ? 100.0 / bits : 1.0 / bits;  // l1 matters most
  };
  const SensitivityTable t = measure_sensitivity(layers, o);
  EXPECT_EQ(calls, 6);
  EXPECT_DOUBLE_EQ(t.sensitivity(1, 0), 50.0);
  EXPECT_DOUBLE_EQ(t.sensitivity(2, 1), 0.25);
  // With room for one layer at 4 bits, it goes to l1.
  const ParetoFront front = pareto_front(t);
  const std::int64_t budget = front.min_total_bits + t.cost_bits(1, 1) - t.cost_bits(1, 0);
  const AllocationPoint& p = choose(front, Budget::total_bytes(budget / 8.0));
  EXPECT_EQ(p.bits, (std::vector<int>{2, 4, 2}));
  o.metric = [](const std::string&, int, const QuantizedLayer&) { return std::nan(""); };
  EXPECT_THROW(measure_sensitivity(layers, o), NumericalError);
}

// ---- ggml storage formats as candidates ------------------------------------------------------

// Bytes per block, written down from the static_asserts of ggml/src/ggml-common.h (QK_K = 256,
// K_SCALE_SIZE = 12): q4_0 = 2 + 16, q8_0 = 2 + 32, q4_k = 2·2 + 12 + 128, q6_k = 2 + 16 + 192.
struct BlockFact {
  GgmlType type;
  std::int64_t block, bytes;
};
const std::vector<BlockFact> kBlocks = {{GgmlType::kQ4_0, 32, 18},   {GgmlType::kQ4_1, 32, 20},
                                        {GgmlType::kQ5_0, 32, 22},   {GgmlType::kQ5_1, 32, 24},
                                        {GgmlType::kQ8_0, 32, 34},   {GgmlType::kQ2_K, 256, 84},
                                        {GgmlType::kQ3_K, 256, 110}, {GgmlType::kQ4_K, 256, 144},
                                        {GgmlType::kQ5_K, 256, 176}, {GgmlType::kQ6_K, 256, 210}};

const BlockFact& block_fact(GgmlType type) {
  for (const BlockFact& f : kBlocks)
    if (f.type == type) return f;
  throw std::logic_error("no block fact");
}

TEST(MixedPrecisionFormats, CostIsEveryByteOfTheBlocks) {
  for (const BlockFact& f : kBlocks)
    for (Index cols : {32, 64, 256, 768, 4096 + 32}) {
      const std::optional<std::int64_t> c = format_cost_bits(f.type, 3, cols);
      if (cols % f.block != 0) {
        EXPECT_FALSE(c) << to_string(f.type) << " " << cols;
        continue;
      }
      ASSERT_TRUE(c) << to_string(f.type) << " " << cols;
      EXPECT_EQ(*c, 3 * (cols / f.block) * f.bytes * 8) << to_string(f.type) << " " << cols;
    }
  EXPECT_THROW(format_cost_bits(GgmlType::kQ4_0, 0, 32), InvalidArgument);
}

TEST(MixedPrecisionFormats, FormatGridSpecTakesTheSearchButNeverMse) {
  GridSpec spec = GridSpec::with_group_size(3, 64);
  spec.search = ScaleSearch::kMse;
  const GridSpec g = mixed_precision_format_grid(spec, GgmlType::kQ4_K);
  EXPECT_EQ(g.format, GgmlType::kQ4_K);
  EXPECT_EQ(g.search, ScaleSearch::kHessian);
  EXPECT_EQ(g.bits, 4);
  EXPECT_EQ(g.group_size, 32);
  spec.search = ScaleSearch::kMinMax;
  EXPECT_EQ(mixed_precision_format_grid(spec, GgmlType::kQ6_K).search, ScaleSearch::kMinMax);
  EXPECT_NO_THROW(mixed_precision_format_grid(spec, GgmlType::kQ6_K).validate());
}

// A valid format grid for w built by hand (one set of parameters for the whole matrix, levels
// spanning about ±max|w|): the table logic is tested here, not the format scale search.
Grid hand_format_grid(const MatrixF& w, GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  const float amax = w.cwiseAbs().maxCoeff();
  Grid g = empty_format_grid(type, w.rows(), w.cols());
  const Index blocks = w.cols() / t.block, groups = w.cols() / t.sub_block;
  g.zeros = MatrixI32::Zero(g.rows, groups);
  const float span = static_cast<float>(t.qmax - t.qmin);
  if (!t.super_block) {
    g.stored.d.setConstant(g.rows, blocks, round_to_fp16(2 * amax / span));
    if (t.has_offset) g.stored.dmin.setConstant(g.rows, blocks, round_to_fp16(-amax));
  } else {
    const std::int32_t smax = type == GgmlType::kQ6_K ? 127 : (1 << t.scale_bits) - 1;
    const float level_sc = static_cast<float>(type == GgmlType::kQ3_K ? smax - 32 : smax);
    g.stored.sc.setConstant(g.rows, groups, smax);
    g.stored.d.setConstant(g.rows, blocks, round_to_fp16(2 * amax / (span * level_sc)));
    if (t.has_offset) {
      g.stored.m.setConstant(g.rows, groups, smax);
      g.stored.dmin.setConstant(g.rows, blocks, round_to_fp16(amax / static_cast<float>(smax)));
    }
  }
  derive_format_levels(g);
  g.validate(w.rows(), w.cols());
  return g;
}

// Three layers with 64, 256 and 512 inputs: the first cannot take a K-quant.
std::vector<LayerSource> format_layers() {
  std::vector<LayerSource> layers;
  const Index cols[] = {64, 256, 512};
  for (int i = 0; i < 3; ++i) {
    LayerProblem p(qround::testing::random_matrix(6 + 2 * i, cols[i], 300 + i));
    p.add_batch(qround::testing::random_matrix(96, cols[i], 400 + i));
    layers.push_back(layer_source("f" + std::to_string(i), std::move(p)));
  }
  return layers;
}

TEST(MixedPrecisionFormats, MeasuresEveryAvailableCellOnTheFormatSpec) {
  const std::vector<LayerSource> layers = format_layers();
  SensitivityOptions o;
  o.bits = {1};  // ignored once formats are given
  o.formats = {GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K, GgmlType::kQ4_0};
  o.rounding.grid.search = ScaleSearch::kMse;  // format candidates measure with hessian instead
  std::vector<std::pair<std::string, GgmlType>> calls;
  const detail::RoundFn hand = [&](const LayerProblem& p, const RoundLayerOptions& r) {
    EXPECT_EQ(r.method, Method::kNearest);
    EXPECT_TRUE(r.grid.format.has_value());
    EXPECT_EQ(r.grid.search, ScaleSearch::kHessian);
    EXPECT_NO_THROW(r.grid.validate());
    calls.emplace_back(fmt::format("{}", p.cols()), *r.grid.format);
    return round_to_nearest(p, hand_format_grid(p.weights(), *r.grid.format));
  };
  int metric_calls = 0;
  o.metric = [&](const std::string&, int bits, const QuantizedLayer& q) {
    ++metric_calls;
    EXPECT_TRUE(q.grid.format.has_value());
    EXPECT_EQ(bits, ggml_traits(*q.grid.format).bits);
    return q.report.relative_loss;
  };
  const SensitivityTable t = detail::measure_sensitivity(layers, o, {}, hand);
  ASSERT_NO_THROW(t.validate());
  // Ascending bits per weight (q4_0 and q4_k tie at 4.5: type id decides).
  EXPECT_EQ(t.labels, (std::vector<std::string>{"q4_0", "q4_k", "q6_k", "q8_0"}));
  EXPECT_EQ(t.bits, (std::vector<int>{4, 4, 6, 8}));
  EXPECT_EQ(t.format(2), GgmlType::kQ6_K);
  EXPECT_EQ(t.label(3), "q8_0");
  // 3 layers × 4 formats less the two K-quants of the 64-input layer.
  EXPECT_EQ(calls.size(), 10u);
  EXPECT_EQ(metric_calls, 10);
  for (const auto& [cols, type] : calls)
    EXPECT_FALSE(cols == "64" && ggml_traits(type).super_block) << to_string(type);
  ASSERT_EQ(t.notes.size(), 2u);
  EXPECT_NE(t.notes[0].find("'f0'"), std::string::npos) << t.notes[0];
  EXPECT_NE(t.notes[0].find("q4_k"), std::string::npos) << t.notes[0];
  EXPECT_NE(t.notes[0].find("256"), std::string::npos) << t.notes[0];
  EXPECT_NE(t.notes[1].find("q6_k"), std::string::npos) << t.notes[1];
  for (Index i = 0; i < 3; ++i) {
    const LayerProblem p = layers[static_cast<size_t>(i)].make_problem();
    for (Index j = 0; j < 4; ++j) {
      const GgmlType type = *t.format(j);
      const BlockFact& f = block_fact(type);
      if (p.cols() % f.block != 0) {
        EXPECT_FALSE(t.is_available(i, j));
        continue;
      }
      ASSERT_TRUE(t.is_available(i, j)) << i << " " << j;
      EXPECT_EQ(t.cost_bits(i, j), p.rows() * (p.cols() / f.block) * f.bytes * 8);
      const QuantizedLayer q = round_to_nearest(p, hand_format_grid(p.weights(), type));
      EXPECT_DOUBLE_EQ(t.sensitivity(i, j), q.report.relative_loss);
    }
  }
  EXPECT_TRUE(t.is_available(0, 0));   // 64 inputs take q4_0 ...
  EXPECT_FALSE(t.is_available(0, 1));  // ... but not q4_k
  // The front never uses an unavailable cell, and every point is what its choices add up to.
  const ParetoFront front = pareto_front(t);
  ASSERT_GT(front.points.size(), 3u);
  std::int64_t min_bits = 0, max_bits = 0;
  for (Index i = 0; i < 3; ++i) {
    std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
    for (Index j = 0; j < 4; ++j)
      if (t.is_available(i, j))
        lo = std::min(lo, t.cost_bits(i, j)), hi = std::max(hi, t.cost_bits(i, j));
    min_bits += lo;
    max_bits += hi;
  }
  EXPECT_EQ(front.min_total_bits, min_bits);
  EXPECT_EQ(front.max_total_bits, max_bits);
  for (const AllocationPoint& p : front.points) {
    ASSERT_EQ(p.choice.size(), 3u);
    std::int64_t cost = 0;
    double loss = 0.0;
    for (Index i = 0; i < 3; ++i) {
      const Index j = p.choice[static_cast<size_t>(i)];
      EXPECT_TRUE(t.is_available(i, j));
      EXPECT_EQ(p.formats[static_cast<size_t>(i)], t.format(j));
      EXPECT_EQ(p.bits[static_cast<size_t>(i)], t.bits[static_cast<size_t>(j)]);
      cost += t.cost_bits(i, j);
      loss += t.sensitivity(i, j);
    }
    EXPECT_EQ(cost, p.total_bits);
    EXPECT_NEAR(loss, p.loss, 1e-12 * loss);
    EXPECT_NE(p.formats[0], GgmlType::kQ4_K);
    EXPECT_NE(p.formats[0], GgmlType::kQ6_K);
  }
}

TEST(MixedPrecisionFormats, LayerThatFitsNoFormatIsAClearError) {
  std::vector<LayerSource> layers = format_layers();
  SensitivityOptions o;
  o.formats = {GgmlType::kQ4_K, GgmlType::kQ6_K};
  // The public entry point refuses before any rounding (so before any scale search).
  try {
    measure_sensitivity(layers, o);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'f0' (64 inputs)"), std::string::npos) << e.what();
  }
}

TEST(MixedPrecisionFormats, OptionsValidation) {
  SensitivityOptions o;
  o.formats = {GgmlType::kQ4_0, GgmlType::kQ4_0};
  EXPECT_THROW(o.validate(), InvalidArgument);
  o.formats = {GgmlType::kQ4_0, GgmlType::kF16};
  EXPECT_THROW(o.validate(), InvalidArgument);
  o.formats = {static_cast<GgmlType>(5)};  // not a type qround knows
  EXPECT_THROW(o.validate(), InvalidArgument);
  o.formats = {GgmlType::kQ4_0, GgmlType::kQ6_K};
  o.bits = {1, 1};  // ignored
  o.rounding.grid.search = ScaleSearch::kMse;
  EXPECT_NO_THROW(o.validate());
}

// 3 layers × {q4_0, q4_k, q8_0}, layer 0 (64 inputs) unable to take q4_k; sensitivities by hand.
// q4_0 and q4_k cost the same where both fit, and layer 1 gains little from q8_0, so equal-cost
// and dominated partial sums occur.
SensitivityTable small_format_table() {
  SensitivityTable t;
  const std::vector<GgmlType> formats = {GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ8_0};
  for (GgmlType f : formats) {
    t.bits.push_back(ggml_traits(f).bits);
    t.formats.push_back(f);
    t.labels.push_back(to_string(f));
  }
  const Index rows[] = {8, 4, 16}, cols[] = {64, 256, 512};
  const double s[3][3] = {{0.9, 0.0, 0.1}, {0.7, 0.41, 0.40}, {2.0, 1.3, 0.25}};
  t.sensitivity.resize(3, 3);
  t.cost_bits.resize(3, 3);
  t.available.setOnes(3, 3);
  for (Index i = 0; i < 3; ++i) {
    t.names.push_back("g" + std::to_string(i));
    t.weights.push_back(rows[i] * cols[i]);
    for (Index j = 0; j < 3; ++j) {
      const std::optional<std::int64_t> c =
          format_cost_bits(formats[static_cast<size_t>(j)], rows[i], cols[i]);
      t.available(i, j) = c ? 1 : 0;
      t.cost_bits(i, j) = c.value_or(0);
      t.sensitivity(i, j) = c ? s[i][j] : std::numeric_limits<double>::quiet_NaN();
    }
  }
  return t;
}

TEST(MixedPrecisionFormats, FrontEqualsBruteForceWithAnUnavailableCell) {
  const SensitivityTable t = small_format_table();
  ASSERT_FALSE(t.is_available(0, 1));
  ASSERT_EQ(std::count(t.available.data(), t.available.data() + t.available.size(), 0), 1);
  // Every allocation of available cells; then the non-dominated ones, plainly: keep a
  // (cost, loss) unless another allocation costs no more and loses strictly less, or costs
  // strictly less and loses no more.
  struct Alloc {
    std::int64_t cost;
    double loss;
    std::vector<int> choice;
  };
  std::vector<Alloc> all;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c) {
        const int choice[3] = {a, b, c};
        Alloc x{0, 0.0, {a, b, c}};
        bool ok = true;
        for (Index i = 0; i < 3; ++i) {
          ok = ok && t.available(i, choice[i]) != 0;
          x.cost += t.cost_bits(i, choice[i]);
          x.loss += t.sensitivity(i, choice[i]);
        }
        if (ok) all.push_back(x);
      }
  ASSERT_EQ(all.size(), 18u);
  std::map<std::int64_t, Alloc> pareto;  // by cost
  for (const Alloc& x : all) {
    bool dominated = false;
    for (const Alloc& y : all)
      dominated = dominated || (y.cost <= x.cost && y.loss < x.loss) ||
                  (y.cost < x.cost && y.loss <= x.loss);
    if (!dominated) pareto.emplace(x.cost, x);  // distinct sensitivities: one per cost
  }
  const ParetoFront front = pareto_front(t);
  ASSERT_TRUE(front.exact);
  ASSERT_EQ(front.points.size(), pareto.size());
  size_t k = 0;
  for (const auto& [cost, x] : pareto) {
    const AllocationPoint& p = front.points[k++];
    EXPECT_EQ(p.total_bits, cost);
    EXPECT_DOUBLE_EQ(p.loss, x.loss);
    EXPECT_EQ(p.choice, x.choice);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(p.formats[i], t.format(x.choice[i]));
  }
  // The monotone front: cost ascending, loss strictly descending.
  for (size_t i = 1; i < front.points.size(); ++i) {
    EXPECT_GT(front.points[i].total_bits, front.points[i - 1].total_bits);
    EXPECT_LT(front.points[i].loss, front.points[i - 1].loss);
  }
}

TEST(MixedPrecisionFormats, ChooseRespectsABitsPerWeightBudget) {
  const SensitivityTable t = small_format_table();
  const ParetoFront front = pareto_front(t);
  const double w = static_cast<double>(front.total_weights);
  EXPECT_EQ(front.total_weights, 8 * 64 + 4 * 256 + 16 * 512);
  // The cheapest: q4_0 everywhere (4.5 bits per weight), the dearest: q8_0 everywhere.
  EXPECT_EQ(front.min_total_bits, (8 * 2 * 18 + 4 * 8 * 18 + 16 * 16 * 18) * 8);
  EXPECT_EQ(front.max_total_bits, (8 * 2 * 34 + 4 * 8 * 34 + 16 * 16 * 34) * 8);
  for (const AllocationPoint& p : front.points) {
    for (double budget : {p.bits_per_weight, p.bits_per_weight + 0.5 / w}) {
      if (budget * w > static_cast<double>(front.max_total_bits)) continue;
      const AllocationPoint& c = choose(front, Budget::bits_per_weight(budget));
      EXPECT_LE(static_cast<double>(c.total_bits), budget * w * (1 + 1e-12));
      EXPECT_LE(c.loss, p.loss);
    }
  }
  const double lo = static_cast<double>(front.min_total_bits) / w;
  const double hi = static_cast<double>(front.max_total_bits) / w;
  for (const double budget : {lo - 0.01, hi + 0.01}) {
    try {
      choose(front, Budget::bits_per_weight(budget));
      FAIL() << "expected InvalidArgument for " << budget;
    } catch (const InvalidArgument& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(fmt::format("{}", budget)), std::string::npos) << m;
      EXPECT_NE(m.find(fmt::format("{}", budget < lo ? lo : hi)), std::string::npos) << m;
    }
  }
}

TEST(MixedPrecisionFormats, TableValidationUsesAvailableCellsOnly) {
  SensitivityTable t = small_format_table();
  EXPECT_NO_THROW(t.validate());  // the NaN sits in the unavailable cell
  t.sensitivity(0, 2) = std::numeric_limits<double>::infinity();
  EXPECT_THROW(t.validate(), InvalidArgument);
  t = small_format_table();
  t.available.row(1).setZero();
  try {
    t.validate();
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'g1' has no available candidate"), std::string::npos)
        << e.what();
  }
  t = small_format_table();
  t.bits[2] = 4;  // q8_0 stores 8-bit codes
  EXPECT_THROW(t.validate(), InvalidArgument);
  t = small_format_table();
  t.available.resize(2, 3);
  EXPECT_THROW(t.validate(), InvalidArgument);
}

TEST(MixedPrecisionFormats, BitTablesGetLabelsAndChoices) {
  const std::vector<LayerSource> layers = small_layers();
  SensitivityOptions o;
  o.bits = {4, 2};
  o.rounding.grid = GridSpec::with_group_size(4, 16);
  const SensitivityTable t = measure_sensitivity(layers, o);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"2", "4"}));
  EXPECT_FALSE(t.format(0));
  EXPECT_TRUE(t.notes.empty());
  const ParetoFront front = pareto_front(t);
  for (const AllocationPoint& p : front.points)
    for (size_t i = 0; i < p.bits.size(); ++i) {
      EXPECT_EQ(p.bits[i], t.bits[static_cast<size_t>(p.choice[i])]);
      EXPECT_FALSE(p.formats[i]);
    }
}

}  // namespace
}  // namespace qround
