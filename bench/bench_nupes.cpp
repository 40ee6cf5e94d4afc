// NUPES in Hessian mode at AdaRound's shapes: one evaluation of the objective and its gradient
// (nupes_evaluate, including packing H), whole training iterations timed inside a run, and the
// data-free exponent search (48 candidate exponents, each with its own scale search).
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

// Whole training iterations (exact forward, Δ·H, backward, Adam) timed inside nupes().
void BM_NupesTraining(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 5);
  NupesOptions data_free;
  data_free.fixed_exponent = 0.75f;
  const Grid grid = nupes_grid(p, nupes_spec(), data_free);
  time_training_iterations(state, n, static_cast<int>(state.range(1)), [&](int it, auto progress) {
    NupesOptions opt;
    opt.iterations = it;
    benchmark::DoNotOptimize(nupes(p, grid, opt, progress).report.loss);
  });
}
BENCHMARK(BM_NupesTraining)->Args({768, 20})->Args({2048, 4})->Args({4096, 2})
    ->Unit(benchmark::kMillisecond)->Iterations(1)->UseManualTime();

}  // namespace
}  // namespace qround::bench
