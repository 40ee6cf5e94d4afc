// Test helpers for the learned rounding methods: random problems and the real stories260K layers
// (read with a minimal float32 .npy reader, enough for the files in shared/data/layers).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "qround/detail/rng.hpp"
#include "qround/problem.hpp"

namespace qround::testdata {

inline MatrixF random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0) {
  detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<float>(scale * rng.normal());
  return m;
}

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

inline std::string data_dir() {
  if (const char* env = std::getenv("QROUND_DATA_DIR")) return env;
  return QROUND_DEFAULT_DATA_DIR;
}

// Reads a 2-D little-endian float32 C-order .npy; returns false if missing or not that format.
inline bool read_npy_f32(const std::string& path, MatrixF& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char magic[8];
  if (!f.read(magic, 8) || std::string(magic + 1, 5) != "NUMPY") return false;
  std::uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint32_t(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  if (!f.read(header.data(), header_len)) return false;
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos)
    return false;
  const auto open = header.find('(', header.find("'shape'"));
  long rows = 0, cols = 0;
  if (open == std::string::npos ||
      std::sscanf(header.c_str() + open, "(%ld, %ld)", &rows, &cols) != 2 || rows <= 0 ||
      cols <= 0)
    return false;
  out.resize(rows, cols);
  return static_cast<bool>(
      f.read(reinterpret_cast<char*>(out.data()), std::streamsize(sizeof(float) * rows * cols)));
}

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
      if (!read_npy_f32(prefix + s[0] + ".W.npy", l.w) ||
          !read_npy_f32(prefix + s[1] + ".X.npy", l.x))
        return {};
      layers.push_back(std::move(l));
    }
  return layers;
}

}  // namespace qround::testdata
