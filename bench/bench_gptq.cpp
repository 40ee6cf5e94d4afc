// GPTQ speed on a 4096 × 4096 layer (group 128), and its kernels.
//
// Counters: GFLOP/s of the O(n³) work. Factorisation (Cholesky of H and a triangular inverse,
// f64): 2n³/3 flops. Lazy block updates (f32): ≈ out·in² flops. Report (output energy and RTN loss
// as symmetric quadratic forms, f32): ≈ 2·out·in² flops. pct_f32_peak / pct_f64_peak: the share
// of the FMA peak this binary measures on this machine with the threads the benchmark uses
// (machine_limits.hpp); numbers are noisy when other builds share the cores.
#include <benchmark/benchmark.h>

#include <cmath>
#include <type_traits>

#include "machine_limits.hpp"
#include "qround/detail/dense_gemm.hpp"
#include "qround/detail/gptq_factor.hpp"
#include "qround/detail/rng.hpp"
#include "qround/gptq.hpp"
#include "qround/scale_search.hpp"

namespace {

using namespace qround;

// A well-conditioned but correlated SPD Hessian: H_ij = d_i d_j ρ^|i−j| (AR(1) covariance with
// per-input scales), O(n²) to build instead of the O(tokens·n²) of XᵀX.
MatrixD synthetic_hessian(Index n) {
  detail::Rng rng(1);
  VectorD d(n);
  for (Index i = 0; i < n; ++i) d[i] = std::exp(rng.normal());
  MatrixD h(n, n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) h(i, j) = d[i] * d[j] * std::pow(0.9, std::abs(double(i - j)));
  return h;
}

MatrixF synthetic_weights(Index rows, Index cols) {
  detail::Rng rng(2);
  MatrixF w(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) w(r, c) = static_cast<float>(0.02 * rng.normal());
  return w;
}

const LayerProblem& problem_4096() {
  static const LayerProblem p =
      LayerProblem::from_hessian(synthetic_weights(4096, 4096), synthetic_hessian(4096), 8192);
  return p;
}

// One thread, the lazy-update shape: C (64 × n) −= A (64 × 128) · B (128 × n).
template <typename T>
void BM_GemmSub(benchmark::State& state) {
  const Index n = state.range(0);
  RowMatrix<T> c = RowMatrix<T>::Zero(64, n), a = RowMatrix<T>::Random(128, 64),
               b = RowMatrix<T>::Random(128, n);
  for (auto _ : state) {
    detail::gemm_sub(c.data(), n, a.data(), 64, b.data(), n, 64, n, 128);
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * 64 * 128 * double(n);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  bench::report_share(state, flops,
                      std::is_same_v<T, float> ? bench::Limit::kF32Fma : bench::Limit::kF64Fma, 1);
  state.SetLabel(detail::gemm_sub_path());
}
BENCHMARK_TEMPLATE(BM_GemmSub, float)->Arg(4096)->UseRealTime();
BENCHMARK_TEMPLATE(BM_GemmSub, double)->Arg(4096)->UseRealTime();

void BM_GptqFactor(benchmark::State& state) {
  const Index n = state.range(0);
  MatrixD h = synthetic_hessian(n);
  h.diagonal().array() += 0.01 * h.diagonal().mean();
  MatrixD u;
  for (auto _ : state) benchmark::DoNotOptimize(detail::upper_factor_of_inverse(h, u));
  const double flops = 2.0 * std::pow(double(n), 3) / 3.0;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  bench::report_share(state, flops, bench::Limit::kF64Fma, bench::default_threads());
}
BENCHMARK(BM_GptqFactor)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Gptq4096(benchmark::State& state) {
  const LayerProblem& p = problem_4096();
  const GridSpec spec = GridSpec::with_group_size(4, 128);
  GptqOptions o;
  o.act_order = state.range(0) != 0;
  o.static_groups = state.range(1) != 0;
  for (auto _ : state) {
    if (o.act_order && !o.static_groups)
      benchmark::DoNotOptimize(gptq_indexed(p, spec, o).codes.data());
    else
      benchmark::DoNotOptimize(gptq(p, spec, o).codes.data());
  }
  // Factorisation (f64) + lazy block updates (f32) + report quadratic forms (f32); the share is of
  // the f32 peak, which bounds the 82 % of the flops that are f32.
  const double n = 4096.0, flops = 2.0 * n * n * n / 3.0 + 3.0 * n * n * n;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  bench::report_share(state, flops, bench::Limit::kF32Fma, bench::default_threads());
}
BENCHMARK(BM_Gptq4096)
    ->ArgNames({"act_order", "static_groups"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);

// Issue 10's goal: GPTQ on llama.cpp's q4_k grid (super-blocks of 256, dynamic super-block
// scale fitting as GPTQ reaches each block), 4096², under 3 s on 2 cores.
void BM_GptqQ4K4096(benchmark::State& state) {
  const LayerProblem& p = problem_4096();
  const GridSpec spec = GridSpec::for_format(GgmlType::kQ4_K);
  for (auto _ : state) benchmark::DoNotOptimize(gptq(p, spec, GptqOptions{}).codes.data());
}
BENCHMARK(BM_GptqQ4K4096)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);

// Round-to-nearest's q4_k scale search on one 4096² tensor with importance weights (what
// llama-quantize does per tensor with an imatrix): weights per second.
void BM_RtnScaleSearchQ4K4096(benchmark::State& state) {
  const MatrixF w = synthetic_weights(4096, 4096);
  const VectorD importance = synthetic_hessian(4096).diagonal();
  const GridSpec spec = GridSpec::for_format(GgmlType::kQ4_K);
  for (auto _ : state) benchmark::DoNotOptimize(make_grid(w, spec, importance).scales.data());
  state.counters["weights/s"] =
      benchmark::Counter(4096.0 * 4096.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_RtnScaleSearchQ4K4096)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
