// LayerProblem kernels at LLM size: Hessian accumulation (H += XᵀX, 2048 tokens × 4096 inputs) and
// loss / gradient evaluation of a 4096 × 4096 layer.
//
// The Hessian and the loss are computed in double, so the f64 FMA peak is their ceiling:
// pct_f64_peak is GFLOP/s as a share of that peak, measured by this binary on this machine with the
// benchmark's thread count (machine_limits.hpp). Numbers on a shared machine are noisy.
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

#include "bench_data.hpp"
#include "machine_limits.hpp"
#include "qround/detail/dense.hpp"
#include "qround/detail/rng.hpp"
#include "qround/problem.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using qround::Index;
using qround::MatrixF;

using qround::bench::random_matrix;

// Runs the benchmark loop on `threads` OpenMP threads and reports GFLOP/s and the share of the
// f64 peak measured here with as many threads.
template <typename Body>
void run(benchmark::State& state, int threads, double flops_per_iteration, Body body) {
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
#endif
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) body();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#ifdef _OPENMP
  omp_set_num_threads(saved);
#endif
  const double flops = flops_per_iteration * static_cast<double>(state.iterations()) / seconds;
  state.counters["GFLOP/s"] = flops / 1e9;
  qround::bench::report_share(state, flops, qround::bench::Limit::kF64Fma, threads,
                              benchmark::Counter::kDefaults);
  state.SetLabel(std::string("kernel ") + qround::detail::dense_kernel_name() + ", " +
                 std::to_string(threads) + " thread(s); measured f64 peak " +
                 std::to_string(static_cast<int>(
                     qround::bench::machine_limit(qround::bench::Limit::kF64Fma, threads))) +
                 " GFLOP/s");
}

// H += XᵀX for one batch. FLOPs counted as one triangle incl. the diagonal: tokens·n·(n+1).
void BM_HessianAccumulate(benchmark::State& state) {
  const Index tokens = state.range(0), in = state.range(1);
  const MatrixF x = random_matrix(tokens, in, 1, 1.0f);
  qround::LayerProblem problem(random_matrix(1, in, 2, 0.1f));
  run(state, static_cast<int>(state.range(2)), static_cast<double>(tokens) * in * (in + 1), [&] {
    problem.add_batch(x);  // the lower triangle is mirrored once, on the first read of H
    benchmark::ClobberMemory();
  });
}
BENCHMARK(BM_HessianAccumulate)
    ->ArgNames({"tokens", "in", "threads"})
    ->Args({2048, 4096, 1})
    ->Args({2048, 4096, 2})
    ->Args({2048, 1024, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// A problem with a ready Hessian (from 2048 tokens) for the evaluation benchmarks.
struct EvalSetup {
  qround::LayerProblem problem;
  MatrixF w_hat;
};
EvalSetup make_eval(Index out, Index in) {
  const MatrixF w = random_matrix(out, in, 3, 0.05f);
  qround::LayerProblem p(w);
  p.add_batch(random_matrix(2048, in, 4, 1.0f));
  p.output_energy();  // derived terms computed once, outside the timing
  return {std::move(p), w + random_matrix(out, in, 5, 0.005f)};
}

// loss(Ŵ) = Σ_i Δ_i H Δ_iᵀ: 2·out·in² FLOPs in the Hessian form.
void BM_Loss(benchmark::State& state) {
  const EvalSetup s = make_eval(state.range(0), state.range(1));
  run(state, static_cast<int>(state.range(2)),
      2.0 * state.range(0) * state.range(1) * state.range(1),
      [&] { benchmark::DoNotOptimize(s.problem.loss(s.w_hat)); });
}
BENCHMARK(BM_Loss)
    ->ArgNames({"out", "in", "threads"})
    ->Args({4096, 4096, 1})
    ->Args({4096, 4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// gradient(Ŵ) = 2(ΔH + R): the same product, materialised.
void BM_Gradient(benchmark::State& state) {
  const EvalSetup s = make_eval(state.range(0), state.range(1));
  run(state, static_cast<int>(state.range(2)),
      2.0 * state.range(0) * state.range(1) * state.range(1),
      [&] { benchmark::DoNotOptimize(s.problem.gradient(s.w_hat).data()); });
}
BENCHMARK(BM_Gradient)
    ->ArgNames({"out", "in", "threads"})
    ->Args({4096, 4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
