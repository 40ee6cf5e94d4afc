// One Llama transformer block as a differentiable function: the forward pass LlamaModel computes
// with (the only copy of it), an optional tape of the intermediates, and the hand-written backward
// pass block reconstruction trains with.
//
//   u = RMSNorm(x; g_att)           q, k, v = u·Wqᵀ, u·Wkᵀ, u·Wvᵀ   (RoPE on q and k)
//   a = causal GQA softmax(q kᵀ/√hs) v              x' = x + a·Woᵀ
//   u' = RMSNorm(x'; g_ffn)         y = x' + (SiLU(u'·W1ᵀ) ⊙ u'·W3ᵀ)·W2ᵀ
//
// One window of T tokens at positions 0..T−1 (rows of x). Templated on the scalar: float is what
// the model and the training run, double is what the finite-difference tests check the gradients
// in. Explicitly instantiated for both in src/model/llama_block.cpp.
#pragma once

#include <array>
#include <functional>
#include <vector>

#include "qround/model/llama.hpp"

namespace qround::model {

template <typename Scalar>
using BlockMatrix = RowMatrix<Scalar>;
template <typename Scalar>
using BlockVector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

// What a block computes with: the two RMSNorm gains and the seven weight matrices (out × in,
// indexed by BlockLinear). Pointers, so soft weights under training need no copy into a
// LlamaBlock.
template <typename Scalar>
struct BlockParams {
  const BlockVector<Scalar>* rms_att = nullptr;
  const BlockVector<Scalar>* rms_ffn = nullptr;
  std::array<const BlockMatrix<Scalar>*, kLinearsPerBlock> linear{};
};

// The intermediates the backward pass needs (filled by block_forward when given).
template <typename Scalar>
struct BlockTape {
  BlockMatrix<Scalar> x, u, q, k, v, att, x_mid, u_mid, gate, up, act;
  BlockVector<Scalar> inv_rms, inv_rms_mid;  // 1/√(mean(x²)+ε) per token
  std::vector<BlockMatrix<Scalar>> probs;    // per head: softmax weights, row i entries 0..i
};

// Row-wise RMSNorm with gain g (the model's float order of operations); inv_rms, when given,
// receives 1/√(mean(x²)+ε) per row.
template <typename Scalar>
void rms_norm(const BlockMatrix<Scalar>& x, const BlockVector<Scalar>& g, float eps,
              BlockMatrix<Scalar>& out, BlockVector<Scalar>* inv_rms = nullptr);

// Computes out = in · Wᵀ for linear `which` of the block in place of the plain product (the
// model's packed kernels, observers). Returning false stops the forward pass.
template <typename Scalar>
using BlockLinearFn =
    std::function<bool(BlockLinear which, const BlockMatrix<Scalar>& in, BlockMatrix<Scalar>& out)>;

// x (T × dim, T ≤ seq_len) becomes the block's output. `apply` (optional) computes the linears;
// without it they are params.linear. Returns false if `apply` stopped the pass (x is then
// unspecified). With `tape`, records what block_backward needs. `threads` > 1 splits the products'
// rows and the attention's kv heads over that many OpenMP threads (the result does not depend on
// it); callers that already run windows in parallel pass 1.
template <typename Scalar>
bool block_forward(const LlamaConfig& config, const RopeTable& rope,
                   const BlockParams<Scalar>& params, BlockMatrix<Scalar>& x,
                   const BlockLinearFn<Scalar>& apply = {}, BlockTape<Scalar>* tape = nullptr,
                   int threads = 1);

// Given dL/dy for the block output of a taped forward pass, writes dL/dW of every linear into
// `grad_weights` (each resized to its weight's shape) and, when `grad_input` is given, dL/dx.
// The gains are constants here. `threads` as in block_forward.
template <typename Scalar>
void block_backward(const LlamaConfig& config, const RopeTable& rope,
                    const BlockParams<Scalar>& params, const BlockTape<Scalar>& tape,
                    const BlockMatrix<Scalar>& grad_output,
                    std::array<BlockMatrix<Scalar>, kLinearsPerBlock>& grad_weights,
                    BlockMatrix<Scalar>* grad_input = nullptr, int threads = 1);

}  // namespace qround::model
