// FlexRound in Hessian mode: one training iteration (hard forward, Δ·H over all rows, backward) at
// AdaRound's shapes, and a short full run (with Adam and the final guards) at 768².
#include "learned_rounding_bench.hpp"
#include "qround/flexround.hpp"
#include "qround/scale_search.hpp"

namespace qround::bench {
namespace {

void BM_FlexRoundIteration(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 1);
  const Grid grid = make_grid(p, GridSpec::with_group_size(4, 128));
  const FlexRoundState theta = FlexRoundState::zeros(grid);
  for (auto _ : state) benchmark::DoNotOptimize(flexround_evaluate(p, grid, theta).loss);
  set_iteration_counters(state, n, 1.0);
}
BENCHMARK(BM_FlexRoundIteration)->Arg(768)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)
    ->Iterations(1)->UseRealTime();

void BM_FlexRoundRun20(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 2);
  FlexRoundOptions opt;
  opt.iterations = 20;
  for (auto _ : state)
    benchmark::DoNotOptimize(flexround(p, GridSpec::with_group_size(4, 128), opt).report.loss);
  set_iteration_counters(state, n, 21.0);
}
BENCHMARK(BM_FlexRoundRun20)->Arg(768)->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();

}  // namespace
}  // namespace qround::bench
