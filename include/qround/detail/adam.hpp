// Adam (Kingma & Ba) over a flat float array, with the bias correction of the paper. Shared by the
// learned rounding methods (AdaRound, FlexRound, NUPES). One optimizer per independent parameter
// block (e.g. per row), so rows can be stepped in parallel with results independent of threads.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace qround::detail {

struct AdamConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

class Adam {
 public:
  Adam() = default;
  Adam(std::size_t size, AdamConfig config) : config_(config), m_(size, 0.0f), v_(size, 0.0f) {}

  std::size_t size() const { return m_.size(); }
  long steps() const { return t_; }

  // One step on params[0..size) with gradient grad, at learning rate `lr` (schedules pass theirs).
  void step(float* params, const float* grad, double lr) {
    ++t_;
    const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(t_));
    const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
    const float step_size = static_cast<float>(lr / bc1);
    const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    const float eps = static_cast<float>(config_.eps);
    for (std::size_t i = 0; i < m_.size(); ++i) {
      const float g = grad[i];
      m_[i] = b1 * m_[i] + (1.0f - b1) * g;
      v_[i] = b2 * v_[i] + (1.0f - b2) * g * g;
      params[i] -= step_size * m_[i] / (std::sqrt(v_[i]) * inv_sqrt_bc2 + eps);
    }
  }
  void step(float* params, const float* grad) { step(params, grad, config_.lr); }

 private:
  AdamConfig config_;
  std::vector<float> m_, v_;
  long t_ = 0;
};

}  // namespace qround::detail
