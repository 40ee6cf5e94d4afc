// The limits of the machine that runs the benchmarks, measured by the benchmark binary itself, and
// the helper that reports a benchmark's rate as a share of them. No figure of another machine is
// assumed anywhere: every peak below is measured here, once per process and thread count.
//
//   f32 / f64 FMA peak (GFLOP/s, 2 flop per lane of a fused multiply-add): 12 independent
//     accumulator registers (more than latency × throughput on current x86 cores) of
//     vfmadd on the widest vectors the CPU runs (AVX-512F zmm, else AVX2+FMA ymm, else scalar).
//   int8 dot-product peak (GOPS, 2 ops per u8 × s8 multiply-add): the best of the chains the
//     library's integer kernels use on this CPU: AVX2 vpmaddubsw + vpmaddwd + vpaddd, AVX-VNNI
//     vpdpbusd (ymm), AVX-512 VNNI vpdpbusd (zmm).
//   DRAM read bandwidth (GB/s): every thread streams its part of a buffer of 8 × the last-level
//     cache (256 MiB to 1 GiB) into 8 independent vector accumulators, so neither an add chain
//     nor the cache hides the memory limit.
// The compute peaks are the best of 5 runs of ~10 ms, each thread timed on its own CPU clock, so
// time it spends descheduled by other work on a shared machine does not lower them: they are the
// hardware's, and a benchmark timed in wall time on a busy machine shows a low share. (Where a
// lone core clocks higher than all together, the many-thread peak can be a little high.) DRAM
// bandwidth is shared by the cores: the best of 8 passes in which all threads ran together (each
// on a core ≥ 90 % of its time, overlapping ≥ 90 %), timed by the slowest thread's CPU clock; if a
// busy machine allows no such pass, the best wall-timed pass (but never less than 1 thread's). The
// first benchmark that asks for a limit pays for its measurement (well under a second; filling the
// DRAM buffer is most of it), outside its timed loop.
//
// The counters are rate counters, so the console prints "/s" after the percentages.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>

namespace qround::bench {

enum class Limit { kF32Fma, kF64Fma, kInt8Dot, kDramRead };

// The measured limit with `threads` threads, in GFLOP/s (FMA), GOPS (int8) or GB/s (DRAM).
// Cached per (limit, threads) for the lifetime of the process; thread-safe.
double machine_limit(Limit limit, int threads);
// Which code path measured it: "avx512f", "avx2+fma", "avx512vnni", "avxvnni", "avx2", "portable".
const char* machine_limit_path(Limit limit);
// "GFLOP/s", "GOPS" or "GB/s".
const char* machine_limit_unit(Limit limit);

// The threads an OpenMP region of the library uses by default (omp_get_max_threads(), or 1).
int default_threads();
// The last-level cache of this machine in bytes (sysconf; 32 MiB when the OS does not say).
std::size_t last_level_cache_bytes();

// Adds the counter pct_f32_peak / pct_f64_peak / pct_int8_peak / pct_dram: 100 × the rate of
// `work` (flop, int8 ops or bytes) over machine_limit(limit, threads). `work` and `flags` are those
// of the benchmark's own rate counter: per iteration with kIsIterationInvariantRate, in total with
// kIsRate, or already per second with kDefaults. `threads`: what the benchmark really runs on.
void report_share(benchmark::State& state, double work, Limit limit, int threads,
                  benchmark::Counter::Flags flags = benchmark::Counter::kIsIterationInvariantRate);

// ---- the measuring loops, also run as benchmarks by bench_memory.cpp -----------------------

// Runs the peak loop of `limit` (not kDramRead) `steps` times on each of `threads` threads and
// returns the work done (flop or ops, all threads together). The result is consumed, so the
// loops cannot be optimised away.
double run_peak_loop(Limit limit, long steps, int threads);

// A buffer far larger than the last-level cache, filled by the threads that will read it.
class DramBuffer {
 public:
  explicit DramBuffer(int threads);  // size: 8 × LLC, clamped to [256 MiB, 1 GiB]
  ~DramBuffer();
  DramBuffer(const DramBuffer&) = delete;
  DramBuffer& operator=(const DramBuffer&) = delete;

  std::size_t bytes() const { return words_ * sizeof(std::uint64_t); }
  struct Timing {
    double wall_seconds = 0.0;         // first thread's start to last thread's end
    double slowest_cpu_seconds = 0.0;  // CPU time of the slowest thread
    bool concurrent = false;  // 1 thread, or all ran ≥ 90 % of their time, overlapping ≥ 90 %
  };
  // Reads every byte once with `threads` threads; returns a checksum (consume it).
  std::uint64_t read(int threads, Timing* timing = nullptr) const;

 private:
  std::uint64_t* data_;
  std::size_t words_;
};

}  // namespace qround::bench
