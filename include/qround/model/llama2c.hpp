// llama2.c checkpoints (legacy float32 "v0" format) as a LlamaModel.
//
// File: 7 × int32 header {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len}
// (vocab_size < 0: a separate classifier follows, else it is tied to the token embedding), then
// float32 tensors stacked over layers: tok_embedding[vocab][dim], rms_att[L][dim], wq[L][dim][dim],
// wk[L][kv_dim][dim], wv[L][kv_dim][dim], wo[L][dim][dim], rms_ffn[L][dim], w1[L][hidden][dim],
// w2[L][dim][hidden], w3[L][hidden][dim], rms_final[dim], freq_cis_real[seq][head/2],
// freq_cis_imag[seq][head/2], (wcls[vocab][dim]). RMSNorm ε 1e-5 and RoPE θ 10 000 are llama2.c's
// constants.
#pragma once

#include <string>

#include "qround/model/llama.hpp"

namespace qround::model {

// Reads and validates a checkpoint. Throws IoError on anything malformed or truncated.
LlamaModel load_llama2c(const std::string& path);

}  // namespace qround::model
