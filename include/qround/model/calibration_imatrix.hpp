// An importance matrix (llama.cpp's imatrix) from qround's calibration: per linear layer the sum
// of x² over every calibration position of its input, and the token count, named by the weight's
// GGUF tensor. The file it is written to (io::write_imatrix) is what llama-imatrix would have
// produced for the same windows, so llama-quantize can take qround's calibration.
//
// As llama-imatrix (tools/imatrix/imatrix.cpp, IMatrixCollector::collect_imatrix): only the blk.N
// matrices by default; the classifier's input only with `process_output` (--process-output), under
// the classifier's own name — output.weight, or token_embd.weight when it is tied.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qround/io/imatrix.hpp"
#include "qround/model/llama.hpp"

namespace qround::model {

struct CollectImatrixOptions {
  bool process_output = false;  // also the classifier (llama-imatrix --process-output)
  std::int32_t chunk_size = 0;  // tokens per chunk recorded in the file; 0: the model's seq_len
  std::vector<std::string> datasets;  // recorded in the file
};

// Runs `model` over the windows (each a forward pass of at most seq_len tokens) and accumulates,
// in double, the column sums of x² of every linear layer's input. InvalidArgument for no windows
// or an empty one; progress per window (cancellation throws qround::Cancelled).
io::Imatrix collect_imatrix(const LlamaModel& model, const std::vector<std::vector<int>>& windows,
                            const CollectImatrixOptions& options = {},
                            const ProgressFn& progress = {});

}  // namespace qround::model
