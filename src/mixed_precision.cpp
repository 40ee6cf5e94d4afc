#include "qround/mixed_precision.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

namespace qround {

LayerSource layer_source(std::string name, LayerProblem problem) {
  auto shared = std::make_shared<const LayerProblem>(std::move(problem));
  return {std::move(name), [shared] { return *shared; }};
}

GridSpec mixed_precision_grid(GridSpec spec, int bits) {
  spec.bits = bits;
  if (bits == 8) spec.symmetric = true;
  return spec;
}

void SensitivityOptions::validate() const {
  if (bits.empty()) throw InvalidArgument("mixed precision: no candidate bit widths given");
  std::set<int> seen;
  for (int b : bits) {
    if (b < 2 || b > 8)
      throw InvalidArgument(
          fmt::format("mixed precision: candidate {} bits is out of range: "
                      "expected 2..8",
                      b));
    if (!seen.insert(b).second)
      throw InvalidArgument(fmt::format("mixed precision: candidate {} bits is listed twice", b));
  }
  for (int b : bits) mixed_precision_grid(rounding.grid, b).validate();
}

void SensitivityTable::validate() const {
  const Index layers = static_cast<Index>(names.size()), k = static_cast<Index>(bits.size());
  if (layers == 0) throw InvalidArgument("mixed precision: the table has no layers");
  if (k == 0) throw InvalidArgument("mixed precision: the table has no candidate bit widths");
  if (static_cast<Index>(weights.size()) != layers || sensitivity.rows() != layers ||
      sensitivity.cols() != k || cost_bits.rows() != layers || cost_bits.cols() != k)
    throw InvalidArgument(fmt::format(
        "mixed precision: table shapes disagree ({} names, {} weight counts, sensitivity {}×{}, "
        "costs {}×{}; expected {} layers × {} candidates)",
        names.size(), weights.size(), sensitivity.rows(), sensitivity.cols(), cost_bits.rows(),
        cost_bits.cols(), layers, k));
  for (Index i = 0; i < layers; ++i) {
    if (weights[static_cast<size_t>(i)] <= 0)
      throw InvalidArgument(fmt::format("mixed precision: layer '{}' has {} weights",
                                        names[static_cast<size_t>(i)],
                                        weights[static_cast<size_t>(i)]));
    for (Index j = 0; j < k; ++j) {
      if (!std::isfinite(sensitivity(i, j)))
        throw InvalidArgument(fmt::format("mixed precision: sensitivity of '{}' at {} bits is {}",
                                          names[static_cast<size_t>(i)],
                                          bits[static_cast<size_t>(j)], sensitivity(i, j)));
      if (cost_bits(i, j) <= 0)
        throw InvalidArgument(fmt::format("mixed precision: cost of '{}' at {} bits is {}",
                                          names[static_cast<size_t>(i)],
                                          bits[static_cast<size_t>(j)], cost_bits(i, j)));
    }
  }
}

SensitivityTable measure_sensitivity(const std::vector<LayerSource>& layers,
                                     const SensitivityOptions& options,
                                     const ProgressFn& progress) {
  options.validate();
  if (layers.empty()) throw InvalidArgument("mixed precision: no layers given");
  SensitivityTable table;
  table.bits = options.bits;
  std::sort(table.bits.begin(), table.bits.end());
  const Index n = static_cast<Index>(layers.size()), k = static_cast<Index>(table.bits.size());
  table.sensitivity.resize(n, k);
  table.cost_bits.resize(n, k);
  for (Index i = 0; i < n; ++i) {
    const LayerSource& source = layers[static_cast<size_t>(i)];
    if (!source.make_problem)
      throw InvalidArgument(fmt::format("mixed precision: layer '{}' has no problem", source.name));
    const LayerProblem problem = source.make_problem();
    table.names.push_back(source.name);
    table.weights.push_back(problem.rows() * problem.cols());
    for (Index j = 0; j < k; ++j) {
      const int bits = table.bits[static_cast<size_t>(j)];
      RoundLayerOptions rounding = options.rounding;
      rounding.grid = mixed_precision_grid(rounding.grid, bits);
      const QuantizedLayer q = round_layer(problem, rounding);
      const double s =
          options.metric ? options.metric(source.name, bits, q) : q.report.relative_loss;
      if (!std::isfinite(s))
        throw NumericalError(fmt::format("mixed precision: sensitivity of '{}' at {} bits is {}",
                                         source.name, bits, s));
      table.sensitivity(i, j) = s;
      const double cost =
          static_cast<double>(table.weights.back()) * (bits + q.grid.overhead_bits_per_weight());
      table.cost_bits(i, j) = static_cast<std::int64_t>(std::llround(cost));
      if (progress &&
          !progress(static_cast<double>(i * k + j + 1) / static_cast<double>(n * k), source.name))
        throw Cancelled();
    }
  }
  return table;
}

void AllocationOptions::validate() const {
  if (max_front_points < 2)
    throw InvalidArgument(fmt::format("max_front_points = {} must be >= 2", max_front_points));
  if (cost_steps < 1)
    throw InvalidArgument(fmt::format("cost_steps = {} must be >= 1", cost_steps));
}

namespace {

struct Node {
  std::int64_t cost;  // partial sum (in quanta)
  double loss;
  std::int32_t parent;  // index into the previous stage
  std::int32_t choice;  // candidate column of this layer
};

// Keeps the nodes no other node dominates: sorted by cost, each strictly better than all cheaper.
void prune(std::vector<Node>& nodes) {
  std::sort(nodes.begin(), nodes.end(), [](const Node& a, const Node& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    if (a.loss != b.loss) return a.loss < b.loss;
    if (a.parent != b.parent) return a.parent < b.parent;  // deterministic among exact ties
    return a.choice < b.choice;
  });
  std::vector<Node> kept;
  kept.reserve(nodes.size());
  for (const Node& node : nodes)
    if (kept.empty() || node.loss < kept.back().loss) kept.push_back(node);
  nodes.swap(kept);
}

// Stage-by-stage Pareto merge. Returns false once all stages together exceed `max_points`.
bool merge(const SensitivityTable& t, std::int64_t quantum, std::size_t max_points,
           std::vector<std::vector<Node>>& stages) {
  const Index n = static_cast<Index>(t.names.size()), k = static_cast<Index>(t.bits.size());
  stages.assign(1, {Node{0, 0.0, -1, -1}});
  std::size_t total = 1;
  for (Index i = 0; i < n; ++i) {
    const std::vector<Node>& prev = stages.back();
    std::vector<Node> next;
    next.reserve(prev.size() * static_cast<size_t>(k));
    for (size_t p = 0; p < prev.size(); ++p)
      for (Index j = 0; j < k; ++j) {
        const std::int64_t c = (t.cost_bits(i, j) + quantum - 1) / quantum;  // rounded up
        next.push_back({prev[p].cost + c, prev[p].loss + t.sensitivity(i, j),
                        static_cast<std::int32_t>(p), static_cast<std::int32_t>(j)});
      }
    prune(next);
    total += next.size();
    if (total > max_points) return false;
    stages.push_back(std::move(next));
  }
  return true;
}

}  // namespace

ParetoFront pareto_front(const SensitivityTable& table, const AllocationOptions& options) {
  table.validate();
  options.validate();
  const Index n = static_cast<Index>(table.names.size());
  ParetoFront front;
  front.names = table.names;
  for (Index w : table.weights) front.total_weights += w;
  for (Index i = 0; i < n; ++i) {
    front.min_total_bits += table.cost_bits.row(i).minCoeff();
    front.max_total_bits += table.cost_bits(i, table.cost_bits.cols() - 1);
  }
  std::vector<std::vector<Node>> stages;
  if (!merge(table, 1, options.max_front_points, stages)) {
    std::int64_t max_sum = 0;
    for (Index i = 0; i < n; ++i) max_sum += table.cost_bits.row(i).maxCoeff();
    front.exact = false;
    front.cost_quantum_bits = std::max<std::int64_t>(1, max_sum / options.cost_steps);
    // Rounded costs take at most cost_steps + n distinct values: this cannot overflow again.
    merge(table, front.cost_quantum_bits, static_cast<std::size_t>(-1), stages);
  }
  for (const Node& last : stages.back()) {
    AllocationPoint point;
    point.loss = last.loss;
    point.bits.resize(static_cast<size_t>(n));
    std::int32_t at = -1;
    for (Index i = n; i >= 1; --i) {
      const Node& node = at < 0 ? last : stages[static_cast<size_t>(i)][static_cast<size_t>(at)];
      point.bits[static_cast<size_t>(i - 1)] = table.bits[static_cast<size_t>(node.choice)];
      point.total_bits += table.cost_bits(i - 1, node.choice);
      at = node.parent;
    }
    point.bits_per_weight =
        static_cast<double>(point.total_bits) / static_cast<double>(front.total_weights);
    front.points.push_back(std::move(point));
  }
  if (!front.exact) {
    // True costs of allocations found on rounded costs: keep the ones still non-dominated.
    std::stable_sort(front.points.begin(), front.points.end(),
                     [](const AllocationPoint& a, const AllocationPoint& b) {
                       return a.total_bits < b.total_bits ||
                              (a.total_bits == b.total_bits && a.loss < b.loss);
                     });
    std::vector<AllocationPoint> kept;
    for (AllocationPoint& p : front.points)
      if (kept.empty() || p.loss < kept.back().loss) kept.push_back(std::move(p));
    front.points.swap(kept);
  }
  return front;
}

const AllocationPoint& choose(const ParetoFront& front, const Budget& budget) {
  if (front.points.empty()) throw InvalidArgument("mixed precision: the Pareto front is empty");
  if (!std::isfinite(budget.value) || budget.value <= 0.0)
    throw InvalidArgument(
        fmt::format("mixed precision: budget {} must be a positive number", budget.value));
  const bool per_weight = budget.kind == Budget::Kind::kBitsPerWeight;
  const double scale = per_weight ? static_cast<double>(front.total_weights) : 8.0;
  const double budget_bits = budget.value * scale;
  const char* unit = per_weight ? "bits per weight" : "bytes";
  const double lo = static_cast<double>(front.min_total_bits) / scale;
  const double hi = static_cast<double>(front.max_total_bits) / scale;
  // A relative slack of 1e-12 lets a budget printed from a front point select that point.
  const double slack = 1e-12 * static_cast<double>(front.max_total_bits);
  if (budget_bits + slack < static_cast<double>(front.points.front().total_bits))
    throw InvalidArgument(fmt::format(
        "mixed precision: budget {} {} is below the minimum {} {} (every layer at its smallest "
        "candidate, scales and zero points included)",
        budget.value, unit, lo, unit));
  if (budget_bits - slack > static_cast<double>(front.max_total_bits))
    throw InvalidArgument(fmt::format(
        "mixed precision: budget {} {} is above the maximum {} {} (every layer at its largest "
        "candidate)",
        budget.value, unit, hi, unit));
  size_t best = 0;
  for (size_t i = 0; i < front.points.size(); ++i)
    if (static_cast<double>(front.points[i].total_bits) <= budget_bits + slack) best = i;
  return front.points[best];
}

}  // namespace qround
