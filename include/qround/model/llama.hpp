// The Llama transformer qround evaluates and quantizes: one implementation behind two loaders
// (llama2.c checkpoints, qround/model/llama2c.hpp; llama-architecture GGUF files,
// qround/model/gguf_llama.hpp).
//
// The forward pass is the Llama-2 block: RMSNorm (ε from the config), RoPE (θ from the config, on
// consecutive pairs within each head, as llama2.c and llama.cpp's LLAMA_ROPE_TYPE_NORM do),
// grouped-query causal attention, SwiGLU feed-forward, a classifier (tied to the token embedding
// or separate). Every matrix is row-major out × in.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qround/packed.hpp"
#include "qround/types.hpp"

namespace qround::model {

struct LlamaConfig {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  bool shared_classifier = true;
  float rms_eps = 1e-5f;        // llama2.c's constant; GGUF llama.attention.layer_norm_rms_epsilon
  float rope_theta = 10000.0f;  // llama2.c's constant; GGUF llama.rope.freq_base
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
  // Throws IoError naming the bad field (it comes from a file); `source` prefixes the message.
  void validate(const char* source = "llama config") const;
};

// RoPE angles of a config, seq_len × head_size/2: pos · θ^(−2j/head_size) for pair j, in float as
// llama2.c computes them.
struct RopeTable {
  MatrixF cos, sin;
  static RopeTable for_config(const LlamaConfig& config);
};

// The linear layers of one transformer block, in execution order.
enum class BlockLinear : int { kQ, kK, kV, kO, kW1, kW3, kW2 };
constexpr int kLinearsPerBlock = 7;
const char* to_string(BlockLinear l);  // "wq", "wk", "wv", "wo", "w1", "w3", "w2"

struct LlamaBlock {
  VectorF rms_att, rms_ffn;
  std::array<MatrixF, kLinearsPerBlock> linear;  // indexed by BlockLinear, each out × in
};

struct LlamaWeights {
  MatrixF token_embedding;  // vocab × dim
  std::vector<LlamaBlock> blocks;
  VectorF rms_final;
  // llama2.c's stored RoPE tables, seq_len × head_size/2 (kept as read, recomputed in use; empty
  // for a GGUF model).
  MatrixF freq_cis_real, freq_cis_imag;
  MatrixF classifier;  // vocab × dim; empty when tied to token_embedding
};

// How a packed linear layer is computed in the forward pass.
enum class PackedCompute {
  kInteger,           // qgemm: int8 activations per token, exact int32 accumulation (W4A8/W8A8);
                      // non-uniform (NUPES) grids fall back to kFloatActivations
  kFloatActivations,  // qgemm_float: weights dequantized on the fly, f32 activations
};

// Called with the input (tokens × in) of linear layer `index` = block * 7 + BlockLinear just before
// it is applied. Returning false stops the forward pass early (the caller has what it needs).
using LinearInputFn = std::function<bool(int index, const MatrixFRef& x)>;

class LlamaModel {
 public:
  LlamaModel(LlamaConfig config, LlamaWeights weights);  // validates shapes

  const LlamaConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }

  int num_linear() const { return config_.n_layers * kLinearsPerBlock; }
  // "layers.3.w2" style names, as in --dump-dequant.
  std::string linear_name(int index) const;
  const MatrixF& linear(int index) const;
  // Replaces the weights a linear layer computes with (same shape); drops any packed form.
  void set_linear(int index, const MatrixFRef& w);
  // From now on the layer computes through the packed kernels; linear(index) becomes the
  // dequantized weights.
  void set_linear_packed(int index, std::shared_ptr<const PackedMatrix> packed,
                         PackedCompute compute = PackedCompute::kInteger);
  // The packed form of a layer, or nullptr while it computes in float.
  const PackedMatrix* packed_linear(int index) const;
  // Replaces the token embedding (vocab × dim) or the separate classifier (an InvalidArgument when
  // it is tied), e.g. with their dequantized weights.
  void set_token_embedding(const MatrixFRef& w);
  void set_classifier(const MatrixFRef& w);

  // Logits (tokens × vocab) for a window of at most seq_len tokens at positions 0..n−1, processed
  // at once with a causal mask. `observe` (optional) sees every linear layer's input; if it
  // returns false the pass stops and the returned matrix is empty. With `observe_classifier` it
  // also sees the classifier's input (the final RMS-normed hidden state) as index num_linear().
  MatrixF forward(const std::vector<int>& tokens, const LinearInputFn& observe = {},
                  bool observe_classifier = false) const;

  // The pieces of forward(), for block-wise work (model/llama_block.hpp has the block itself):
  // the hidden state entering block 0 (the window's token embeddings), block `l` applied in place
  // with each layer's current compute (packed kernels or float), and the logits of a final
  // hidden state.
  MatrixF embed(const std::vector<int>& tokens) const;
  void forward_block(int l, MatrixF& x) const;
  // The same with `observe` seeing each of the block's linear inputs (indices as in forward);
  // false when it stopped the pass (x is then unspecified).
  bool forward_block(int l, MatrixF& x, const LinearInputFn& observe) const;
  MatrixF logits(const MatrixF& hidden) const;
  const RopeTable& rope() const { return rope_; }

 private:
  LlamaConfig config_;
  LlamaWeights weights_;
  std::vector<std::shared_ptr<const PackedMatrix>> packed_;  // per linear layer, may be null
  std::vector<PackedCompute> compute_;
  RopeTable rope_;
  // Block l through the shared implementation, with `observe` seeing each linear's input.
  bool run_block(int l, MatrixF& x, const LinearInputFn& observe) const;
  // Final RMSNorm and classifier; `observe` (optional) sees the classifier's input as index
  // num_linear() and may stop the pass (an empty result).
  MatrixF head(const MatrixF& hidden, const LinearInputFn& observe) const;
};

}  // namespace qround::model
