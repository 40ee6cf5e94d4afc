// A whole Llama model quantized into llama.cpp's tensor types: the methods optimise the codes of
// every linear layer on exactly the grid of its ggml type (sequential calibration as
// quantize_model does it), and the result is the GGUF tensors llama.cpp computes with — each one's
// ggml dequantization equal, bit for bit, to the weights the quantized model simulates.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qround/format.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/model/block_reconstruction.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/llama.hpp"
#include "qround/pipeline.hpp"

namespace qround::model {

// The type a GGUF tensor is stored in, and why (a type mix's rule, a fallback, ...).
struct TensorTypeChoice {
  std::string name;  // GGUF name, e.g. "blk.0.ffn_down.weight"
  GgmlType type = GgmlType::kF32;
  std::string reason;
};

struct GgufQuantizeOptions {
  // Method, iterations, seed, threads, method settings, calibration mode. `round.grid` supplies
  // only the scale search; each layer's grid is its ggml type's. `per_layer` must be empty.
  SequentialOptions sequential;
  // One entry per matrix of the model (token_embd, every blk.N linear, output when not tied), as
  // a type mix plans them (model/type_mix.hpp). Float types (f32, f16, bf16) are stored as that
  // type; the model then computes with the weights rounded to it.
  std::vector<TensorTypeChoice> types;
  // Optional llama.cpp importance matrix: a matrix with an entry has its scale search weighted by
  // it (exactly as llama-quantize weighs it, io::Imatrix::importance) instead of the calibration's
  // diag(XᵀX) — or instead of uniform weights for the token embedding, which has no calibration.
  // The methods' losses still come from the calibration. Needs the hessian scale search.
  std::optional<io::Imatrix> imatrix;
  // Optional block-wise reconstruction after the per-layer method (model/block_reconstruction.hpp):
  // each block's quantized linears re-rounded jointly on their frozen type grids.
  std::optional<BlockReconstructionOptions> block;
};

struct GgufQuantization {
  ModelQuantization layers;             // the method's linear layers (those with a quantized type)
  LlamaGgufOptions tensors;             // every matrix's bytes, ready for write_gguf_llama
  std::vector<TensorTypeChoice> types;  // as given, in model order
  double bits_per_weight = 0.0;         // storage of all matrices (bytes · 8 / weights)
  // Per quantized matrix (GGUF name): what weighted its scale search — "imatrix",
  // "calibration" (diag(XᵀX)) or "uniform" (no statistics); absent for float types.
  std::map<std::string, std::string> scale_importance;
  BlockReconstruction blocks;  // empty unless options.block
};

// Quantizes `model` in place (its weights become what the GGUF file computes: the dequantized
// codes, or the float types' rounded weights). The token embedding and a separate output matrix
// are rounded to nearest on their type's grid (no calibration statistics exist for a lookup
// table). InvalidArgument when `types` misses a matrix, names one twice or names an unknown one,
// or a row length is not a whole number of a type's blocks, or an imatrix entry's width differs
// from its matrix's. Throws NumericalError if an encoded
// tensor ever failed to dequantize to the simulated weights (the exactness guarantee). On
// cancellation or any error the model is restored to float.
GgufQuantization quantize_to_gguf(LlamaModel& model,
                                  const std::vector<std::vector<int>>& calibration_windows,
                                  const GgufQuantizeOptions& options,
                                  const ProgressFn& progress = {});

// The GGUF names of the model's matrices in file order: token_embd, blk.N linears, output.
std::vector<std::string> gguf_matrix_names(const LlamaModel& model);

}  // namespace qround::model
