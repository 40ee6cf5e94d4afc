// The rectified sigmoid of AdaRound (Louizos et al.'s stretched sigmoid, clamped):
//   h(α) = clamp(σ(α)(ζ − γ) + γ, 0, 1)
// with its derivative (0 where the clamp is active; the bounds themselves still pass the gradient,
// as torch.clamp does), an inverse for initialising α from a target h, and the rounding
// regulariser. Plain arithmetic only (no libm, no STL), so hot loops vectorise and per-ISA kernel
// files may include it.
#pragma once

#include "qround/detail/fast_math.hpp"

namespace qround::detail {

// h(α) and dh/dα. Free functions here have internal linkage (see fast_math.hpp): kernel TUs call
// these, never the struct's members.
static inline void rectified_sigmoid(float alpha, float zeta, float gamma, float& h, float& dh) {
  const float sig = 1.0f / (1.0f + fast_exp(-alpha));
  const float stretched = sig * (zeta - gamma) + gamma;
  const bool inside = stretched >= 0.0f && stretched <= 1.0f;
  h = stretched < 0.0f ? 0.0f : (stretched > 1.0f ? 1.0f : stretched);
  dh = inside ? (zeta - gamma) * sig * (1.0f - sig) : 0.0f;
}

struct RectifiedSigmoid {
  float zeta = 1.1f;
  float gamma = -0.1f;

  // h(α) and dh/dα together: one exp per call.
  void eval(float alpha, float& h, float& dh) const {
    rectified_sigmoid(alpha, zeta, gamma, h, dh);
  }
  float h(float alpha) const {
    float v, d;
    eval(alpha, v, d);
    return v;
  }

  // α with h(α) = target. The target is first kept `margin` inside (0, 1): exactly 0 or 1 would put
  // α on the clamp's edge, where float rounding can leave it with no gradient at all; and a
  // sigmoid argument of 0 or 1 (γ = 0 or ζ = 1) would need an infinite α.
  float inverse(float target, float margin = 1e-4f) const {
    float t = target < margin ? margin : target;
    t = t > 1.0f - margin ? 1.0f - margin : t;
    float p = (t - gamma) / (zeta - gamma);
    p = p < 1e-6f ? 1e-6f : (p > 1.0f - 1e-6f ? 1.0f - 1e-6f : p);
    return fast_log(p / (1.0f - p));
  }
};

// AdaRound's rounding regulariser for one h: 1 − |2h − 1|^β, and its derivative in h (β ≥ 1).
static inline void rounding_regularizer(float h, float beta, float& value, float& dvalue) {
  const float u = 2.0f * h - 1.0f;
  const float a = u < 0.0f ? -u : u;
  // |u|^(β−1), with 0^0 = 1 for β = 1.
  const float pw = a > 1e-30f ? fast_exp((beta - 1.0f) * fast_log(a > 1e-30f ? a : 1.0f))
                              : (beta == 1.0f ? 1.0f : 0.0f);
  value = 1.0f - pw * a;
  dvalue = -2.0f * beta * pw * (u > 0.0f ? 1.0f : (u < 0.0f ? -1.0f : 0.0f));
}

}  // namespace qround::detail
