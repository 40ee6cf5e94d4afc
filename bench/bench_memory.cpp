// The machine's limits beside the kernels' numbers: DRAM read bandwidth (the ceiling of one-token
// GEMV over cold packed weights). Streams a buffer far larger than the last-level cache with all
// threads and reports GB/s read.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

void BM_DramRead(benchmark::State& state) {
  const std::size_t bytes = std::size_t{512} << 20;  // 16× the 32 MiB LLC
  std::vector<std::uint64_t> buffer(bytes / sizeof(std::uint64_t));
  for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = i;
  const long n = static_cast<long>(buffer.size());
  const std::uint64_t* data = buffer.data();
  for (auto _ : state) {
    std::uint64_t sum = 0;
#pragma omp parallel for reduction(^ : sum) schedule(static)
    for (long i = 0; i < n; ++i) sum ^= data[i];
    benchmark::DoNotOptimize(sum);
  }
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(bytes) * state.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DramRead)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
