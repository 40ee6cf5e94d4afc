#include "qround/model/type_allocation.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <set>

#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/pipeline.hpp"

namespace qround::model {

void TypeAllocationOptions::validate() const {
  if (candidates.empty())
    throw InvalidArgument("type allocation: no candidate types (expected at least one)");
  std::set<GgmlType> seen;
  for (GgmlType t : candidates) {
    if (!ggml_traits(t).quantized())
      throw InvalidArgument(
          fmt::format("type allocation: candidate {} is a float type (expected quantized types)",
                      to_string(t)));
    if (!seen.insert(t).second)
      throw InvalidArgument(fmt::format("type allocation: candidate {} given twice", to_string(t)));
  }
  if (!std::isfinite(bits_per_weight) || bits_per_weight <= 0.0)
    throw InvalidArgument(
        fmt::format("type allocation: budget {} bits per weight (expected > 0)", bits_per_weight));
  qround::validate(rounding);
}

TypeAllocation allocate_tensor_types(const LlamaModel& model,
                                     const std::vector<std::vector<int>>& calibration_windows,
                                     const std::vector<TensorTypeChoice>& plan,
                                     const TypeAllocationOptions& options,
                                     const ProgressFn& progress) {
  options.validate();
  std::map<std::string, int> linear_of;  // GGUF name → linear index
  for (int i = 0; i < model.num_linear(); ++i) linear_of[gguf_linear_name(i)] = i;
  const std::vector<std::string> names = gguf_matrix_names(model);
  if (plan.size() != names.size())
    throw InvalidArgument(fmt::format("type allocation: the plan has {} matrices, the model {}",
                                      plan.size(), names.size()));
  TypeAllocation out;
  out.types = plan;
  std::vector<int> mixed;  // linear indices, model order
  double weights = 0.0;
  for (const auto& t : plan) {
    const auto it = linear_of.find(t.name);
    const MatrixF& w = it != linear_of.end()           ? model.linear(it->second)
                       : t.name == kGgufTokenEmbedding ? model.weights().token_embedding
                                                       : model.weights().classifier;
    if (w.size() == 0)
      throw InvalidArgument(fmt::format("type allocation: the model has no matrix '{}'", t.name));
    weights += static_cast<double>(w.size());
    if (it != linear_of.end() && ggml_traits(t.type).quantized()) {
      mixed.push_back(it->second);
    } else {
      out.fixed_bits += 8.0 * static_cast<double>(ggml_tensor_bytes(t.type, w.rows(), w.cols()));
    }
  }
  if (mixed.empty())
    throw InvalidArgument("type allocation: the plan gives no linear layer a quantized type");

  LlamaModel work = model;  // the adapter only calibrates; it never replaces a layer here
  LlamaAdapterOptions adapter_options;
  adapter_options.packed = false;
  adapter_options.linears = mixed;
  LlamaQuantizable adapter(work, calibration_windows, adapter_options);
  SensitivityOptions so;
  so.formats = options.candidates;
  so.rounding = options.rounding;
  out.table = measure_model_sensitivity(adapter, so, progress);
  out.front = pareto_front(out.table);

  const double budget_bits = options.bits_per_weight * weights - out.fixed_bits;
  const double lo = (static_cast<double>(out.front.min_total_bits) + out.fixed_bits) / weights,
               hi = (static_cast<double>(out.front.max_total_bits) + out.fixed_bits) / weights;
  if (budget_bits < static_cast<double>(out.front.min_total_bits) ||
      budget_bits > static_cast<double>(out.front.max_total_bits))
    throw InvalidArgument(fmt::format(
        "type allocation: budget {} bits per weight is outside [{:.4f}, {:.4f}], the files with "
        "every mixed layer at its cheapest and at its largest candidate",
        options.bits_per_weight, lo, hi));
  out.chosen = choose(out.front, Budget::total_bytes(budget_bits / 8.0));
  std::map<std::string, std::size_t> row_of;
  for (std::size_t i = 0; i < out.table.names.size(); ++i) row_of[out.table.names[i]] = i;
  for (auto& t : out.types) {
    const auto it = linear_of.find(t.name);
    if (it == linear_of.end() || !ggml_traits(t.type).quantized()) continue;
    const std::size_t row = row_of.at(model.linear_name(it->second));
    const GgmlType chosen = *out.chosen.formats[row];
    t.reason = fmt::format("mixed precision (≤ {} bits per weight; the plan had {})",
                           options.bits_per_weight, to_string(t.type));
    t.type = chosen;
  }
  out.file_weights = weights;
  out.bits_per_weight = out.file_bits_per_weight(out.chosen);
  return out;
}

}  // namespace qround::model
