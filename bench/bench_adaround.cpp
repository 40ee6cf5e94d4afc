// AdaRound speed: iterations per second and GFLOP/s of the reconstruction term.
//
// Hessian mode: one iteration is the GEMM (Ŵ − W)·H, 2·out·in² flop (137 GFLOP at 4096²), plus
// O(out·in) elementwise work (rectified sigmoid, regulariser, Adam). Minibatch mode: two GEMMs
// against the batch, 4·batch·out·in flop. Iterations are timed
// from the progress callback, without setup (grid, packing H) and the report's exact losses.
//
// Counters: pct_f32_peak is GFLOP/s as a share of the f32 FMA peak measured by this binary on
// this machine with the threads the run uses (BM_PeakFmaF32). GFLOP/cpu_s (per busy core, useful on
// a loaded host) compares with BM_PeakFmaF32/threads:1. 10 000 Hessian iterations at 4096² are
// 1.37 PFLOP: divide by the measured peak for the floor of one such layer's training time.
#include <benchmark/benchmark.h>

#include <chrono>
#include <ctime>

#include "../src/kernels/sgemm_packed.hpp"
#include "bench_data.hpp"
#include "machine_limits.hpp"
#include "qround/adaround.hpp"

namespace {

using qround::Index;
using qround::MatrixF;

using qround::bench::random_matrix;

// A symmetric positive definite stand-in for XᵀX (diagonally dominant), built in O(in²).
qround::LayerProblem hessian_problem(Index n) {
  const MatrixF w = random_matrix(n, n, 1, 0.02f);
  const MatrixF noise = random_matrix(n, n, 2, 1.0f);
  qround::MatrixD h = (noise + noise.transpose()).cast<double>();
  h.diagonal().array() += 4.0 * static_cast<double>(n);
  return qround::LayerProblem::from_hessian(w, h, 2048);
}

struct Seconds {
  double wall, cpu;  // cpu: summed over all threads of the process
};

Seconds now() {
  return {
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(),
      static_cast<double>(std::clock()) / CLOCKS_PER_SEC};
}

// Times iterations 2..k of one run through the progress callback (called after every iteration
// when k < 200), which leaves out the setup and the report's exact double-precision losses.
void time_iterations(benchmark::State& state, const qround::LayerProblem& p,
                     qround::AdaRoundOptions o, int k, double flop_per_iteration) {
  o.iterations = k;
  o.loss_interval = 0;
  const qround::GridSpec spec = qround::GridSpec::with_group_size(4, 128);
  double total = 0.0, cpu = 0.0, setup = 0.0;
  for (auto _ : state) {
    const Seconds start = now();
    Seconds first{0, 0}, last{0, 0};
    int calls = 0;
    const qround::ProgressFn clock = [&](double, std::string_view) {
      (++calls == 1 ? first : last) = now();
      return true;
    };
    benchmark::DoNotOptimize(qround::adaround(p, spec, o, clock));
    state.SetIterationTime(last.wall - first.wall);
    total += last.wall - first.wall;
    cpu += last.cpu - first.cpu;
    setup = now().wall - start.wall - (last.wall - first.wall);
  }
  const double iters = static_cast<double>(k - 1) * static_cast<double>(state.iterations());
  state.counters["it/s"] = iters / total;
  state.counters["GFLOP/s"] = iters * flop_per_iteration / total * 1e-9;
  qround::bench::report_share(state, iters * flop_per_iteration / total,
                              qround::bench::Limit::kF32Fma, qround::bench::default_threads(),
                              benchmark::Counter::kDefaults);
  // Per busy core (CPU seconds): compare with the 1-thread f32 peak on a loaded host.
  state.counters["GFLOP/cpu_s"] = iters * flop_per_iteration / cpu * 1e-9;
  state.counters["other_s"] = setup;  // setup, first iteration, report
  state.counters["est_10k_s"] = 10000.0 * total / iters + setup;
}

void BM_AdaRoundHessian(benchmark::State& state) {
  const Index n = state.range(0);
  const qround::LayerProblem p = hessian_problem(n);
  qround::AdaRoundOptions o;
  o.mode = qround::AdaRoundMode::kHessian;
  const int k = n <= 768 ? 100 : (n <= 2048 ? 10 : 4);
  time_iterations(state, p, o, k, 2.0 * double(n) * double(n) * double(n));
}
BENCHMARK(BM_AdaRoundHessian)
    ->Arg(768)
    ->Arg(2048)
    ->Arg(4096)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_AdaRoundMinibatch(benchmark::State& state) {
  const Index n = state.range(0), tokens = 2048;
  qround::LayerProblemOptions popt;
  popt.retain_activations = true;
  qround::LayerProblem p(random_matrix(n, n, 1, 0.02f), popt);
  p.add_batch(random_matrix(tokens, n, 3, 1.0f));
  qround::AdaRoundOptions o;
  o.mode = qround::AdaRoundMode::kMinibatch;
  time_iterations(state, p, o, 50, 4.0 * o.batch * double(n) * double(n));
}
BENCHMARK(BM_AdaRoundMinibatch)
    ->Arg(4096)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// The GEMM kernel alone, one thread, one row block (96 rows) against a packed in × in matrix:
// the per-core ceiling of Hessian mode.
void BM_SgemmPackedRowBlock(benchmark::State& state) {
  const long n = state.range(0), m = qround::kernels::kSgemmMc;
  const MatrixF a = random_matrix(m, n, 1, 1.0f), b = random_matrix(n, n, 2, 1.0f);
  std::vector<float> packed(qround::kernels::sgemm_packed_b_size(n, n));
  qround::kernels::sgemm_pack_b(n, n, b.data(), n, 1, packed.data());
  std::vector<float> work(qround::kernels::kSgemmWorkspace);
  MatrixF c(m, n);
  for (auto _ : state) {
    qround::kernels::sgemm_packed(m, n, n, a.data(), n, packed.data(), c.data(), n, work.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * n * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
  qround::bench::report_share(state, 2.0 * m * n * n * state.iterations(),
                              qround::bench::Limit::kF32Fma, 1, benchmark::Counter::kIsRate);
  state.SetLabel(qround::kernels::sgemm_packed_isa());
}
BENCHMARK(BM_SgemmPackedRowBlock)->Arg(768)->Arg(4096)->Unit(benchmark::kMillisecond);

}  // namespace
