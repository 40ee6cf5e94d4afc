// The rectified sigmoid of AdaRound (Louizos et al.'s stretched sigmoid, clamped):
//   h(α) = clamp(σ(α)(ζ − γ) + γ, 0, 1)
// with its derivative (0 where the clamp is active; the bounds themselves still pass the gradient,
// as torch.clamp does) and an inverse for initialising α from a target h.
#pragma once

#include <algorithm>
#include <cmath>

#include "qround/detail/fast_math.hpp"

namespace qround::detail {

struct RectifiedSigmoid {
  float zeta = 1.1f;
  float gamma = -0.1f;

  // h(α) and dh/dα together: one exp per call.
  void eval(float alpha, float& h, float& dh) const {
    const float sig = 1.0f / (1.0f + fast_exp(-alpha));
    const float stretched = sig * (zeta - gamma) + gamma;
    const bool inside = stretched >= 0.0f && stretched <= 1.0f;
    h = stretched < 0.0f ? 0.0f : (stretched > 1.0f ? 1.0f : stretched);
    dh = inside ? (zeta - gamma) * sig * (1.0f - sig) : 0.0f;
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
    const double t = std::clamp(static_cast<double>(target), static_cast<double>(margin),
                                1.0 - static_cast<double>(margin));
    double p = (t - gamma) / (static_cast<double>(zeta) - gamma);
    p = std::clamp(p, 1e-6, 1.0 - 1e-6);
    return static_cast<float>(std::log(p / (1.0 - p)));
  }
};

// AdaRound's rounding regulariser for one h: 1 − |2h − 1|^β, and its derivative in h (β ≥ 1).
inline void rounding_regularizer(float h, float beta, float& value, float& dvalue) {
  const float u = 2.0f * h - 1.0f;
  const float a = std::fabs(u);
  // |u|^(β−1), with 0^0 = 1 for β = 1.
  const float pw = a > 1e-30f ? fast_exp((beta - 1.0f) * fast_log(a > 1e-30f ? a : 1.0f))
                              : (beta == 1.0f ? 1.0f : 0.0f);
  value = 1.0f - pw * a;
  dvalue = -2.0f * beta * pw * (u > 0.0f ? 1.0f : (u < 0.0f ? -1.0f : 0.0f));
}

}  // namespace qround::detail
