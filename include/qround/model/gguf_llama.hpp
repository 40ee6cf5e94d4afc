// llama-architecture GGUF files as a LlamaModel and its Tokenizer, and back.
//
// Keys (llama.cpp's llama-arch.cpp, LLM_KV_*): llama.context_length, llama.embedding_length,
// llama.block_count, llama.feed_forward_length, llama.attention.head_count,
// llama.attention.head_count_kv, llama.attention.layer_norm_rms_epsilon,
// llama.rope.dimension_count (= the head size: partial RoPE is refused), llama.rope.freq_base.
// Tensors (ggml order: ne0 = input width): token_embd [dim, vocab]; per block N blk.N.attn_norm
// [dim], blk.N.attn_q [dim, dim], attn_k / attn_v [dim, kv_dim], attn_output [dim, dim],
// blk.N.ffn_norm [dim], ffn_gate (llama2.c's w1) and ffn_up (w3) [dim, hidden], ffn_down (w2)
// [hidden, dim]; output_norm [dim]; output [dim, vocab], absent when tied to token_embd. Q and K
// are stored as llama2.c stores them: llama.cpp's LLAMA_ROPE_TYPE_NORM rotates consecutive pairs,
// as llama2.c does (ENGINE.md), so no permutation between the two.
//
// The tokenizer is tokenizer.ggml.model "llama" (SentencePiece-style: scores, byte fallback,
// "▁" for spaces) with <unk> 0, <s> 1, </s> 2 and the 256 byte tokens <0x00>..<0xFF> at 3..258,
// the layout qround's Tokenizer runs. Any other vocabulary still loads — the model evaluates token
// ids — and `tokenizer_error` says why no text can be tokenized.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qround/format.hpp"
#include "qround/io/gguf.hpp"
#include "qround/model/llama.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround::model {

// GGUF tensor names of the model's parts.
constexpr const char* kGgufTokenEmbedding = "token_embd.weight";
constexpr const char* kGgufOutput = "output.weight";
constexpr const char* kGgufOutputNorm = "output_norm.weight";
// "blk.3.ffn_down.weight" for linear layer 3 · 7 + BlockLinear::kW2.
std::string gguf_linear_name(int linear_index);

struct GgufLlama {
  LlamaModel model;
  std::optional<Tokenizer> tokenizer;  // empty when the vocabulary is not one qround can run
  std::string tokenizer_error;         // why it is empty
  // Every tokenizer.* key as the file stores it, whether or not qround runs that tokenizer: a
  // model quantized from this file carries it on unchanged (LlamaGgufOptions::tokenizer_metadata).
  std::vector<std::pair<std::string, io::GgufValue>> tokenizer_metadata;
  std::string name;  // general.name, may be empty
  // Every tensor's type as stored, in file order (a quantized input is dequantized on load).
  std::vector<std::pair<std::string, GgmlType>> tensor_types;
};

// Reads and validates a llama GGUF: the architecture (another one is an IoError naming it), every
// hyper-parameter (IoError naming the key when missing, of the wrong type or out of range), every
// tensor's presence, shape (IoError naming the tensor, its shape and the expected one) and finite
// values; unknown tensors and features qround does not compute (MoE experts, RoPE scaling, partial
// RoPE) are refused by name. Tensors of any type dequantize_ggml reads.
GgufLlama load_gguf_llama(const std::string& path);
GgufLlama gguf_llama_from(const io::GgufFile& file, const std::string& what);

// A tensor already in ggml's bytes (a quantized layer from encode_ggml).
struct GgufTensorBytes {
  GgmlType type = GgmlType::kF32;
  std::vector<std::uint8_t> bytes;
};

struct LlamaGgufOptions {
  // The type of every matrix without an entry in `tensors`: f32, f16 or bf16. Norm gains are
  // always f32 (as llama.cpp stores them).
  GgmlType float_type = GgmlType::kF32;
  // Tensors given as bytes, by GGUF name (e.g. "blk.0.attn_q.weight"); shapes are the model's.
  std::map<std::string, GgufTensorBytes> tensors;
  std::string name;                        // general.name (omitted when empty)
  std::optional<std::uint32_t> file_type;  // general.file_type (llama_ftype), when known
  // Further metadata, written after the model's (e.g. how qround quantized it).
  std::vector<std::pair<std::string, io::GgufValue>> metadata;
  // Without a Tokenizer: the tokenizer.* keys to write verbatim (a vocabulary qround cannot run,
  // e.g. a BPE one, read by load_gguf_llama); the engine tokenizes as the original file did.
  std::vector<std::pair<std::string, io::GgufValue>> tokenizer_metadata;
};

// The model and tokenizer as a llama GGUF (the tokenizer must have the vocabulary size and the
// layout above). InvalidArgument for a float_type that is not f32/f16/bf16, an unknown name in
// `tensors` or bytes that are not the size of that tensor in that type.
io::GgufFile llama_to_gguf(const LlamaModel& model, const Tokenizer& tokenizer,
                           const LlamaGgufOptions& options = {});
// The same with the tokenizer optional: null writes options.tokenizer_metadata verbatim
// (InvalidArgument when that is empty too, or lacks tokenizer.ggml.model).
io::GgufFile llama_to_gguf(const LlamaModel& model, const Tokenizer* tokenizer,
                           const LlamaGgufOptions& options);
// write_gguf(path, llama_to_gguf(...)): atomic.
void write_gguf_llama(const std::string& path, const LlamaModel& model, const Tokenizer& tokenizer,
                      const LlamaGgufOptions& options = {});
void write_gguf_llama(const std::string& path, const LlamaModel& model, const Tokenizer* tokenizer,
                      const LlamaGgufOptions& options);

}  // namespace qround::model
