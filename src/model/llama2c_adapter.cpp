#include "qround/model/llama2c_adapter.hpp"

#include <fmt/format.h>

#include "qround/error.hpp"

namespace qround::model {

Llama2cQuantizable::Llama2cQuantizable(Llama2cModel& model,
                                       std::vector<std::vector<int>> calibration_windows,
                                       Llama2cAdapterOptions options)
    : model_(model), float_model_(model), windows_(std::move(calibration_windows)),
      options_(options) {
  options_.pack.validate();
  if (windows_.empty()) throw InvalidArgument("no calibration windows");
  for (std::size_t i = 0; i < windows_.size(); ++i)
    if (windows_[i].empty() || static_cast<int>(windows_[i].size()) > model.config().seq_len)
      throw InvalidArgument(fmt::format("calibration window {} has {} tokens, expected 1..{}", i,
                                        windows_[i].size(), model.config().seq_len));
}

std::vector<LinearLayerInfo> Llama2cQuantizable::layers() const {
  std::vector<LinearLayerInfo> out;
  for (int i = 0; i < model_.num_linear(); ++i) {
    const MatrixF& w = float_model_.linear(i);
    out.push_back({model_.linear_name(i), w.rows(), w.cols()});
  }
  return out;
}

std::vector<std::vector<Index>> Llama2cQuantizable::stages() const {
  std::vector<std::vector<Index>> out;
  auto at = [](int block, BlockLinear l) -> Index {
    return block * kLinearsPerBlock + static_cast<int>(l);
  };
  for (int b = 0; b < model_.config().n_layers; ++b) {
    out.push_back({at(b, BlockLinear::kQ), at(b, BlockLinear::kK), at(b, BlockLinear::kV)});
    out.push_back({at(b, BlockLinear::kO)});
    out.push_back({at(b, BlockLinear::kW1), at(b, BlockLinear::kW3)});
    out.push_back({at(b, BlockLinear::kW2)});
  }
  return out;
}

void Llama2cQuantizable::run(Index batch, ModelWeights weights, const LayerInputFn& on_input) {
  if (batch < 0 || batch >= calibration_batches())
    throw InvalidArgument(fmt::format("calibration batch {} outside [0, {})", batch,
                                      calibration_batches()));
  const Llama2cModel& m = weights == ModelWeights::kFloat ? float_model_ : model_;
  m.forward(windows_[batch], [&](int index, const MatrixFRef& x) { return on_input(index, x); });
}

MatrixF Llama2cQuantizable::float_weights(Index layer) const {
  return float_model_.linear(static_cast<int>(layer));
}

void Llama2cQuantizable::replace(Index layer, const QuantizedLayer& quantized) {
  const int i = static_cast<int>(layer);
  if (options_.packed)
    model_.set_linear_packed(i, std::make_shared<const PackedMatrix>(quantized, options_.pack),
                             options_.compute);
  else
    model_.set_linear(i, quantized.dequantized());
}

void Llama2cQuantizable::restore(Index layer) {
  model_.set_linear(static_cast<int>(layer), float_model_.linear(static_cast<int>(layer)));
}

}  // namespace qround::model
