// The machine's limits, measured here (machine_limits.hpp): f32 / f64 FMA peak, int8 dot-product
// peak, DRAM read bandwidth, with 1 thread and with OpenMP's default thread count. Each benchmark
// runs the same loop the pct_* counters of the other benchmarks are divided by: its own rate
// (GFLOP/s, GOPS, GBps) is timed by the benchmark library; "limit" is the cached best-of-runs
// figure the shares use. The label names the code path (e.g. avx2+fma, avx512vnni).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>

#include "machine_limits.hpp"

namespace qround::bench {
namespace {

void peak(benchmark::State& state, Limit limit, const char* counter) {
  const int threads = static_cast<int>(state.range(0));
  const double limit_value = machine_limit(limit, threads);  // measured before the timed loop
  // ~20 ms per iteration at the measured rate.
  const long steps =
      static_cast<long>(limit_value * 1e9 * 0.02 / run_peak_loop(limit, 1, 1)) / threads + 1;
  double work = 0.0;
  for (auto _ : state) work += run_peak_loop(limit, steps, threads);
  state.counters[counter] = benchmark::Counter(work * 1e-9, benchmark::Counter::kIsRate);
  state.counters["limit"] = limit_value;
  report_share(state, work, limit, threads, benchmark::Counter::kIsRate);
  state.SetLabel(machine_limit_path(limit));
}

void BM_PeakFmaF32(benchmark::State& state) { peak(state, Limit::kF32Fma, "GFLOP/s"); }
void BM_PeakFmaF64(benchmark::State& state) { peak(state, Limit::kF64Fma, "GFLOP/s"); }
void BM_PeakInt8Dot(benchmark::State& state) { peak(state, Limit::kInt8Dot, "GOPS"); }

void BM_DramRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const double limit_value = machine_limit(Limit::kDramRead, threads);
  const DramBuffer buffer(threads);
  for (auto _ : state) benchmark::DoNotOptimize(buffer.read(threads));
  const double bytes =
      static_cast<double>(buffer.bytes()) * static_cast<double>(state.iterations());
  state.counters["GBps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
  state.counters["limit"] = limit_value;
  state.counters["MiB"] = static_cast<double>(buffer.bytes()) / (1 << 20);
  report_share(state, bytes, Limit::kDramRead, threads, benchmark::Counter::kIsRate);
  state.SetLabel(machine_limit_path(Limit::kDramRead));
}

void thread_counts(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1);
  if (default_threads() > 1) b->Arg(default_threads());
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_PeakFmaF32)->Apply(thread_counts);
BENCHMARK(BM_PeakFmaF64)->Apply(thread_counts);
BENCHMARK(BM_PeakInt8Dot)->Apply(thread_counts);
BENCHMARK(BM_DramRead)->Apply(thread_counts);

}  // namespace
}  // namespace qround::bench
