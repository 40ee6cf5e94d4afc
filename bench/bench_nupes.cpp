// NUPES in Hessian mode: one training iteration (exact power-grid forward, Δ·H over all rows,
// backward) at AdaRound's shapes, the data-free exponent search, and a short full run at 768².
#include "learned_rounding_bench.hpp"
#include "qround/nupes.hpp"
#include "qround/scale_search.hpp"

namespace qround::bench {
namespace {

GridSpec nupes_spec() { return GridSpec::with_group_size(4, 128, /*symmetric=*/true); }

void BM_NupesIteration(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 3);
  NupesOptions data_free;
  data_free.fixed_exponent = 0.75f;
  const Grid grid = nupes_grid(p, nupes_spec(), data_free);
  const NupesState theta = NupesState::initial(p.weights(), grid);
  for (auto _ : state) benchmark::DoNotOptimize(nupes_evaluate(p, grid, theta).loss);
  set_iteration_counters(state, n, 1.0);
}
BENCHMARK(BM_NupesIteration)->Arg(768)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)
    ->Iterations(1)->UseRealTime();

void BM_NupesExponentSearch(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 4);
  for (auto _ : state) benchmark::DoNotOptimize(nupes_grid(p, nupes_spec(), {}).exponent[0]);
  state.counters["weights/s"] = benchmark::Counter(static_cast<double>(n) * n,
                                                   benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_NupesExponentSearch)->Arg(768)->Arg(2048)->Unit(benchmark::kMillisecond)
    ->Iterations(1)->UseRealTime();

void BM_NupesRun20(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 5);
  NupesOptions opt;
  opt.iterations = 20;
  for (auto _ : state) benchmark::DoNotOptimize(nupes(p, nupes_spec(), opt).report.loss);
  set_iteration_counters(state, n, 21.0);
}
BENCHMARK(BM_NupesRun20)->Arg(768)->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();

}  // namespace
}  // namespace qround::bench
