// Packed-weight matrix products. Names: qgemm_<wNaM>[_cold]/<path>/<tokens>/<out>/<in>, where
// path is the kernel ISA (or "eigen" for the f32 baseline qgemm_f32). Counters: GOPS = 2·M·N·K
// per second / 1e9, GBps = packed weight bytes streamed per second / 1e9. "_cold" variants cycle
// through enough copies of the weights to exceed twice the last-level cache (at least 64 MiB),
// which is what a real model's decode sees.
//   w4a32: the float-activation path (qgemm_float) on the w4a8 weights.
//   w8a8: 8-bit symmetric per-row weights (int8 container); w4a8: 4-bit symmetric, groups of 32
//   (int4 container, like q4_0). Activations: int8 per token (dynamic).
// Shares of this machine's limits, measured by this binary with OpenMP's default thread count (what
// qgemm uses; machine_limits.hpp): pct_int8_peak (integer paths, of the int8 dot-product peak),
// pct_f32_peak (float paths, of the f32 FMA peak), pct_dram (weights from DRAM: the _cold variants
// and the f32 baseline, of the DRAM read bandwidth; GBps counts the weight bytes only).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "machine_limits.hpp"
#include "qround/isa.hpp"
#include "qround/packed.hpp"
#include "qround/qgemm.hpp"

namespace qround {
namespace {

std::size_t cold_bytes() {
  return std::max(2 * bench::last_level_cache_bytes(), std::size_t{64} << 20);
}

struct Shape {
  Index tokens, out, in;
};
constexpr Shape kShapes[] = {
    {1, 4096, 4096}, {32, 4096, 4096}, {128, 4096, 4096}, {1, 11008, 4096}, {32, 11008, 4096}};

PackedMatrix random_packed(Index out, Index in, int bits, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Grid g;
  g.bits = bits;
  g.symmetric = true;
  g.restricted = bits == 8;
  g.rows = out;
  g.cols = in;
  g.group_size = bits == 8 ? in : 32;
  g.granularity = bits == 8 ? Granularity::kPerRow : Granularity::kPerGroup;
  const Index groups = in / g.group_size;
  std::uniform_real_distribution<float> s(0.001f, 0.01f);
  g.scales = MatrixF::NullaryExpr(out, groups, [&] { return s(rng); });
  g.zeros = MatrixI32::Zero(out, groups);
  std::uniform_int_distribution<int> q(g.qmin(), g.qmax());
  const MatrixI8 codes =
      MatrixI8::NullaryExpr(out, in, [&] { return static_cast<std::int8_t>(q(rng)); });
  return PackedMatrix(codes, g);
}

MatrixF random_inputs(Index tokens, Index in) {
  std::mt19937 rng(99);
  std::normal_distribution<float> n(0.0f, 1.0f);
  return MatrixF::NullaryExpr(tokens, in, [&] { return n(rng); });
}

// `compute`: the peak the arithmetic runs against; `from_dram`: whether the weights stream from
// DRAM.
void set_counters(benchmark::State& state, const Shape& s, double weight_bytes,
                  bench::Limit compute, bool from_dram) {
  const double ops = 2.0 * double(s.tokens) * double(s.out) * double(s.in);
  state.counters["GOPS"] =
      benchmark::Counter(ops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GBps"] =
      benchmark::Counter(weight_bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  const int threads = bench::default_threads();
  bench::report_share(state, ops, compute, threads);
  if (from_dram) bench::report_share(state, weight_bytes, bench::Limit::kDramRead, threads);
}

void bench_qgemm(benchmark::State& state, Isa isa, int bits, Shape s, bool cold) {
  ScopedIsaOverride force(isa);
  const PackedMatrix first = random_packed(s.out, s.in, bits, 1);
  std::vector<std::unique_ptr<PackedMatrix>> copies;
  const std::size_t count = cold ? cold_bytes() / first.bytes() + 1 : 1;
  for (std::size_t i = 0; i < count; ++i)
    copies.push_back(
        std::make_unique<PackedMatrix>(i == 0 ? first : random_packed(s.out, s.in, bits, 2 + i)));
  const MatrixF x = random_inputs(s.tokens, s.in);
  MatrixF y(s.tokens, s.out);
  std::size_t next = 0;
  for (auto _ : state) {
    qgemm_into(*copies[next], x, y.data(), s.out);
    benchmark::DoNotOptimize(y.data());
    next = (next + 1) % copies.size();
  }
  set_counters(state, s, double(first.bytes()), bench::Limit::kInt8Dot, cold);
}

// Float-activation path (weights dequantized on the fly, f32 accumulation; portable code).
void bench_float_path(benchmark::State& state, int bits, Shape s) {
  const PackedMatrix packed = random_packed(s.out, s.in, bits, 1);
  const MatrixF x = random_inputs(s.tokens, s.in);
  for (auto _ : state) {
    MatrixF y = qgemm_float(packed, x);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s, double(packed.bytes()), bench::Limit::kF32Fma, false);
}

void bench_eigen(benchmark::State& state, Shape s) {
  const MatrixF w = random_inputs(s.out, s.in);  // 64+ MiB: streamed from DRAM like a cold run
  const MatrixF x = random_inputs(s.tokens, s.in);
  MatrixF y(s.tokens, s.out);
  for (auto _ : state) {
    y.noalias() = x * w.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s, double(w.size()) * sizeof(float), bench::Limit::kF32Fma, true);
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.tokens) + "/" + std::to_string(s.out) + "/" + std::to_string(s.in);
}

const bool registered = [] {
  for (const Shape& s : kShapes) {
    for (int bits : {8, 4})
      for (bool cold : {false, true})
        for (Isa isa : supported_isas()) {
          const std::string name = std::string("qgemm_w") + std::to_string(bits) + "a8" +
                                   (cold ? "_cold/" : "/") + to_string(isa) + "/" + shape_name(s);
          benchmark::RegisterBenchmark(name.c_str(), bench_qgemm, isa, bits, s, cold)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
    if (s.out == 4096 && s.tokens <= 32)
      benchmark::RegisterBenchmark(("qgemm_w4a32/generic/" + shape_name(s)).c_str(),
                                   bench_float_path, 4, s)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("qgemm_f32/eigen/" + shape_name(s)).c_str(), bench_eigen, s)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace qround
