// Test helpers for the learned rounding methods: random problems and the real stories260K layers
// (read with qround::io::load_npy_f32), plus the plain double references the tests compare to.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "qround/io/npy.hpp"
#include "qround/problem.hpp"
#include "test_helpers.hpp"

namespace qround::testdata {

using testing::random_matrix;

// A layer with correlated inputs (so H is far from diagonal) and a few outlier input channels.
inline LayerProblem random_problem(Index out, Index in, Index tokens, std::uint64_t seed) {
  LayerProblem p(random_matrix(out, in, seed, 0.1));
  MatrixF x = random_matrix(tokens, in, seed + 1);
  const MatrixF mix = random_matrix(in, in, seed + 2, 0.3);
  x = (x + x * mix).eval();
  for (Index c = 0; c < in; c += 7) x.col(c) *= 4.0f;
  p.add_batch(x);
  return p;
}

// L(Ŵ) = Σ_i Δ_i H Δ_iᵀ + 2 Δ_i·r_i + L0_i with Δ = Ŵ − W: LayerProblem's Hessian form, in plain
// double loops (the reference the methods' float kernels are checked against).
inline double reference_loss(const LayerProblem& p, const MatrixD& delta) {
  const MatrixD& h = p.hessian();
  const MatrixD& rr = p.target_residual();
  double l = p.baseline_loss();
  for (Index i = 0; i < delta.rows(); ++i)
    for (Index a = 0; a < delta.cols(); ++a) {
      l += 2.0 * delta(i, a) * rr(i, a);
      for (Index b = 0; b < delta.cols(); ++b) l += delta(i, a) * h(a, b) * delta(i, b);
    }
  return l;
}

// Central difference of f() in the float parameter `theta` (restored afterwards).
template <class F>
double central_difference(float& theta, double h, F f) {
  const float saved = theta;
  const float plus = saved + static_cast<float>(h), minus = saved - static_cast<float>(h);
  theta = plus;
  const double lp = f();
  theta = minus;
  const double lm = f();
  theta = saved;
  return (lp - lm) / (static_cast<double>(plus) - static_cast<double>(minus));
}

inline std::string data_dir() { return testing::data_dir().string(); }

struct RealLayer {
  std::string name;
  MatrixF w, x;
};

// The 14 weight matrices of blocks 0 and 1 with the activations they saw; empty if data is absent.
inline std::vector<RealLayer> real_layers() {
  const char* sites[][2] = {{"wq", "attn_in"}, {"wk", "attn_in"}, {"wv", "attn_in"},
                            {"wo", "attn_out"}, {"w1", "ffn_in"},  {"w3", "ffn_in"},
                            {"w2", "ffn_hidden"}};
  std::vector<RealLayer> layers;
  for (int block = 0; block < 2; ++block)
    for (const auto& s : sites) {
      const std::string prefix = data_dir() + "/layers/layers." + std::to_string(block) + ".";
      RealLayer l;
      l.name = std::to_string(block) + "." + s[0];
      const std::string w = prefix + s[0] + ".W.npy", x = prefix + s[1] + ".X.npy";
      if (!std::filesystem::exists(w) || !std::filesystem::exists(x)) return {};
      l.w = io::load_npy_f32(w);
      l.x = io::load_npy_f32(x);
      layers.push_back(std::move(l));
    }
  return layers;
}

}  // namespace qround::testdata
