// Causal softmax attention of one head, forward and backward, for the block-reconstruction
// training loop (model/llama_block.cpp). Heads are small (8–128 dimensions): a general GEMM with
// so short an inner dimension spends its time packing, so these kernels work row by row along
// contiguous keys instead.
//
// Layout: keys and values transposed, `kt`, `vt` = head_size × stride (row d holds dimension d of
// every token; columns ≥ tokens zero), stride a multiple of kAttentionLanes. Row i of `probs`
// holds softmax weights 0..i, zero up to the next multiple of kAttentionLanes.
//
// Every path (baseline, AVX2, AVX-512) is compiled from attention_impl.hpp without FMA
// contraction, with one exp polynomial and sums over kAttentionLanes partial sums combined in one
// fixed order: the results are the same bits on every ISA. POD-only header.
#pragma once

namespace qround::kernels {

constexpr long kAttentionLanes = 8;

// What both passes read of one head.
struct AttentionHead {
  long tokens = 0, head_size = 0, stride = 0;
  float scale = 1.0f;        // 1/√head_size
  const float* q = nullptr;  // row i at q + i·ldq, head_size floats
  long ldq = 0;
  const float* kt = nullptr;  // head_size × stride
  const float* vt = nullptr;
};

struct AttentionForwardArgs : AttentionHead {
  float* probs = nullptr;  // row i at probs + i·probs_ld (probs_ld = 0: one reused row)
  long probs_ld = 0;
  float* out = nullptr;  // row i at out + i·ldo
  long ldo = 0;
};

// Adds this head's gradients: dq rows are written, dkt / dvt (head_size × stride) accumulated.
struct AttentionBackwardArgs : AttentionHead {
  const float* probs = nullptr;  // as the forward pass left it, probs_ld = stride
  const float* datt = nullptr;   // dL/d(output), row i at datt + i·ldd
  long ldd = 0;
  float* dq = nullptr;  // row i at dq + i·lddq
  long lddq = 0;
  float* dkt = nullptr;      // head_size × stride, accumulated
  float* dvt = nullptr;      // head_size × stride, accumulated
  float* scratch = nullptr;  // tokens × stride floats
};

void attention_forward(const AttentionForwardArgs& a) noexcept;
void attention_backward(const AttentionBackwardArgs& a) noexcept;

// The paths behind them (exposed for tests and benchmarks).
void attention_forward_scalar(const AttentionForwardArgs& a) noexcept;
void attention_backward_scalar(const AttentionBackwardArgs& a) noexcept;
#ifdef QROUND_HAVE_AVX2
void attention_forward_avx2(const AttentionForwardArgs& a) noexcept;
void attention_backward_avx2(const AttentionBackwardArgs& a) noexcept;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
void attention_forward_avx512(const AttentionForwardArgs& a) noexcept;
void attention_backward_avx512(const AttentionBackwardArgs& a) noexcept;
#endif
// Name of the path attention_forward / attention_backward take now: the widest compiled one no
// wider than qround::active_isa().
const char* attention_isa() noexcept;

}  // namespace qround::kernels
