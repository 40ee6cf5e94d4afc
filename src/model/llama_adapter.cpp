#include "qround/model/llama_adapter.hpp"

#include <fmt/format.h>

#include "qround/error.hpp"

namespace qround::model {

LlamaQuantizable::LlamaQuantizable(LlamaModel& model,
                                   std::vector<std::vector<int>> calibration_windows,
                                   LlamaAdapterOptions options)
    : model_(model),
      float_model_(model),
      windows_(std::move(calibration_windows)),
      options_(options) {
  options_.pack.validate();
  if (windows_.empty()) throw InvalidArgument("no calibration windows");
  for (std::size_t i = 0; i < windows_.size(); ++i)
    if (windows_[i].empty() || static_cast<int>(windows_[i].size()) > model.config().seq_len)
      throw InvalidArgument(fmt::format("calibration window {} has {} tokens, expected 1..{}", i,
                                        windows_[i].size(), model.config().seq_len));
  adapter_index_.assign(model.num_linear(), -1);
  for (int i : options_.linears) {
    if (i < 0 || i >= model.num_linear())
      throw InvalidArgument(fmt::format("linear layer {} outside [0, {})", i, model.num_linear()));
    adapter_index_[i] = 0;  // marked; numbered below in execution order
  }
  for (int i = 0; i < model.num_linear(); ++i)
    if (options_.linears.empty() || adapter_index_[i] >= 0) {
      adapter_index_[i] = static_cast<Index>(linears_.size());
      linears_.push_back(i);
    }
  const LlamaConfig& c = model.config();
  const double bytes = 2.0 * static_cast<double>(windows_.size()) * c.seq_len * c.dim * 4.0;
  checkpointing_ = bytes <= static_cast<double>(options_.checkpoint_bytes);
  for (auto& per_window : checkpoints_) per_window.resize(windows_.size());
  block_edited_.assign(c.n_layers, 0);
}

void LlamaQuantizable::edited(int linear_index) {
  block_edited_[linear_index / kLinearsPerBlock] = ++edits_;
}

int LlamaQuantizable::model_index(Index layer) const {
  if (layer < 0 || layer >= static_cast<Index>(linears_.size()))
    throw InvalidArgument(fmt::format("layer {} outside [0, {})", layer, linears_.size()));
  return linears_[layer];
}

std::vector<LinearLayerInfo> LlamaQuantizable::layers() const {
  std::vector<LinearLayerInfo> out;
  for (int i : linears_) {
    const MatrixF& w = float_model_.linear(i);
    out.push_back({model_.linear_name(i), w.rows(), w.cols()});
  }
  return out;
}

std::vector<std::vector<Index>> LlamaQuantizable::stages() const {
  std::vector<std::vector<Index>> out;
  auto stage = [&](int block, std::initializer_list<BlockLinear> members) {
    std::vector<Index> s;
    for (BlockLinear l : members) {
      const Index a = adapter_index_[block * kLinearsPerBlock + static_cast<int>(l)];
      if (a >= 0) s.push_back(a);
    }
    if (!s.empty()) out.push_back(std::move(s));
  };
  for (int b = 0; b < model_.config().n_layers; ++b) {
    stage(b, {BlockLinear::kQ, BlockLinear::kK, BlockLinear::kV});
    stage(b, {BlockLinear::kO});
    stage(b, {BlockLinear::kW1, BlockLinear::kW3});
    stage(b, {BlockLinear::kW2});
  }
  return out;
}

void LlamaQuantizable::run(Index batch, ModelWeights weights, const LayerInputFn& on_input) {
  if (batch < 0 || batch >= calibration_batches())
    throw InvalidArgument(
        fmt::format("calibration batch {} outside [0, {})", batch, calibration_batches()));
  const LlamaModel& m = weights == ModelWeights::kFloat ? float_model_ : model_;
  const LinearInputFn observe = [&](int index, const MatrixFRef& x) {
    const Index a = adapter_index_[index];
    return a < 0 || on_input(a, x);  // layers not exposed are passed by
  };
  if (!checkpointing_) {
    m.forward(windows_[batch], observe);
    return;
  }
  // Resume from the window's checkpoint when nothing before its block changed since (the float
  // model never changes).
  Checkpoint& cp = checkpoints_[weights == ModelWeights::kFloat ? 0 : 1][batch];
  bool resume = cp.block >= 0;
  for (int b = 0; resume && weights != ModelWeights::kFloat && b < cp.block; ++b)
    resume = block_edited_[b] < cp.taken;
  MatrixF x = resume ? cp.hidden : m.embed(windows_[batch]);
  for (int l = resume ? cp.block : 0; l < m.config().n_layers; ++l) {
    if (l != cp.block || !resume) {
      cp.block = l;
      cp.taken = edits_ + 1;  // valid while every earlier block's last edit is older
      cp.hidden = x;
    }
    resume = false;
    if (!m.forward_block(l, x, observe)) return;
  }
}

MatrixF LlamaQuantizable::float_weights(Index layer) const {
  return float_model_.linear(model_index(layer));
}

void LlamaQuantizable::replace(Index layer, const QuantizedLayer& quantized) {
  const int i = model_index(layer);
  edited(i);
  if (options_.packed)
    model_.set_linear_packed(i, std::make_shared<const PackedMatrix>(quantized, options_.pack),
                             options_.compute);
  else
    model_.set_linear(i, quantized.dequantized());
}

void LlamaQuantizable::restore(Index layer) {
  const int i = model_index(layer);
  edited(i);
  model_.set_linear(i, float_model_.linear(i));
}

}  // namespace qround::model
