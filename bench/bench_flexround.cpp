// FlexRound in Hessian mode at AdaRound's shapes: one evaluation of the objective and its gradient
// (flexround_evaluate, including packing H), and whole training iterations timed inside a run.
// One iteration is dominated by the GEMM (Ŵ − W)·H: 2·out·in² flop (137 GFLOP at 4096²).
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

// Whole training iterations (forward, Δ·H, backward, Adam) timed inside flexround().
void BM_FlexRoundTraining(benchmark::State& state) {
  const Index n = state.range(0);
  const LayerProblem p = square_hessian_problem(n, 2);
  const Grid grid = make_grid(p, GridSpec::with_group_size(4, 128));
  time_training_iterations(state, n, static_cast<int>(state.range(1)), [&](int it, auto progress) {
    FlexRoundOptions opt;
    opt.iterations = it;
    benchmark::DoNotOptimize(flexround(p, grid, opt, progress).report.loss);
  });
}
BENCHMARK(BM_FlexRoundTraining)->Args({768, 20})->Args({2048, 4})->Args({4096, 2})
    ->Unit(benchmark::kMillisecond)->Iterations(1)->UseManualTime();

}  // namespace
}  // namespace qround::bench
