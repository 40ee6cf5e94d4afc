// Schedules shared by the learned methods: learning-rate decay and AdaRound's β annealing.
#pragma once

#include <algorithm>
#include <cmath>

namespace qround::detail {

// Cosine decay from `base` at step 0 to `base·final_fraction` at step `total`.
inline double cosine_lr(double base, long step, long total, double final_fraction = 0.0) {
  if (total <= 0) return base;
  const double t = std::clamp(static_cast<double>(step) / static_cast<double>(total), 0.0, 1.0);
  const double pi = 3.14159265358979323846;
  return base * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + std::cos(pi * t)));
}

enum class AnnealShape { kCosine, kLinear };

// Value annealed from `start` to `end` between fractions `warm` and 1 of `total` steps: `start`
// before the warm-up ends (the caller usually disables the regulariser there), `end` at the end.
inline double anneal(double start, double end, long step, long total, double warm,
                     AnnealShape shape) {
  const double begin = warm * static_cast<double>(total);
  if (static_cast<double>(step) <= begin || total <= 0) return start;
  const double t = std::clamp(
      (static_cast<double>(step) - begin) / (static_cast<double>(total) - begin), 0.0, 1.0);
  if (shape == AnnealShape::kLinear) return start + (end - start) * t;
  const double pi = 3.14159265358979323846;
  return end + 0.5 * (start - end) * (1.0 + std::cos(pi * t));
}

}  // namespace qround::detail
