// One training step of block reconstruction (model/block_reconstruction.hpp) on a block of a
// realistic size (dimension 1024, 8 heads, feed-forward 2816) and on stories260K's (dimension 64,
// 8 query / 4 kv heads of 8, feed-forward 172), windows of 512 tokens. A step is the taped forward
// pass and the backward pass of every window of the batch, spread over the threads as
// reconstruct_blocks does (windows first, the rest of the threads inside a window). FLOPs counted
// as the products' multiply-adds × 2:
//   forward  2·T·(2·d·d + 2·d·kv + 3·d·ff) for the linears + 2·T²·d for the causal q·kᵀ and P·v
//   backward twice the forward (two products per forward product)
// (elementwise work — softmax, SiLU, RMSNorm — not counted). Read the share against the f32 peak
// measured here with as many threads.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "../src/kernels/attention.hpp"
#include "bench_data.hpp"
#include "machine_limits.hpp"
#include "qround/detail/rng.hpp"
#include "qround/model/llama_block.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using qround::Index;
using qround::MatrixF;
using namespace qround::model;

using qround::bench::random_matrix;

void BM_BlockStep(benchmark::State& state) {
  const int windows = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const bool stories = state.range(2) == 1;
  LlamaConfig c;
  c.dim = stories ? 64 : 1024;
  c.hidden_dim = stories ? 172 : 2816;
  c.n_layers = 1;
  c.n_heads = 8;
  c.n_kv_heads = stories ? 4 : 8;
  c.vocab_size = 32;
  c.seq_len = 512;
  const RopeTable rope = RopeTable::for_config(c);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const int kv = c.kv_dim();
  std::array<MatrixF, kLinearsPerBlock> w = {
      random_matrix(c.dim, c.dim, 1, in_scale),
      random_matrix(kv, c.dim, 2, in_scale),
      random_matrix(kv, c.dim, 3, in_scale),
      random_matrix(c.dim, c.dim, 4, in_scale),
      random_matrix(c.hidden_dim, c.dim, 5, in_scale),
      random_matrix(c.hidden_dim, c.dim, 6, in_scale),
      random_matrix(c.dim, c.hidden_dim, 7, 1.0f / std::sqrt(static_cast<float>(c.hidden_dim)))};
  const qround::VectorF gain = qround::VectorF::Ones(c.dim);
  BlockParams<float> p;
  p.rms_att = &gain;
  p.rms_ffn = &gain;
  for (int k = 0; k < kLinearsPerBlock; ++k) p.linear[k] = &w[k];
  std::vector<MatrixF> x(windows), target(windows), out(windows);
  for (int i = 0; i < windows; ++i) {
    x[i] = random_matrix(c.seq_len, c.dim, 10 + i, 1.0f);
    target[i] = random_matrix(c.seq_len, c.dim, 100 + i, 1.0f);
  }
  std::vector<BlockTape<float>> tapes(windows);
  std::vector<std::array<MatrixF, kLinearsPerBlock>> grads(windows);
  const int eigen_threads = Eigen::nbThreads();
  Eigen::setNbThreads(1);  // parallel over windows, as reconstruct_blocks
  const int window_threads = std::min(threads, windows);
  const int inner = std::max(1, threads / window_threads);
  auto step = [&](int i) {
    out[i] = x[i];
    block_forward<float>(c, rope, p, out[i], {}, &tapes[i], inner);
    out[i] -= target[i];
    block_backward<float>(c, rope, p, tapes[i], out[i], grads[i], nullptr, inner);
  };
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (window_threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(window_threads)
      for (int i = 0; i < windows; ++i) step(i);
    } else {
      for (int i = 0; i < windows; ++i) step(i);
    }
    benchmark::ClobberMemory();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Eigen::setNbThreads(eigen_threads);
  const double T = c.seq_len, d = c.dim, ff = c.hidden_dim, kvd = kv;
  const double forward = 2.0 * T * (2.0 * d * d + 2.0 * d * kvd + 3.0 * d * ff) + 2.0 * T * T * d;
  const double flops = 3.0 * forward * windows * static_cast<double>(state.iterations()) / seconds;
  state.counters["GFLOP/s"] = flops / 1e9;
  state.counters["s_per_step"] = seconds / static_cast<double>(state.iterations());
  qround::bench::report_share(state, flops, qround::bench::Limit::kF32Fma, threads,
                              benchmark::Counter::kDefaults);
  state.SetLabel(std::string(stories ? "stories260K" : "dim 1024") + ", " +
                 std::to_string(windows) + " windows of 512 tokens, " + std::to_string(threads) +
                 " thread(s), attention " + qround::kernels::attention_isa());
}
BENCHMARK(BM_BlockStep)
    ->ArgNames({"windows", "threads", "stories"})
    ->Args({1, 1, 0})
    ->Args({4, 2, 0})
    ->Args({1, 1, 1})
    ->Args({1, 2, 1})
    ->Args({4, 2, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
