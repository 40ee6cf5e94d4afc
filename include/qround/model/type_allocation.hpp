// Mixed precision over ggml types for a whole GGUF model: every linear layer a type plan gives a
// quantized type is measured at every candidate type (mixed_precision.hpp, on the float model's
// calibration, with the chosen method), and the least-loss allocation whose file — every matrix as
// stored, the token embedding and float fallbacks included — fits a bits-per-weight budget
// replaces those layers' types. A candidate a layer's rows cannot take is skipped for it (said in
// the table's notes).
#pragma once

#include <string>
#include <vector>

#include "qround/format.hpp"
#include "qround/mixed_precision.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama.hpp"

namespace qround::model {

struct TypeAllocationOptions {
  std::vector<GgmlType> candidates;  // quantized types, distinct, at least one
  double bits_per_weight = 4.5;      // budget over every matrix of the file, as stored
  RoundLayerOptions rounding;        // method, scale search, iterations, seed, threads, params
  void validate() const;             // InvalidArgument naming the bad field
};

struct TypeAllocation {
  std::vector<TensorTypeChoice> types;  // the plan with the mixed layers' types replaced
  SensitivityTable table;               // the mixed layers × candidates
  ParetoFront front;                    // over the mixed layers' storage
  AllocationPoint chosen;
  double fixed_bits = 0.0;       // storage of the matrices the allocation does not choose
  double file_weights = 0.0;     // weights of every matrix of the file
  double bits_per_weight = 0.0;  // of the whole file's matrices with the chosen types
  // A front point's storage as the whole file's bits per weight.
  double file_bits_per_weight(const AllocationPoint& p) const {
    return (static_cast<double>(p.total_bits) + fixed_bits) / file_weights;
  }
};

// `plan`: one type per matrix (plan_tensor_types / pure_tensor_types). InvalidArgument when the
// budget is below the file every mixed layer at its cheapest candidate gives, or above the one
// at its largest (both bounds named).
TypeAllocation allocate_tensor_types(const LlamaModel& model,
                                     const std::vector<std::vector<int>>& calibration_windows,
                                     const std::vector<TensorTypeChoice>& plan,
                                     const TypeAllocationOptions& options,
                                     const ProgressFn& progress = {});

}  // namespace qround::model
