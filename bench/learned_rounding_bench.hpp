// Shared setup of the FlexRound / NUPES benchmarks: a square layer in Hessian mode. H is built as
// d·I + V Vᵀ (V: in × 32), cheap to form at 4096² and as costly per iteration as any dense H.
// pct_f32_peak: GFLOP/s as a share of the f32 FMA peak this binary measures on this machine with
// OpenMP's default thread count (BM_PeakFmaF32), which the methods use.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <string_view>

#include "machine_limits.hpp"
#include "qround/detail/rng.hpp"
#include "qround/problem.hpp"

namespace qround::bench {

inline LayerProblem square_hessian_problem(Index n, std::uint64_t seed) {
  detail::Rng rng(seed);
  MatrixF w(n, n);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(0.02 * rng.normal());
  MatrixD v(n, 32);
  for (Index i = 0; i < v.size(); ++i) v.data()[i] = rng.normal();
  MatrixD h = v * v.transpose();
  h.diagonal().array() += static_cast<double>(n);
  LayerProblem p = LayerProblem::from_hessian(w, h, 2048);
  p.baseline_loss();  // derive R and the baselines once, outside the timed loops
  return p;
}

// Counters for one iteration = one Hessian product over all rows (2·out·in² flops).
inline void set_iteration_counters(benchmark::State& state, Index n, double iterations_per_call) {
  const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) *
                       static_cast<double>(n) * iterations_per_call;
  state.counters["it/s"] =
      benchmark::Counter(iterations_per_call, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  report_share(state, flops, Limit::kF32Fma, default_threads());
}

// Times `iterations` training iterations of `run(iterations, progress)` between its first and last
// progress callbacks (the methods call it after every iteration below 100), so setup (grid, packing
// H) and the final exact-loss guards are excluded, as in AdaRound's benchmark.
template <class Run>
void time_training_iterations(benchmark::State& state, Index n, int iterations, Run run) {
  for (auto _ : state) {
    std::chrono::steady_clock::time_point first, last;
    int calls = 0;
    const ProgressFn progress = [&](double, std::string_view) {
      last = std::chrono::steady_clock::now();
      if (calls++ == 0) first = last;
      return true;
    };
    run(iterations, progress);
    state.SetIterationTime(std::chrono::duration<double>(last - first).count());
  }
  set_iteration_counters(state, n, iterations);
}

}  // namespace qround::bench
