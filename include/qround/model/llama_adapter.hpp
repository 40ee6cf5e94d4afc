// A Llama model (qround/model/llama.hpp) as a QuantizableModel: linear layers in execution order,
// stages {wq, wk, wv}, {wo}, {w1, w3}, {w2} per block, calibration batches = token windows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "qround/model/llama.hpp"
#include "qround/pipeline.hpp"

namespace qround::model {

struct LlamaAdapterOptions {
  // true: a replaced layer is packed (PackedMatrix) and computed by the kernels, so later stages
  // see what integer inference computes. false: dequantized float weights (a pure simulation).
  bool packed = true;
  PackedCompute compute = PackedCompute::kInteger;
  PackOptions pack;
  // The model's linear layers (indices as in LlamaModel::linear) the adapter exposes, in any
  // order; empty: all of them. The others keep whatever weights the model has (e.g. a tensor a
  // file format stores as f16 because its rows do not fit the format's blocks).
  std::vector<int> linears;
  // Sequential calibration re-runs each window up to the stage being calibrated. With room for
  // every window's hidden state (windows × seq_len × dim floats, twice with the float model's
  // runs) within this many bytes, each run starts from the state entering the last block it
  // reached, kept while no layer before that block has changed since; 0 disables it. The result
  // is the same bits either way.
  std::size_t checkpoint_bytes = std::size_t{1} << 30;
};

class LlamaQuantizable : public QuantizableModel {
 public:
  // `model` (still float) is modified in place as layers are replaced; a copy made here serves
  // the kFloat runs and restore().
  // Each calibration window starts with BOS and holds at most seq_len tokens.
  LlamaQuantizable(LlamaModel& model, std::vector<std::vector<int>> calibration_windows,
                   LlamaAdapterOptions options = {});

  std::vector<LinearLayerInfo> layers() const override;
  std::vector<std::vector<Index>> stages() const override;
  Index calibration_batches() const override { return static_cast<Index>(windows_.size()); }
  void run(Index batch, ModelWeights weights, const LayerInputFn& on_input) override;
  MatrixF float_weights(Index layer) const override;
  void replace(Index layer, const QuantizedLayer& quantized) override;
  void restore(Index layer) override;

  const LlamaModel& float_model() const { return float_model_; }

 private:
  LlamaModel& model_;
  LlamaModel float_model_;
  std::vector<std::vector<int>> windows_;
  LlamaAdapterOptions options_;
  std::vector<int> linears_;          // adapter layer → model linear index, execution order
  std::vector<Index> adapter_index_;  // model linear index → adapter layer, −1 when not exposed
  int model_index(Index layer) const;

  // The hidden state of one window entering `block`, computed when the edit count was `taken`.
  struct Checkpoint {
    int block = -1;
    std::uint64_t taken = 0;
    MatrixF hidden;
  };
  bool checkpointing_ = false;
  std::vector<Checkpoint> checkpoints_[2];   // [float, current] × window
  std::vector<std::uint64_t> block_edited_;  // per block: the edit count of its last change
  std::uint64_t edits_ = 0;
  void edited(int linear_index);
};

}  // namespace qround::model
