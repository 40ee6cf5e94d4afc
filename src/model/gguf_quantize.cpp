#include "qround/model/gguf_quantize.hpp"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <set>

#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/scale_search.hpp"

namespace qround::model {
namespace {

bool is_float_type(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
}

MatrixF matrix_of(const LlamaModel& model, const std::string& name, int* linear) {
  *linear = -1;
  if (name == kGgufTokenEmbedding) return model.weights().token_embedding;
  if (name == kGgufOutput && !model.config().shared_classifier) return model.weights().classifier;
  for (int i = 0; i < model.num_linear(); ++i)
    if (gguf_linear_name(i) == name) {
      *linear = i;
      return model.linear(i);
    }
  throw InvalidArgument(fmt::format("quantize_to_gguf: the model has no matrix '{}'", name));
}

void set_matrix(LlamaModel& model, const std::string& name, int linear, const MatrixFRef& w) {
  if (linear >= 0)
    model.set_linear(linear, w);
  else if (name == kGgufTokenEmbedding)
    model.set_token_embedding(w);
  else
    model.set_classifier(w);
}

// The tensor's bytes must dequantize, in ggml's formulas, to exactly the simulated weights.
void require_exact(const std::string& name, const GgufTensorBytes& t, const MatrixF& simulated) {
  const MatrixF back =
      dequantize_ggml(t.type, t.bytes.data(), t.bytes.size(), simulated.rows(), simulated.cols());
  if (std::memcmp(back.data(), simulated.data(), sizeof(float) * back.size()) != 0)
    throw NumericalError(fmt::format("{}: the {} bytes do not dequantize to the simulated weights",
                                     name, to_string(t.type)));
}

// Restores every matrix to float unless dismissed (errors and cancellation leave no half state).
class RestoreOnError {
 public:
  RestoreOnError(LlamaModel& model) : model_(model), saved_(model) {}
  ~RestoreOnError() {
    if (!dismissed_) model_ = saved_;
  }
  void dismiss() { dismissed_ = true; }
  const LlamaModel& saved() const { return saved_; }

 private:
  LlamaModel& model_;
  LlamaModel saved_;
  bool dismissed_ = false;
};

}  // namespace

std::vector<std::string> gguf_matrix_names(const LlamaModel& model) {
  std::vector<std::string> names = {kGgufTokenEmbedding};
  for (int i = 0; i < model.num_linear(); ++i) names.push_back(gguf_linear_name(i));
  if (!model.config().shared_classifier) names.push_back(kGgufOutput);
  return names;
}

GgufQuantization quantize_to_gguf(LlamaModel& model,
                                  const std::vector<std::vector<int>>& calibration_windows,
                                  const GgufQuantizeOptions& options, const ProgressFn& progress) {
  if (options.sequential.per_layer)
    throw InvalidArgument("quantize_to_gguf: per_layer must be empty (the types choose the grids)");
  options.sequential.validate();
  if (options.block) options.block->validate();
  std::map<std::string, GgmlType> type_of;
  for (const auto& t : options.types)
    if (!type_of.emplace(t.name, t.type).second)
      throw InvalidArgument(fmt::format("quantize_to_gguf: '{}' has two types", t.name));
  const std::vector<std::string> names = gguf_matrix_names(model);
  for (const auto& name : names)
    if (!type_of.count(name))
      throw InvalidArgument(fmt::format("quantize_to_gguf: no type for '{}'", name));
  if (type_of.size() != names.size())
    for (const auto& t : options.types) {
      int linear;
      matrix_of(model, t.name, &linear);  // throws for the unknown name
    }
  for (const auto& name : names) {
    int linear;
    const MatrixF w = matrix_of(model, name, &linear);
    const GgmlType t = type_of[name];
    if (w.cols() % ggml_traits(t).block != 0)
      throw InvalidArgument(
          fmt::format("quantize_to_gguf: {} has {} columns, not a multiple of "
                      "{}'s block of {}",
                      name, w.cols(), to_string(t), ggml_traits(t).block));
  }

  // The imatrix's entries, checked against the matrices before anything runs.
  std::map<std::string, VectorD> imatrix_importance;
  if (options.imatrix) {
    if (options.sequential.round.grid.search != ScaleSearch::kHessian)
      throw InvalidArgument(fmt::format(
          "quantize_to_gguf: an imatrix weighs the hessian scale search, but the search is {}",
          to_string(options.sequential.round.grid.search)));
    for (const auto& name : names) {
      int linear;
      const MatrixF w = matrix_of(model, name, &linear);
      if (ggml_traits(type_of[name]).quantized() && options.imatrix->find(name))
        imatrix_importance.emplace(name, options.imatrix->importance(name, w.cols()));
    }
  }

  RestoreOnError restore(model);
  GgufQuantization out;
  out.types = options.types;
  std::vector<int> method_linears;
  double bits = 0.0, weights = 0.0;
  // Lookup tables and float-typed matrices first: every calibration run then sees them as the
  // file stores them.
  for (const auto& name : names) {
    int linear;
    const MatrixF w = matrix_of(model, name, &linear);
    const GgmlType t = type_of[name];
    bits += 8.0 * static_cast<double>(ggml_tensor_bytes(t, w.rows(), w.cols()));
    weights += static_cast<double>(w.size());
    if (!is_float_type(t) && linear >= 0) {
      method_linears.push_back(linear);
      continue;
    }
    GgufTensorBytes bytes{t, {}};
    MatrixF simulated;
    if (is_float_type(t)) {
      bytes.bytes = encode_ggml_float(t, w);
      simulated = dequantize_ggml(t, bytes.bytes, w.rows(), w.cols());
    } else {
      // No calibration statistics for a lookup table: the imatrix's entry if it has one (the
      // classifier's input when tied), else every column alike.
      const GridSpec spec = GridSpec::for_format(t, options.sequential.round.grid.search);
      const auto entry = imatrix_importance.find(name);
      const bool weighted = entry != imatrix_importance.end();
      const Grid grid =
          spec.search != ScaleSearch::kHessian
              ? make_grid(w, spec)
              : make_grid(w, spec, weighted ? entry->second : VectorD::Ones(w.cols()));
      out.scale_importance[name] = weighted ? "imatrix" : "uniform";
      MatrixI8 codes(w.rows(), w.cols());
      for (Index r = 0; r < w.rows(); ++r)
        for (Index c = 0; c < w.cols(); ++c)
          codes(r, c) = static_cast<std::int8_t>(grid.code(r, c, w(r, c)));
      bytes.bytes = encode_ggml(codes, grid);
      simulated = dequantize(codes, grid);
      require_exact(name, bytes, simulated);
    }
    set_matrix(model, name, linear, simulated);
    out.tensors.tensors.emplace(name, std::move(bytes));
  }
  out.bits_per_weight = bits / weights;

  if (!method_linears.empty()) {
    LlamaAdapterOptions adapter_options;
    adapter_options.packed = false;  // the dequantized weights: exactly what the file computes
    adapter_options.linears = method_linears;
    LlamaQuantizable adapter(model, calibration_windows, adapter_options);
    SequentialOptions seq = options.sequential;
    std::map<std::string, GgmlType> type_by_layer;
    for (int i : method_linears) type_by_layer[model.linear_name(i)] = type_of[gguf_linear_name(i)];
    const ScaleSearch search = seq.round.grid.search;
    std::map<std::string, VectorD> importance_by_layer;
    for (int i : method_linears) {
      const std::string name = gguf_linear_name(i);
      const auto entry = imatrix_importance.find(name);
      out.scale_importance[name] = entry != imatrix_importance.end() ? "imatrix" : "calibration";
      if (entry != imatrix_importance.end())
        importance_by_layer.emplace(model.linear_name(i), entry->second);
    }
    if (!importance_by_layer.empty()) {
      const auto user_hook = seq.prepare_problem;
      seq.prepare_problem = [importance_by_layer, user_hook](const LinearLayerInfo& layer,
                                                             LayerProblem& problem) {
        const auto it = importance_by_layer.find(layer.name);
        if (it != importance_by_layer.end()) problem.set_scale_importance(it->second);
        if (user_hook) user_hook(layer, problem);
      };
    }
    seq.per_layer = [type_by_layer, search](const LinearLayerInfo& layer,
                                            const RoundLayerOptions& base) {
      RoundLayerOptions o = base;
      o.grid = GridSpec::for_format(type_by_layer.at(layer.name), search);
      return o;
    };
    out.layers = quantize_model(adapter, seq, progress);
    if (options.block) {
      std::vector<QuantizedLayer*> results(static_cast<std::size_t>(model.num_linear()), nullptr);
      for (LayerOutcome& l : out.layers.layers) results[method_linears[l.layer]] = &l.quantized;
      // The default replacement sets the dequantized codes: exactly what the file computes.
      out.blocks = reconstruct_blocks(model, restore.saved(), calibration_windows, results,
                                      *options.block, progress);
    }
    for (const LayerOutcome& l : out.layers.layers) {
      const int linear = method_linears[l.layer];
      const std::string name = gguf_linear_name(linear);
      GgufTensorBytes bytes{type_of[name], encode_ggml(l.quantized)};
      require_exact(name, bytes, model.linear(linear));
      out.tensors.tensors.emplace(name, std::move(bytes));
    }
  }
  restore.dismiss();
  return out;
}

}  // namespace qround::model
