#include "qround/model/llama2c.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "../io/file_bytes.hpp"
#include "qround/error.hpp"

namespace qround::model {
namespace {

constexpr int kHeaderInts = 7;

MatrixF read_matrix(io_detail::ByteCursor& in, Index rows, Index cols, const char* what) {
  MatrixF m(rows, cols);
  const std::size_t bytes = static_cast<std::size_t>(rows * cols) * sizeof(float);
  std::memcpy(m.data(), in.take(bytes, what), bytes);
  return m;
}

VectorF read_vector(io_detail::ByteCursor& in, Index n, const char* what) {
  VectorF v(n);
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  std::memcpy(v.data(), in.take(bytes, what), bytes);
  return v;
}

void require_finite_tensor(const float* p, Index n, const std::string& what) {
  for (Index i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      throw IoError(fmt::format("llama2.c checkpoint: {} has a non-finite value at flat index {}",
                                what, i));
}

}  // namespace

LlamaModel load_llama2c(const std::string& path) {
  const auto bytes = io_detail::read_file_bytes(path, "llama2.c checkpoint", std::uint64_t{1} << 40);
  io_detail::ByteCursor in(bytes.data(), bytes.size(), fmt::format("llama2.c checkpoint '{}'", path));
  std::int32_t h[kHeaderInts];
  for (auto& v : h) v = in.read<std::int32_t>("header");
  LlamaConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] == std::numeric_limits<std::int32_t>::min() ? 0 : std::abs(h[5]);
  c.seq_len = h[6];
  c.validate("llama2.c header");

  // Every dimension is ≤ 2^24, so these products cannot overflow 64 bits.
  const std::uint64_t d = c.dim, hd = c.hidden_dim, L = c.n_layers, kv = c.kv_dim(),
                      V = c.vocab_size, half = c.head_size() / 2, S = c.seq_len;
  std::uint64_t floats = V * d + L * d + L * d * d + 2 * L * kv * d + L * d * d + L * d +
                         3 * L * hd * d + d + 2 * S * half;
  if (!c.shared_classifier) floats += V * d;
  const std::uint64_t expected = kHeaderInts * 4 + floats * 4;
  if (bytes.size() != expected)
    throw IoError(fmt::format(
        "llama2.c checkpoint '{}' has {} bytes, but its header (dim {}, hidden {}, layers {}, "
        "heads {}/{}, vocab {}{}, seq {}) implies {} bytes of float32 weights and RoPE tables",
        path, bytes.size(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
        c.vocab_size, c.shared_classifier ? "" : " + classifier", c.seq_len, expected));

  LlamaWeights w;
  w.token_embedding = read_matrix(in, c.vocab_size, c.dim, "token embedding");
  w.blocks.resize(c.n_layers);
  auto stacked_vectors = [&](VectorF LlamaBlock::*field, const char* what) {
    for (auto& b : w.blocks) b.*field = read_vector(in, c.dim, what);
  };
  auto stacked_matrices = [&](BlockLinear l, Index rows, Index cols) {
    for (auto& b : w.blocks) b.linear[static_cast<int>(l)] = read_matrix(in, rows, cols, to_string(l));
  };
  stacked_vectors(&LlamaBlock::rms_att, "rms_att");
  stacked_matrices(BlockLinear::kQ, c.dim, c.dim);
  stacked_matrices(BlockLinear::kK, c.kv_dim(), c.dim);
  stacked_matrices(BlockLinear::kV, c.kv_dim(), c.dim);
  stacked_matrices(BlockLinear::kO, c.dim, c.dim);
  stacked_vectors(&LlamaBlock::rms_ffn, "rms_ffn");
  stacked_matrices(BlockLinear::kW1, c.hidden_dim, c.dim);
  stacked_matrices(BlockLinear::kW2, c.dim, c.hidden_dim);
  stacked_matrices(BlockLinear::kW3, c.hidden_dim, c.dim);
  w.rms_final = read_vector(in, c.dim, "rms_final");
  w.freq_cis_real = read_matrix(in, c.seq_len, c.head_size() / 2, "freq_cis_real");
  w.freq_cis_imag = read_matrix(in, c.seq_len, c.head_size() / 2, "freq_cis_imag");
  if (!c.shared_classifier) w.classifier = read_matrix(in, c.vocab_size, c.dim, "classifier");
  require_finite_tensor(reinterpret_cast<const float*>(bytes.data() + kHeaderInts * 4),
                        static_cast<Index>(floats), "a weight tensor");
  return LlamaModel(c, std::move(w));
}

}  // namespace qround::model
