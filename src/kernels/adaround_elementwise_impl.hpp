// Bodies of the AdaRound elementwise kernels, included by one TU per ISA. Branch-free loops the
// compiler vectorises at the TU's vector width; GCC needs "no-trapping-math" (set by the including
// TU) to if-convert the float compares.
#pragma once

#include "adaround_elementwise.hpp"
#include "qround/detail/rectified_sigmoid.hpp"

namespace qround::kernels::impl {

// Internal linkage, like the math they use: each ISA's TU keeps its own copy.
static inline void soft_pass(const SoftPassArgs& a) {
  const float zeta = a.zeta, gamma = a.gamma;
  const float s = a.s, z = a.z, lo = a.lo, hi = a.hi, shift = a.shift;
  const float* __restrict alpha = a.alpha;
  const float* __restrict base = a.base;
  const float* __restrict w = a.w;
  float* __restrict hv = a.h;
  float* __restrict dhv = a.dh;
  float* __restrict chain = a.chain;
  float* __restrict soft = a.soft;
#pragma omp simd
  for (long c = 0; c < a.len; ++c) {
    float h, dh;
    detail::rectified_sigmoid(alpha[c], zeta, gamma, h, dh);
    const float q = base[c] + h;
    const bool inside = q >= lo && q <= hi;
    const float qc = q < lo ? lo : (q > hi ? hi : q);
    hv[c] = h;
    dhv[c] = dh;
    chain[c] = inside ? s * dh : 0.0f;
    soft[c] = s * (qc - z) - shift * w[c];
  }
}

static inline void grad_pass(const GradPassArgs& a) {
  const float scale = a.scale, lambda = a.lambda, beta = a.beta;
  const float* __restrict gw = a.grad_w;
  const float* __restrict chain = a.chain;
  const float* __restrict hv = a.h;
  const float* __restrict dh = a.dh;
  float* __restrict grad = a.grad;
  if (!a.regularise) {
#pragma omp simd
    for (long i = 0; i < a.len; ++i) grad[i] = scale * gw[i] * chain[i];
    return;
  }
  // Where the clamp holds h at 0 or 1, dh = 0 and the regulariser adds nothing.
#pragma omp simd
  for (long i = 0; i < a.len; ++i) {
    float value, dvalue;
    detail::rounding_regularizer(hv[i], beta, value, dvalue);
    grad[i] = scale * gw[i] * chain[i] + lambda * dvalue * dh[i];
  }
}

}  // namespace qround::kernels::impl
