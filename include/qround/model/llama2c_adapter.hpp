// The llama2.c model as a QuantizableModel: linear layers in execution order, stages
// {wq, wk, wv}, {wo}, {w1, w3}, {w2} per block, calibration batches = token windows.
#pragma once

#include <memory>
#include <vector>

#include "qround/model/llama2c.hpp"
#include "qround/pipeline.hpp"

namespace qround::model {

struct Llama2cAdapterOptions {
  // true: a replaced layer is packed (PackedMatrix) and computed by the kernels, so later stages
  // see what integer inference computes. false: dequantized float weights (a pure simulation).
  bool packed = true;
  PackedCompute compute = PackedCompute::kInteger;
  PackOptions pack;
};

class Llama2cQuantizable : public QuantizableModel {
 public:
  // `model` (still float) is modified in place as layers are replaced; a copy made here serves
  // the kFloat runs and restore().
  // Each calibration window starts with BOS and holds at most seq_len tokens.
  Llama2cQuantizable(Llama2cModel& model, std::vector<std::vector<int>> calibration_windows,
                     Llama2cAdapterOptions options = {});

  std::vector<LinearLayerInfo> layers() const override;
  std::vector<std::vector<Index>> stages() const override;
  Index calibration_batches() const override {
    return static_cast<Index>(windows_.size());
  }
  void run(Index batch, ModelWeights weights, const LayerInputFn& on_input) override;
  MatrixF float_weights(Index layer) const override;
  void replace(Index layer, const QuantizedLayer& quantized) override;
  void restore(Index layer) override;

  const Llama2cModel& float_model() const { return float_model_; }

 private:
  Llama2cModel& model_;
  Llama2cModel float_model_;
  std::vector<std::vector<int>> windows_;
  Llama2cAdapterOptions options_;
};

}  // namespace qround::model
