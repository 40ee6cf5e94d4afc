#include <gtest/gtest.h>

#include <limits>

#include "qround/detail/rng.hpp"
#include "qround/mixed_precision.hpp"
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

}  // namespace
}  // namespace qround
