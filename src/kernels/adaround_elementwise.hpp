// AdaRound's elementwise passes (everything per weight except the GEMM), as raw-pointer kernels
// compiled twice from one source (adaround_elementwise_impl.hpp): baseline flags and AVX-512.
// POD-only header.
#pragma once

namespace qround::kernels {

// Soft weights of `len` consecutive weights sharing one (s, z):
//   h, dh = h(α), dh/dα;  q = base + h;  soft = s·(clamp(q, lo, hi) − z) − shift·w;
//   chain = ∂(s·clamp(q))/∂α = [lo ≤ q ≤ hi]·s·dh
struct SoftPassArgs {
  const float* alpha;
  const float* base;  // ⌊w/s⌋ + z
  const float* w;
  float* h;
  float* dh;
  float* chain;
  float* soft;
  long len;
  float s, z, lo, hi;
  float shift;  // 1: write Ŵ − W (Hessian mode), 0: write Ŵ
  float zeta, gamma;
};

// ∂loss/∂α = scale·grad_w·chain + [regularise]·λ·∂(1 − |2h − 1|^β)/∂h·dh.
struct GradPassArgs {
  const float* grad_w;
  const float* chain;
  const float* h;
  const float* dh;
  float* grad;
  long len;
  float scale, lambda, beta;
  bool regularise;
};

void adaround_soft_pass(const SoftPassArgs& a) noexcept;
void adaround_grad_pass(const GradPassArgs& a) noexcept;

void adaround_soft_pass_scalar(const SoftPassArgs& a) noexcept;
void adaround_grad_pass_scalar(const GradPassArgs& a) noexcept;
#ifdef QROUND_HAVE_AVX512VNNI
void adaround_soft_pass_avx512(const SoftPassArgs& a) noexcept;
void adaround_grad_pass_avx512(const GradPassArgs& a) noexcept;
#endif

}  // namespace qround::kernels
