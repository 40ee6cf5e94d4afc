// Quantizes a small random layer with round-to-nearest through the installed qround package.
#include <cmath>
#include <cstdio>
#include <random>

#include "qround/nearest.hpp"

int main() {
  std::mt19937 gen(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  qround::MatrixF w(16, 64), x(128, 64);
  for (qround::Index i = 0; i < w.size(); ++i) w.data()[i] = 0.1f * normal(gen);
  for (qround::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(gen);

  qround::LayerProblem problem(w);
  problem.add_batch(x);
  const qround::QuantizedLayer q =
      qround::round_to_nearest(problem, qround::GridSpec::with_group_size(4, 32));

  const int lo = q.codes.cast<int>().minCoeff(), hi = q.codes.cast<int>().maxCoeff();
  const double rel = q.report.relative_loss;
  std::printf("codes in [%d, %d], relative loss %.4g\n", lo, hi, rel);
  if (lo < 0 || hi > 15 || !std::isfinite(rel) || rel <= 0.0 || rel >= 1.0) {
    std::fprintf(stderr, "consumer: unexpected result\n");
    return 1;
  }
  return 0;
}
