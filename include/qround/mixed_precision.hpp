// Mixed precision: how many bits each layer gets.
//
// Phase 1 measures every layer's sensitivity at every candidate bit width (by default the relative
// reconstruction loss ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² of the chosen rounding method; or a user callback, e.g.
// the whole model's output error with that one layer quantized) and the storage each choice costs
// (codes plus scales and zero points, Grid::overhead_bits_per_weight()).
// Phase 2 returns the whole Pareto front of "total storage → least summed sensitivity", each point
// with its allocation, so the caller can pick any budget afterwards (choose()).
//
// Exactness: storage costs are whole numbers of bits, and the front is built by merging the layers'
// choices one at a time and discarding dominated partial sums. That is exact (every Pareto-optimal
// allocation is made of Pareto-optimal prefixes). Should a partial front grow beyond
// AllocationOptions::max_front_points (all partial fronts together: they are kept for the
// backtracking), the merge restarts on costs rounded *up* to a quantum of
// total_max_bits / cost_steps bits: every returned allocation still fits its stated (true) cost,
// and it is optimal for the rounded costs; ParetoFront::exact says which happened.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qround/problem.hpp"
#include "qround/quantized.hpp"
#include "qround/round_layer.hpp"

namespace qround {

// One layer to allocate. The problem is built on demand, one layer at a time, so a whole model's
// Hessians never have to be in memory together.
struct LayerSource {
  std::string name;
  std::function<LayerProblem()> make_problem;
};
// A source over an existing problem (kept alive by the source).
LayerSource layer_source(std::string name, LayerProblem problem);

// Sensitivity of one layer quantized at `bits` (lower is better). Must be finite.
using SensitivityFn =
    std::function<double(const std::string& name, int bits, const QuantizedLayer& layer)>;

// The grid a candidate width is measured (and should be quantized) with: `spec` at `bits`, made
// symmetric at 8 bits (asymmetric 8-bit codes do not fit int8).
GridSpec mixed_precision_grid(GridSpec spec, int bits);

struct SensitivityOptions {
  std::vector<int> bits = {2, 3, 4, 8};  // candidates; distinct, each 2..8
  // Method, grid (its `bits` is replaced by each candidate), iterations, seed, threads, params.
  // An asymmetric spec is made symmetric for 8 bits (asymmetric 8-bit codes do not fit int8).
  RoundLayerOptions rounding;
  SensitivityFn metric;  // empty: report.relative_loss
  void validate() const;
};

// Phase 1's result, one row per layer and one column per candidate (ascending bits).
struct SensitivityTable {
  std::vector<std::string> names;
  std::vector<Index> weights;         // weight count per layer
  std::vector<int> bits;              // candidates, ascending
  MatrixD sensitivity;                // layers × candidates
  RowMatrix<std::int64_t> cost_bits;  // layers × candidates: codes + scales + zero points
  void validate() const;              // shapes agree, values finite, costs > 0
};

SensitivityTable measure_sensitivity(const std::vector<LayerSource>& layers,
                                     const SensitivityOptions& options,
                                     const ProgressFn& progress = {});

struct AllocationOptions {
  // Nodes of all partial fronts together (24 bytes each) beyond which costs are rounded.
  std::size_t max_front_points = std::size_t{1} << 23;
  // Rounded-cost resolution over the whole cost range (≈ 0.0005 bits per weight at 8 bits); the
  // rounded merge then keeps at most layers × (cost_steps + layers) nodes.
  std::int64_t cost_steps = 1 << 14;
  void validate() const;
};

struct AllocationPoint {
  std::int64_t total_bits = 0;   // storage of the allocation, scales and zero points included
  double bits_per_weight = 0.0;  // total_bits / total weights
  double loss = 0.0;             // summed sensitivity (predicted)
  std::vector<int> bits;         // per layer, in table order
};

struct ParetoFront {
  std::vector<std::string> names;
  Index total_weights = 0;
  // Ascending total_bits with strictly descending loss: first every layer at its cheapest choice,
  // last the least loss.
  std::vector<AllocationPoint> points;
  std::int64_t min_total_bits = 0;  // every layer at its smallest candidate
  std::int64_t max_total_bits = 0;  // every layer at its largest candidate
  bool exact = true;                // false: costs were rounded up to cost_quantum_bits
  std::int64_t cost_quantum_bits = 1;
};

ParetoFront pareto_front(const SensitivityTable& table, const AllocationOptions& options = {});

struct Budget {
  enum class Kind { kBitsPerWeight, kTotalBytes };
  Kind kind = Kind::kBitsPerWeight;
  double value = 4.0;
  static Budget bits_per_weight(double v) { return {Kind::kBitsPerWeight, v}; }
  static Budget total_bytes(double v) { return {Kind::kTotalBytes, v}; }
};

// The least-loss point whose storage fits the budget. Throws InvalidArgument (naming both numbers)
// when the budget is below min_total_bits or above max_total_bits (every layer at its largest
// candidate: more storage than any allocation can use is almost certainly a unit mistake).
const AllocationPoint& choose(const ParetoFront& front, const Budget& budget);

}  // namespace qround
