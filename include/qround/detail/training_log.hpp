// Bookkeeping shared by the iterative methods: a sampled loss curve (first, last and about
// `points` evenly spaced iterations) and a progress callback throttled to ~1 % steps.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "qround/error.hpp"
#include "qround/types.hpp"

namespace qround::detail {

class TrainingLog {
 public:
  TrainingLog(const char* method, int iterations, const ProgressFn& progress, int points = 100)
      : method_(method), iterations_(iterations), progress_(progress),
        stride_(iterations > points ? (iterations + points - 1) / points : 1) {}

  // Records (it, loss) when `it` is on the sampling stride or the last iteration.
  void record(int it, double loss) {
    if (it % stride_ == 0 || it == iterations_) curve_.emplace_back(it, loss);
  }
  // Reports progress every ~1 % of the iterations; throws Cancelled if the callback says stop.
  void progress(int it, double loss) {
    if (!progress_) return;
    const int step = iterations_ >= 100 ? iterations_ / 100 : 1;
    if (it % step != 0 && it != iterations_) return;
    const double fraction = iterations_ > 0 ? static_cast<double>(it) / iterations_ : 1.0;
    if (!progress_(fraction, fmt::format("{} iteration {}/{} loss {:.6g}", method_, it,
                                         iterations_, loss)))
      throw Cancelled();
  }
  std::vector<std::pair<int, double>> take_curve() { return std::move(curve_); }

 private:
  const char* method_;
  int iterations_;
  const ProgressFn& progress_;
  int stride_;
  std::vector<std::pair<int, double>> curve_;
};

}  // namespace qround::detail
