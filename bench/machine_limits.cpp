// Measures the machine's limits (see machine_limits.hpp): CPU feature checks, timing, caching.
#include "machine_limits.hpp"

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

#include "limits/kernels.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(QROUND_BENCH_X86_LIMITS)
#include <cpuid.h>
#endif

namespace qround::bench {
namespace {

// ---- what this CPU and OS can run -----------------------------------------------------------

struct Features {
  bool avx2_fma = false;    // AVX2 + FMA, ymm state enabled by the OS
  bool avx512f = false;     // + zmm and opmask state
  bool avx512vnni = false;  // AVX-512F + VNNI
  bool avxvnni = false;     // VEX-encoded VNNI on ymm
};

#if defined(QROUND_BENCH_X86_LIMITS)
Features detect_features() {
  Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  if (!osxsave || !avx || __get_cpuid_max(0, nullptr) < 7) return f;
  std::uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm_state = (xcr0_lo & 0x6) == 0x6;
  const bool zmm_state = (xcr0_lo & 0xE6) == 0xE6;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, vnni512 = (c >> 11) & 1;
  const unsigned max_sub_leaf = a;
  bool avx_vnni = false;
  if (max_sub_leaf >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    avx_vnni = (a >> 4) & 1;
  }
  f.avx2_fma = ymm_state && avx2 && fma;
  f.avx512f = f.avx2_fma && zmm_state && avx512f;
  f.avx512vnni = f.avx512f && vnni512;
  f.avxvnni = f.avx2_fma && avx_vnni;
  return f;
}
#else
Features detect_features() { return {}; }
#endif

const Features& features() {
  static const Features f = detect_features();
  return f;
}

// ---- one peak loop per limit: the best path this CPU runs -----------------------------------

struct PeakLoop {
  const char* path;
  double work_per_step;
  std::uint64_t (*run)(long steps, int seed);  // returns a value to consume
};

template <typename T>
std::uint64_t bits_of(T value) {
  std::uint64_t out = 0;
  std::memcpy(&out, &value, sizeof(T) < sizeof(out) ? sizeof(T) : sizeof(out));
  return out;
}

// a slightly below 1 and b small: every accumulator converges to ≈ 1, far from overflow and
// denormals, whatever the number of steps.
template <typename T>
constexpr T kFmaA = T(1) - T(1) / T(1 << 20);
template <typename T>
constexpr T kFmaB = T(1) / T(1 << 20);

PeakLoop peak_loop(Limit limit) {
  namespace l = limits;
  const Features& f = features();
#if defined(QROUND_BENCH_X86_LIMITS)
  switch (limit) {
    case Limit::kF32Fma:
      if (f.avx512f)
        return {"avx512f", l::kF32Avx512FlopPerStep, [](long s, int) {
                  return bits_of(l::fma_f32_avx512(s, kFmaA<float>, kFmaB<float>));
                }};
      if (f.avx2_fma)
        return {"avx2+fma", l::kF32Avx2FlopPerStep, [](long s, int) {
                  return bits_of(l::fma_f32_avx2(s, kFmaA<float>, kFmaB<float>));
                }};
      break;
    case Limit::kF64Fma:
      if (f.avx512f)
        return {"avx512f", l::kF64Avx512FlopPerStep, [](long s, int) {
                  return bits_of(l::fma_f64_avx512(s, kFmaA<double>, kFmaB<double>));
                }};
      if (f.avx2_fma)
        return {"avx2+fma", l::kF64Avx2FlopPerStep, [](long s, int) {
                  return bits_of(l::fma_f64_avx2(s, kFmaA<double>, kFmaB<double>));
                }};
      break;
    case Limit::kInt8Dot:
      if (f.avx512vnni)
        return {"avx512vnni", l::kInt8Avx512VnniOpsPerStep,
                [](long s, int seed) { return bits_of(l::int8_dot_avx512vnni(s, seed)); }};
      if (f.avxvnni)
        return {"avxvnni", l::kInt8AvxVnniOpsPerStep,
                [](long s, int seed) { return bits_of(l::int8_dot_avxvnni(s, seed)); }};
      if (f.avx2_fma)
        return {"avx2", l::kInt8Avx2OpsPerStep,
                [](long s, int seed) { return bits_of(l::int8_dot_avx2(s, seed)); }};
      break;
    case Limit::kDramRead:
      break;
  }
#else
  (void)f;
#endif
  switch (limit) {
    case Limit::kF32Fma:
      return {"portable", l::kF32ScalarFlopPerStep, [](long s, int) {
                return bits_of(l::fma_f32_scalar(s, kFmaA<float>, kFmaB<float>));
              }};
    case Limit::kF64Fma:
      return {"portable", l::kF64ScalarFlopPerStep, [](long s, int) {
                return bits_of(l::fma_f64_scalar(s, kFmaA<double>, kFmaB<double>));
              }};
    case Limit::kInt8Dot:
      return {"portable", l::kInt8ScalarOpsPerStep,
              [](long s, int seed) { return bits_of(l::int8_dot_scalar(s, seed)); }};
    case Limit::kDramRead:
      break;
  }
  throw std::invalid_argument("peak_loop: kDramRead has no peak loop (use DramBuffer)");
}

int clamp_threads(int threads) { return std::max(1, threads); }

// CPU time of the calling thread (wall time where the OS has no per-thread clock).
double thread_seconds() {
#ifdef CLOCK_THREAD_CPUTIME_ID
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
#else
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
#endif
}

struct LoopRun {
  std::uint64_t sink = 0;
  double rate = 0.0;         // Σ over threads of work / that thread's CPU time
  double max_seconds = 0.0;  // the longest thread's CPU time
};

// Every thread runs the loop and times it on its own CPU clock, so time a thread spends
// descheduled (other work on a shared machine) does not count against the hardware's rate.
LoopRun run_loop_on_threads(const PeakLoop& loop, long steps, int threads) {
  LoopRun out;
  std::uint64_t sink = 0;
  double rate = 0.0, max_seconds = 0.0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(^ : sink) reduction(+ : rate) \
    reduction(max : max_seconds)
#else
  (void)threads;
#endif
  {
#ifdef _OPENMP
    const int seed = 1 + omp_get_thread_num();
#else
    const int seed = 1;
#endif
    const double start = thread_seconds();
    sink ^= loop.run(steps, seed);
    const double t = std::max(thread_seconds() - start, 1e-9);
    rate += loop.work_per_step * double(steps) / t;
    max_seconds = std::max(max_seconds, t);
  }
  out.sink = sink;
  out.rate = rate;
  out.max_seconds = max_seconds;
  return out;
}

// Best rate over a few ~10 ms runs (after growing the step count until one run takes that long).
double measure_peak(Limit limit, int threads) {
  const PeakLoop loop = peak_loop(limit);
  constexpr double kRunSeconds = 0.01;
  constexpr int kRuns = 5;
  long steps = 1 << 12;
  std::uint64_t sink = 0;
  for (;;) {
    const LoopRun run = run_loop_on_threads(loop, steps, threads);
    sink ^= run.sink;
    const double t = run.max_seconds;
    if (t >= kRunSeconds || steps > (1L << 40)) break;
    steps = t <= kRunSeconds / 64 ? steps * 8 : static_cast<long>(steps * 1.2 * kRunSeconds / t);
  }
  double best = 0.0;
  for (int r = 0; r < kRuns; ++r) {
    const LoopRun run = run_loop_on_threads(loop, steps, threads);
    sink ^= run.sink;
    best = std::max(best, run.rate);
  }
  benchmark::DoNotOptimize(sink);
  return best;
}

double measure_dram(int threads) {
  const DramBuffer buffer(threads);  // filling it also warms the page tables
  constexpr int kPasses = 8;
  double best_clean = 0.0, best_wall = 0.0;
  std::uint64_t sink = 0;
  for (int r = 0; r < kPasses; ++r) {
    DramBuffer::Timing timing;
    sink ^= buffer.read(threads, &timing);
    const double bytes = double(buffer.bytes());
    best_wall = std::max(best_wall, bytes / std::max(timing.wall_seconds, 1e-9));
    if (timing.concurrent)
      best_clean = std::max(best_clean, bytes / std::max(timing.slowest_cpu_seconds, 1e-9));
  }
  benchmark::DoNotOptimize(sink);
  return best_clean > 0.0 ? best_clean : best_wall;
}

}  // namespace

double run_peak_loop(Limit limit, long steps, int threads) {
  threads = clamp_threads(threads);
  const PeakLoop loop = peak_loop(limit);
  benchmark::DoNotOptimize(run_loop_on_threads(loop, steps, threads).sink);
  return loop.work_per_step * double(steps) * threads;
}

double machine_limit(Limit limit, int threads) {
  threads = clamp_threads(threads);
  static std::recursive_mutex mutex;
  static std::map<std::pair<int, int>, double> cache;
  const std::lock_guard<std::recursive_mutex> lock(mutex);
  const auto key = std::make_pair(static_cast<int>(limit), threads);
  const auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  double value =
      1e-9 * (limit == Limit::kDramRead ? measure_dram(threads) : measure_peak(limit, threads));
  // More threads never read slower than one on an idle machine: a busy machine that kept the
  // threads from running together (wall-timed fallback) does not lower the limit below that.
  if (limit == Limit::kDramRead && threads > 1)
    value = std::max(value, machine_limit(Limit::kDramRead, 1));
  cache.emplace(key, value);
  return value;
}

const char* machine_limit_path(Limit limit) {
  if (limit == Limit::kDramRead) return features().avx2_fma ? "avx2" : "portable";
  return peak_loop(limit).path;
}

const char* machine_limit_unit(Limit limit) {
  switch (limit) {
    case Limit::kF32Fma:
    case Limit::kF64Fma:
      return "GFLOP/s";
    case Limit::kInt8Dot:
      return "GOPS";
    case Limit::kDramRead:
      return "GB/s";
  }
  return "";
}

int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

std::size_t last_level_cache_bytes() {
  long bytes = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
  bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (bytes <= 0) bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  return bytes > 0 ? static_cast<std::size_t>(bytes) : std::size_t{32} << 20;
}

void report_share(benchmark::State& state, double work, Limit limit, int threads,
                  benchmark::Counter::Flags flags) {
  static constexpr const char* kNames[] = {"pct_f32_peak", "pct_f64_peak", "pct_int8_peak",
                                           "pct_dram"};
  // The limit is in units of 1e9 per second; the benchmark library applies the same rate
  // conversion to this counter as to the benchmark's own (flags), so the ratio is a percentage.
  const double limit_per_second = machine_limit(limit, threads) * 1e9;
  state.counters[kNames[static_cast<int>(limit)]] =
      benchmark::Counter(100.0 * work / limit_per_second, flags);
}

// ---- DRAM read buffer ------------------------------------------------------------------------

namespace {
constexpr std::size_t kReadAlign = 256;  // 8 ymm loads per step of read_avx2
constexpr std::size_t kWordsPerBlock = kReadAlign / sizeof(std::uint64_t);

// Thread t's share of `blocks` blocks: [begin, end).
std::pair<std::size_t, std::size_t> share(std::size_t blocks, int t, int threads) {
  const std::size_t per = blocks / threads, extra = blocks % threads;
  const std::size_t begin = per * t + std::min<std::size_t>(t, extra);
  return {begin, begin + per + (static_cast<std::size_t>(t) < extra ? 1 : 0)};
}
}  // namespace

DramBuffer::DramBuffer(int threads) {
  threads = clamp_threads(threads);
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const std::size_t bytes =
      std::clamp(8 * last_level_cache_bytes(), std::size_t{256} << 20, std::size_t{1} << 30) /
      kHugePage * kHugePage;
  words_ = bytes / sizeof(std::uint64_t);
  data_ = static_cast<std::uint64_t*>(std::aligned_alloc(kHugePage, bytes));
  if (data_ == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(data_, bytes, MADV_HUGEPAGE);  // fewer page faults to fill it, fewer TLB misses to read
#endif
  const std::size_t blocks = words_ / kWordsPerBlock;
  // Filled by the threads that read it (first touch places the pages near them).
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const auto [begin, end] = share(blocks, omp_get_thread_num(), omp_get_num_threads());
#else
  {
    const auto [begin, end] = share(blocks, 0, 1);
#endif
    for (std::size_t i = begin * kWordsPerBlock; i < end * kWordsPerBlock; ++i) data_[i] = i;
  }
}

DramBuffer::~DramBuffer() { std::free(data_); }

std::uint64_t DramBuffer::read(int threads, Timing* timing) const {
  threads = clamp_threads(threads);
  const std::size_t blocks = words_ / kWordsPerBlock;
  const bool wide = features().avx2_fma;
  std::uint64_t sink = 0;
  // Per thread: CPU seconds, wall start and end.
  double slowest_cpu = 0.0, latest_start = 0.0, earliest_end = 1e300, first_start = 1e300,
         last_end = 0.0;
  bool all_running = true;  // every thread on a core for ≥ 90 % of its wall time
  const auto wall = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(^ : sink) reduction(max : slowest_cpu) \
    reduction(max : latest_start) reduction(min : earliest_end) reduction(min : first_start) \
    reduction(max : last_end) reduction(&& : all_running)
  {
    const auto [begin, end] = share(blocks, omp_get_thread_num(), omp_get_num_threads());
#else
  {
    const auto [begin, end] = share(blocks, 0, 1);
#endif
    const std::uint64_t* p = data_ + begin * kWordsPerBlock;
    const std::size_t n = (end - begin) * kWordsPerBlock;
    const double wall_start = wall(), cpu_start = thread_seconds();
#if defined(QROUND_BENCH_X86_LIMITS)
    sink ^= wide ? limits::read_avx2(p, n) : limits::read_scalar(p, n);
#else
    (void)wide;
    sink ^= limits::read_scalar(p, n);
#endif
    const double cpu = thread_seconds() - cpu_start, wall_end = wall();
    slowest_cpu = std::max(slowest_cpu, cpu);
    latest_start = std::max(latest_start, wall_start);
    first_start = std::min(first_start, wall_start);
    earliest_end = std::min(earliest_end, wall_end);
    last_end = std::max(last_end, wall_end);
    all_running = all_running && cpu >= 0.9 * (wall_end - wall_start);
  }
  if (timing != nullptr) {
    timing->wall_seconds = last_end - first_start;
    timing->slowest_cpu_seconds = slowest_cpu;
    // One thread has nothing to overlap with: its CPU clock times exactly its own reading.
    timing->concurrent = threads == 1 || (all_running && earliest_end - latest_start >=
                                                             0.9 * (last_end - first_start));
  }
  return sink;
}

}  // namespace qround::bench
