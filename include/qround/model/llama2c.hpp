// A llama2.c checkpoint (legacy float32 "v0" format) and its float forward pass.
//
// File: 7 × int32 header {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len}
// (vocab_size < 0: a separate classifier follows, else it is tied to the token embedding), then
// float32 tensors stacked over layers: tok_embedding[vocab][dim], rms_att[L][dim], wq[L][dim][dim],
// wk[L][kv_dim][dim], wv[L][kv_dim][dim], wo[L][dim][dim], rms_ffn[L][dim], w1[L][hidden][dim],
// w2[L][dim][hidden], w3[L][hidden][dim], rms_final[dim], freq_cis_real[seq][head/2],
// freq_cis_imag[seq][head/2], (wcls[vocab][dim]). Every matrix is row-major out × in.
//
// The forward pass is the Llama-2 block: RMSNorm (ε 1e-5), RoPE (θ 10 000, on consecutive pairs
// within each head), grouped-query causal attention, SwiGLU feed-forward, tied classifier.
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

struct Llama2cConfig {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  bool shared_classifier = true;
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
  void validate() const;  // throws IoError naming the bad field (it comes from a file)
};

// The linear layers of one transformer block, in execution order.
enum class BlockLinear : int { kQ, kK, kV, kO, kW1, kW3, kW2 };
constexpr int kLinearsPerBlock = 7;
const char* to_string(BlockLinear l);  // "wq", "wk", "wv", "wo", "w1", "w3", "w2"

struct Llama2cBlock {
  VectorF rms_att, rms_ffn;
  std::array<MatrixF, kLinearsPerBlock> linear;  // indexed by BlockLinear, each out × in
};

struct Llama2cWeights {
  MatrixF token_embedding;  // vocab × dim
  std::vector<Llama2cBlock> blocks;
  VectorF rms_final;
  MatrixF freq_cis_real, freq_cis_imag;  // seq_len × head_size/2 (as stored; recomputed in use)
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

class Llama2cModel {
 public:
  // Reads and validates a checkpoint. Throws IoError on anything malformed or truncated.
  static Llama2cModel load(const std::string& path);
  Llama2cModel(Llama2cConfig config, Llama2cWeights weights);  // validates shapes

  const Llama2cConfig& config() const { return config_; }
  const Llama2cWeights& weights() const { return weights_; }

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

  // Logits (tokens × vocab) for a window of at most seq_len tokens at positions 0..n−1, processed
  // at once with a causal mask. `observe` (optional) sees every linear layer's input; if it
  // returns false the pass stops and the returned matrix is empty.
  MatrixF forward(const std::vector<int>& tokens, const LinearInputFn& observe = {}) const;

 private:
  Llama2cConfig config_;
  Llama2cWeights weights_;
  std::vector<std::shared_ptr<const PackedMatrix>> packed_;  // per linear layer, may be null
  std::vector<PackedCompute> compute_;
  MatrixF rope_cos_, rope_sin_;  // seq_len × head_size/2
};

}  // namespace qround::model
