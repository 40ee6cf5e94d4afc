// Whole-model quantization: the adapter a user's model implements, and the sequential driver.
//
// The driver quantizes stage by stage. A stage is a group of linear layers that read the same
// input (e.g. {q, k, v}, {o}, {w1, w3}, {w2} in a Llama block). For each stage it streams the
// calibration batches through the model — whose earlier stages are already replaced by their
// quantized form, so the inputs are what the quantized upstream produces — and accumulates each
// layer's Hessian batch by batch (memory: one batch's activations plus in × in per layer, never
// the activations of the whole model). Optionally the float model's inputs give an asymmetric
// target (LayerProblem::add_batch(x_quantized, x_float)). Then the method runs on each layer of
// the stage (round_layer, threads across rows) and the quantized layer goes back into the model.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "qround/mixed_precision.hpp"
#include "qround/quantized.hpp"
#include "qround/round_layer.hpp"
#include "qround/types.hpp"

namespace qround {

struct LinearLayerInfo {
  std::string name;  // unique, e.g. "layers.3.w2"
  Index rows = 0;    // out
  Index cols = 0;    // in
};

// Which weights a calibration run computes with.
enum class ModelWeights {
  kCurrent,  // every layer replaced so far in its quantized form, the rest float
  kFloat,    // the original float model
};

// The input (tokens × in) of linear layer `layer` just before the model applies it. Returning
// false ends the run early: the driver has what it needs from this batch.
using LayerInputFn = std::function<bool(Index layer, const MatrixFRef& x)>;

// What a model implements to be quantized by quantize_model(). Layers are identified by their
// index in layers().
class QuantizableModel {
 public:
  virtual ~QuantizableModel() = default;
  // The quantizable linear layers in execution order.
  virtual std::vector<LinearLayerInfo> layers() const = 0;
  // Groups of layer indices sharing one input, in execution order; each layer in exactly one.
  virtual std::vector<std::vector<Index>> stages() const = 0;
  // Number of calibration batches run() accepts.
  virtual Index calibration_batches() const = 0;
  // Runs calibration batch `batch` and reports each linear layer's input through `on_input`,
  // stopping as soon as it returns false.
  virtual void run(Index batch, ModelWeights weights, const LayerInputFn& on_input) = 0;
  // The layer's original float weights (out × in).
  virtual MatrixF float_weights(Index layer) const = 0;
  // From now on the layer computes with `quantized` (ideally through the integer kernels).
  virtual void replace(Index layer, const QuantizedLayer& quantized) = 0;
  // Back to the float weights.
  virtual void restore(Index layer) = 0;
};

struct SequentialOptions {
  RoundLayerOptions round;  // method, grid, iterations, seed, threads, method settings
  // Optional per-layer override of `round` (e.g. bits chosen by mixed precision).
  std::function<RoundLayerOptions(const LinearLayerInfo& layer, const RoundLayerOptions& base)>
      per_layer;
  // true: each stage is calibrated on the model with every earlier stage quantized. false
  // (one-shot): every layer's statistics come from the float model in one pass.
  bool sequential = true;
  // Sequential only: target the float model's inputs (asymmetric reconstruction).
  bool asymmetric_target = false;
  // Optional: called with every layer's calibrated problem just before it is rounded, e.g. to set
  // the scale search's importance from an imatrix (LayerProblem::set_scale_importance).
  std::function<void(const LinearLayerInfo& layer, LayerProblem& problem)> prepare_problem;
  void validate() const;
};

struct LayerOutcome {
  Index layer = 0;
  std::string name;
  QuantizedLayer quantized;
  Index tokens = 0;  // calibration tokens its Hessian saw
};

struct StageOutcome {
  std::vector<Index> layers;
  double calibration_seconds = 0.0;  // forward passes + Hessian accumulation
  double rounding_seconds = 0.0;     // the method on every layer of the stage
};

struct ModelQuantization {
  std::vector<LayerOutcome> layers;  // in execution order
  std::vector<StageOutcome> stages;
  double seconds = 0.0;
};

// Quantizes every layer of `model` and leaves them replaced. Progress is reported per batch and
// per layer (the method's own progress nested inside); if it returns false, or anything throws,
// every layer already replaced is restored to float and the exception (qround::Cancelled on
// cancellation) propagates.
ModelQuantization quantize_model(QuantizableModel& model, const SequentialOptions& options,
                                 const ProgressFn& progress = {});

// Mixed precision for a whole model: every layer's sensitivity at every candidate width, on
// problems calibrated on the float model in one pass over the calibration batches (memory: one
// in × in Hessian per layer, never the activations; each is freed once measured). Row i of the
// table is layer i of model.layers().
SensitivityTable measure_model_sensitivity(QuantizableModel& model,
                                           const SensitivityOptions& options,
                                           const ProgressFn& progress = {});

// A SequentialOptions::per_layer hook giving layer names[i] bits[i] (e.g. a chosen
// AllocationPoint over a SensitivityTable's names), on the grid measure_sensitivity measured it
// with (mixed_precision_grid). Throws InvalidArgument for a layer it has no bits for.
std::function<RoundLayerOptions(const LinearLayerInfo&, const RoundLayerOptions&)> per_layer_bits(
    const std::vector<std::string>& names, const std::vector<int>& bits);

// Storage of the quantized layers in bits per weight: codes plus scales and zero points.
double bits_per_weight(const ModelQuantization& result);

}  // namespace qround
