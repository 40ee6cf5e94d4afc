#include "qround/mixed_precision.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include "qround/detail/mixed_precision_measure.hpp"

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

GridSpec mixed_precision_format_grid(const GridSpec& spec, GgmlType type) {
  return GridSpec::for_format(
      type, spec.search == ScaleSearch::kMse ? ScaleSearch::kHessian : spec.search);
}

std::optional<std::int64_t> format_cost_bits(GgmlType type, Index rows, Index cols) {
  const GgmlTypeTraits& t = ggml_traits(type);
  if (rows <= 0 || cols <= 0)
    throw InvalidArgument(
        fmt::format("format_cost_bits: a {}×{} layer has no weights", rows, cols));
  if (cols % t.block != 0) return std::nullopt;
  const std::uint64_t row_bytes = ggml_row_bytes(type, static_cast<std::uint64_t>(cols));
  return static_cast<std::int64_t>(rows) * static_cast<std::int64_t>(row_bytes) * 8;
}

void SensitivityOptions::validate() const {
  if (!formats.empty()) {
    std::set<GgmlType> seen;
    for (GgmlType type : formats) {
      const GgmlTypeTraits& t = ggml_traits(type);  // throws for a type qround does not know
      if (!t.quantized())
        throw InvalidArgument(fmt::format(
            "mixed precision: candidate format {} is a float type: expected a quantized type",
            t.name));
      if (!seen.insert(type).second)
        throw InvalidArgument(
            fmt::format("mixed precision: candidate format {} is listed twice", t.name));
      mixed_precision_format_grid(rounding.grid, type).validate();
    }
    return;  // `bits` is ignored
  }
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

std::string SensitivityTable::label(Index candidate) const {
  const size_t j = static_cast<size_t>(candidate);
  if (!labels.empty()) return labels.at(j);
  if (!formats.empty() && formats.at(j)) return to_string(*formats[j]);
  return std::to_string(bits.at(j));
}

std::optional<GgmlType> SensitivityTable::format(Index candidate) const {
  if (formats.empty()) return std::nullopt;
  return formats.at(static_cast<size_t>(candidate));
}

bool SensitivityTable::is_available(Index layer, Index candidate) const {
  return available.size() == 0 || available(layer, candidate) != 0;
}

void SensitivityTable::validate() const {
  const Index layers = static_cast<Index>(names.size()), k = static_cast<Index>(bits.size());
  if (layers == 0) throw InvalidArgument("mixed precision: the table has no layers");
  if (k == 0) throw InvalidArgument("mixed precision: the table has no candidates");
  if (static_cast<Index>(weights.size()) != layers || sensitivity.rows() != layers ||
      sensitivity.cols() != k || cost_bits.rows() != layers || cost_bits.cols() != k)
    throw InvalidArgument(fmt::format(
        "mixed precision: table shapes disagree ({} names, {} weight counts, sensitivity {}×{}, "
        "costs {}×{}; expected {} layers × {} candidates)",
        names.size(), weights.size(), sensitivity.rows(), sensitivity.cols(), cost_bits.rows(),
        cost_bits.cols(), layers, k));
  if ((!labels.empty() && static_cast<Index>(labels.size()) != k) ||
      (!formats.empty() && static_cast<Index>(formats.size()) != k) ||
      (available.size() != 0 && (available.rows() != layers || available.cols() != k)))
    throw InvalidArgument(fmt::format(
        "mixed precision: table shapes disagree ({} labels, {} formats, availability {}×{}; "
        "expected {} candidates (or none) and {}×{} (or empty))",
        labels.size(), formats.size(), available.rows(), available.cols(), k, layers, k));
  for (Index j = 0; j < k; ++j)
    if (const std::optional<GgmlType> f = format(j)) {
      const GgmlTypeTraits& t = ggml_traits(*f);
      if (!t.quantized() || bits[static_cast<size_t>(j)] != t.bits)
        throw InvalidArgument(fmt::format(
            "mixed precision: candidate {} is format {} with {} bits: expected a quantized "
            "format and its code width ({})",
            j, t.name, bits[static_cast<size_t>(j)], t.bits));
    }
  for (Index i = 0; i < layers; ++i) {
    const std::string& name = names[static_cast<size_t>(i)];
    if (weights[static_cast<size_t>(i)] <= 0)
      throw InvalidArgument(fmt::format("mixed precision: layer '{}' has {} weights", name,
                                        weights[static_cast<size_t>(i)]));
    bool any = false;
    for (Index j = 0; j < k; ++j) {
      if (!is_available(i, j)) continue;
      any = true;
      if (!std::isfinite(sensitivity(i, j)))
        throw InvalidArgument(fmt::format("mixed precision: sensitivity of '{}' at {} is {}", name,
                                          label(j), sensitivity(i, j)));
      if (cost_bits(i, j) <= 0)
        throw InvalidArgument(fmt::format("mixed precision: cost of '{}' at {} is {}", name,
                                          label(j), cost_bits(i, j)));
    }
    if (!any)
      throw InvalidArgument(
          fmt::format("mixed precision: layer '{}' has no available candidate", name));
  }
}

namespace {

// One candidate column of the table being measured.
struct Candidate {
  int bits;
  std::optional<GgmlType> format;
};

// The candidates of `options` in table order: ascending storage per weight.
std::vector<Candidate> candidates(const SensitivityOptions& options) {
  std::vector<Candidate> out;
  if (options.formats.empty()) {
    for (int b : options.bits) out.push_back({b, std::nullopt});
    std::sort(out.begin(), out.end(),
              [](const Candidate& a, const Candidate& b) { return a.bits < b.bits; });
    return out;
  }
  for (GgmlType t : options.formats) out.push_back({ggml_traits(t).bits, t});
  // q4_0 and q4_k (and q5_0 and q5_k) tie at 4.5 (5.5) bits per weight: order ties by type id.
  std::sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    const double x = ggml_traits(*a.format).bits_per_weight();
    const double y = ggml_traits(*b.format).bits_per_weight();
    if (x != y) return x < y;
    return static_cast<std::uint32_t>(*a.format) < static_cast<std::uint32_t>(*b.format);
  });
  return out;
}

}  // namespace

namespace detail {

SensitivityTable measure_sensitivity(const std::vector<LayerSource>& layers,
                                     const SensitivityOptions& options, const ProgressFn& progress,
                                     const RoundFn& round) {
  options.validate();
  if (layers.empty()) throw InvalidArgument("mixed precision: no layers given");
  const std::vector<Candidate> cands = candidates(options);
  SensitivityTable table;
  for (const Candidate& c : cands) {
    table.bits.push_back(c.bits);
    table.formats.push_back(c.format);
    table.labels.push_back(c.format ? to_string(*c.format) : std::to_string(c.bits));
  }
  const Index n = static_cast<Index>(layers.size()), k = static_cast<Index>(cands.size());
  table.sensitivity.setConstant(n, k, std::numeric_limits<double>::quiet_NaN());
  table.cost_bits.setZero(n, k);
  table.available.setOnes(n, k);
  for (Index i = 0; i < n; ++i) {
    const LayerSource& source = layers[static_cast<size_t>(i)];
    if (!source.make_problem)
      throw InvalidArgument(fmt::format("mixed precision: layer '{}' has no problem", source.name));
    const LayerProblem problem = source.make_problem();
    table.names.push_back(source.name);
    table.weights.push_back(problem.rows() * problem.cols());
    std::vector<std::optional<std::int64_t>> format_costs(static_cast<size_t>(k));
    for (Index j = 0; j < k; ++j) {
      const Candidate& c = cands[static_cast<size_t>(j)];
      if (!c.format) continue;
      format_costs[static_cast<size_t>(j)] =
          format_cost_bits(*c.format, problem.rows(), problem.cols());
      if (format_costs[static_cast<size_t>(j)]) continue;
      table.available(i, j) = 0;
      table.notes.push_back(
          fmt::format("layer '{}' ({} inputs) cannot take {}: rows must be a multiple of {} inputs",
                      source.name, problem.cols(), table.labels[static_cast<size_t>(j)],
                      ggml_traits(*c.format).block));
    }
    if (table.available.row(i).maxCoeff() == 0)
      throw InvalidArgument(fmt::format(
          "mixed precision: layer '{}' ({} inputs) can take none of the candidate formats: its "
          "rows are not a whole number of any candidate's blocks",
          source.name, problem.cols()));
    for (Index j = 0; j < k; ++j) {
      const Candidate& c = cands[static_cast<size_t>(j)];
      const std::string& label = table.labels[static_cast<size_t>(j)];
      if (table.is_available(i, j)) {
        RoundLayerOptions rounding = options.rounding;
        rounding.grid = c.format ? mixed_precision_format_grid(rounding.grid, *c.format)
                                 : mixed_precision_grid(rounding.grid, c.bits);
        const QuantizedLayer q = round(problem, rounding);
        const double s =
            options.metric ? options.metric(source.name, c.bits, q) : q.report.relative_loss;
        if (!std::isfinite(s))
          throw NumericalError(fmt::format("mixed precision: sensitivity of '{}' at {} is {}",
                                           source.name, label, s));
        table.sensitivity(i, j) = s;
        if (c.format) {
          table.cost_bits(i, j) = *format_costs[static_cast<size_t>(j)];
        } else {
          const double cost = static_cast<double>(table.weights.back()) *
                              (c.bits + q.grid.overhead_bits_per_weight());
          table.cost_bits(i, j) = static_cast<std::int64_t>(std::llround(cost));
        }
      }
      if (progress &&
          !progress(static_cast<double>(i * k + j + 1) / static_cast<double>(n * k), source.name))
        throw Cancelled();
    }
  }
  return table;
}

}  // namespace detail

SensitivityTable measure_sensitivity(const std::vector<LayerSource>& layers,
                                     const SensitivityOptions& options,
                                     const ProgressFn& progress) {
  return detail::measure_sensitivity(
      layers, options, progress,
      [](const LayerProblem& problem, const RoundLayerOptions& rounding) {
        return round_layer(problem, rounding);
      });
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
        if (!t.is_available(i, j)) continue;
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

// Cheapest and most expensive available cell of layer i.
std::pair<std::int64_t, std::int64_t> cost_range(const SensitivityTable& t, Index i) {
  std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
  for (Index j = 0; j < t.cost_bits.cols(); ++j)
    if (t.is_available(i, j)) {
      lo = std::min(lo, t.cost_bits(i, j));
      hi = std::max(hi, t.cost_bits(i, j));
    }
  return {lo, hi};
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
    const auto [lo, hi] = cost_range(table, i);
    front.min_total_bits += lo;
    front.max_total_bits += hi;
  }
  std::vector<std::vector<Node>> stages;
  if (!merge(table, 1, options.max_front_points, stages)) {
    front.exact = false;
    front.cost_quantum_bits = std::max<std::int64_t>(1, front.max_total_bits / options.cost_steps);
    // Rounded costs take at most cost_steps + n distinct values: this cannot overflow again.
    merge(table, front.cost_quantum_bits, static_cast<std::size_t>(-1), stages);
  }
  for (const Node& last : stages.back()) {
    AllocationPoint point;
    point.loss = last.loss;
    point.bits.resize(static_cast<size_t>(n));
    point.choice.resize(static_cast<size_t>(n));
    point.formats.resize(static_cast<size_t>(n));
    std::int32_t at = -1;
    for (Index i = n; i >= 1; --i) {
      const Node& node = at < 0 ? last : stages[static_cast<size_t>(i)][static_cast<size_t>(at)];
      const size_t layer = static_cast<size_t>(i - 1);
      point.bits[layer] = table.bits[static_cast<size_t>(node.choice)];
      point.choice[layer] = node.choice;
      point.formats[layer] = table.format(node.choice);
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
        "mixed precision: budget {} {} is below the minimum {} {} (every layer at its cheapest "
        "available candidate, scales and zero points included)",
        budget.value, unit, lo, unit));
  if (budget_bits - slack > static_cast<double>(front.max_total_bits))
    throw InvalidArgument(fmt::format(
        "mixed precision: budget {} {} is above the maximum {} {} (every layer at its most "
        "expensive available candidate)",
        budget.value, unit, hi, unit));
  size_t best = 0;
  for (size_t i = 0; i < front.points.size(); ++i)
    if (static_cast<double>(front.points[i].total_bits) <= budget_bits + slack) best = i;
  return front.points[best];
}

}  // namespace qround
