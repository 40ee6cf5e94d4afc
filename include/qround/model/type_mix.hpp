// llama-quantize's file types ("type mixes") for a Llama model: which ggml type every matrix gets
// and why, so qround writes the same tensor types (and size) as llama.cpp's quantizer for the same
// name — with optimised codes.
//
// Facts from llama.cpp's src/llama-quant.cpp (llama_tensor_get_type, llama_tensor_get_type_impl,
// tensor_type_fallback, tensor_allows_quantization), tools/quantize/quantize.cpp (the names:
// "q3_k", "q4_k", "q5_k" mean the _m mixes) and include/llama.h (llama_ftype ids), for the llama
// architecture with one expert:
//   * only matrices are quantized; norm gains stay f32;
//   * output.weight, or token_embd when the output is tied to it: q6_k (q8_0 stays q8_0), q8_0 when
//     the row does not fit the default type's block; an untied token_embd keeps the default;
//   * the K mixes give attn_v, ffn_down and attn_output more bits in chosen layers
//     (use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2);
//   * q4_0 / q5_0 with an importance matrix: ffn_down of the first n/8 layers → q4_1 / q5_1;
//   * a row that does not fit a type's block falls back: q2_k, q3_k → q4_0, q4_k → q5_0,
//     q5_k → q5_1, q6_k → q8_0, then f16 when even that does not fit;
//   * --pure: the default type everywhere, fallback still applied.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qround/format.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama.hpp"

namespace qround::model {

// llama_ftype (llama.h), the value of general.file_type.
enum class LlamaFileType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kQ2_K_S = 21,
  kBF16 = 32,
};

// llama-quantize's names, lower case: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q2_k_s q3_k_s
// q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k, and the aliases q3_k, q4_k, q5_k (the _m mixes).
// InvalidArgument listing them for anything else.
LlamaFileType parse_llama_file_type(std::string_view name);
const char* to_string(LlamaFileType t);
// The type a file type gives a matrix before its rules (q4_k_m → q4_k, ...).
GgmlType default_type(LlamaFileType t);

struct TypeMixOptions {
  LlamaFileType file_type = LlamaFileType::kQ4_K_M;
  bool pure = false;         // the default type everywhere (llama-quantize --pure)
  bool has_imatrix = false;  // llama-quantize was given an importance matrix
};

// One choice per matrix of the model, in gguf_matrix_names order, with the rule that made it.
std::vector<TensorTypeChoice> plan_tensor_types(const LlamaModel& model,
                                                const TypeMixOptions& options);
// The same from the shape alone (the types depend on nothing else).
std::vector<TensorTypeChoice> plan_tensor_types(const LlamaConfig& config,
                                                const TypeMixOptions& options);

// One ggml type for every matrix (llama-quantize --pure, but any type qround writes, e.g. q4_k
// rather than a mix), with llama.cpp's fallback for rows that do not fit its blocks.
std::vector<TensorTypeChoice> pure_tensor_types(const LlamaConfig& config, GgmlType type);
inline std::vector<TensorTypeChoice> pure_tensor_types(const LlamaModel& model, GgmlType type) {
  return pure_tensor_types(model.config(), type);
}

}  // namespace qround::model
