// Mixed precision: how many bits (or which ggml storage format) each layer gets.
//
// Phase 1 measures every layer's sensitivity at every candidate (by default the relative
// reconstruction loss ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² of the chosen rounding method; or a user callback, e.g.
// the whole model's output error with that one layer quantized) and the storage each choice costs
// (a bit width: codes plus scales and zero points, Grid::overhead_bits_per_weight(); a format:
// every byte of its blocks). A layer whose rows are not whole blocks of a format cannot take it:
// that cell is unavailable and the merge never uses it.
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
#include <optional>
#include <string>
#include <vector>

#include "qround/format.hpp"
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

// Sensitivity of one layer quantized at `bits` (lower is better). Must be finite. For a format
// candidate `bits` is the format's code width and layer.grid.format names the format.
using SensitivityFn =
    std::function<double(const std::string& name, int bits, const QuantizedLayer& layer)>;

// The grid a candidate width is measured (and should be quantized) with: `spec` at `bits`, made
// symmetric at 8 bits (asymmetric 8-bit codes do not fit int8).
GridSpec mixed_precision_grid(GridSpec spec, int bits);
// The grid a format candidate is measured (and should be quantized) with: the format's spec with
// `spec`'s scale search, kHessian in place of kMse (formats refuse mse).
GridSpec mixed_precision_format_grid(const GridSpec& spec, GgmlType type);
// Storage of a rows × cols layer in `type`, every byte of its blocks, in bits: rows ×
// ggml_row_bytes(type, cols) × 8. Empty when cols is not a multiple of the format's block.
std::optional<std::int64_t> format_cost_bits(GgmlType type, Index rows, Index cols);

struct SensitivityOptions {
  std::vector<int> bits = {2, 3, 4, 8};  // candidates; distinct, each 2..8
  // Non-empty: the candidates are these storage formats (quantized types, distinct) and `bits` is
  // ignored. Each is measured on mixed_precision_format_grid(rounding.grid, type).
  std::vector<GgmlType> formats;
  // Method, grid (its `bits` is replaced by each candidate), iterations, seed, threads, params.
  // An asymmetric spec is made symmetric for 8 bits (asymmetric 8-bit codes do not fit int8).
  RoundLayerOptions rounding;
  SensitivityFn metric;  // empty: report.relative_loss
  void validate() const;
};

// Phase 1's result, one row per layer and one column per candidate, columns in ascending storage
// per weight (bits for bit widths, ggml bits_per_weight for formats, ties by type id).
struct SensitivityTable {
  std::vector<std::string> names;
  std::vector<Index> weights;  // weight count per layer
  std::vector<int> bits;       // per candidate: its width (a format's code width)
  // Per candidate, both optional for a table of bit widths (empty = labels are the widths, no
  // formats): its label ("4" or "q4_k") and its storage format.
  std::vector<std::string> labels;
  std::vector<std::optional<GgmlType>> formats;
  MatrixD sensitivity;                // layers × candidates (NaN where unavailable)
  RowMatrix<std::int64_t> cost_bits;  // layers × candidates: every stored bit (0 where unavailable)
  // layers × candidates, 1 where the layer can take the candidate; empty = every cell available.
  RowMatrix<std::uint8_t> available;
  // One line per unavailable cell saying why ("layer 'x' (64 inputs) cannot take q4_k: …").
  std::vector<std::string> notes;

  std::string label(Index candidate) const;
  std::optional<GgmlType> format(Index candidate) const;
  bool is_available(Index layer, Index candidate) const;
  // Shapes agree, every layer has an available candidate, available cells have finite
  // sensitivities and costs > 0, a format column's width is the format's.
  void validate() const;
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
  std::vector<int> bits;         // per layer, in table order: the width (a format's code width)
  std::vector<int> choice;       // per layer: the table's candidate column
  std::vector<std::optional<GgmlType>> formats;  // per layer: the format (empty for bit widths)
};

struct ParetoFront {
  std::vector<std::string> names;
  Index total_weights = 0;
  // Ascending total_bits with strictly descending loss: first every layer at its cheapest choice,
  // last the least loss.
  std::vector<AllocationPoint> points;
  std::int64_t min_total_bits = 0;  // every layer at its cheapest available candidate
  std::int64_t max_total_bits = 0;  // every layer at its most expensive available candidate
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
