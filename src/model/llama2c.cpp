#include "qround/model/llama2c.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "../io/file_bytes.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif
#include "qround/error.hpp"
#include "qround/qgemm.hpp"

namespace qround::model {
namespace {

constexpr int kMaxDim = 1 << 20;
constexpr int kMaxLayers = 4096;
constexpr float kRmsEps = 1e-5f;
constexpr float kRopeTheta = 10000.0f;
constexpr int kHeaderInts = 7;

void check_range(const char* field, int value, int lo, int hi) {
  if (value < lo || value > hi)
    throw IoError(fmt::format("llama2.c header: {} = {} must be in [{}, {}]", field, value, lo, hi));
}

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

// Row-wise RMSNorm with gain g.
MatrixF rms_norm(const MatrixF& x, const VectorF& g) {
  MatrixF out(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const float ss = x.row(t).squaredNorm() / static_cast<float>(x.cols()) + kRmsEps;
    const float inv = 1.0f / std::sqrt(ss);
    out.row(t) = (x.row(t) * inv).cwiseProduct(g.transpose());
  }
  return out;
}

// Keeps Eigen's products single-threaded on the calling thread for the guard's lifetime. The
// model's matrices are small: Eigen's own fork/join per product costs more than it saves, and
// badly so when the cores are shared. Callers parallelize over windows instead.
class SingleThreadedEigen {
 public:
#ifdef _OPENMP
  SingleThreadedEigen() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreadedEigen() { omp_set_num_threads(saved_); }
  // Runs f with the caller's thread count (an observer may do parallel work of its own).
  template <typename F>
  auto with_caller_threads(F&& f) {
    omp_set_num_threads(saved_);
    auto result = f();
    omp_set_num_threads(1);
    return result;
  }

 private:
  int saved_;
#else
  template <typename F>
  auto with_caller_threads(F&& f) {
    return f();
  }
#endif
};

}  // namespace

const char* to_string(BlockLinear l) {
  static const char* const names[kLinearsPerBlock] = {"wq", "wk", "wv", "wo", "w1", "w3", "w2"};
  return names[static_cast<int>(l)];
}

void Llama2cConfig::validate() const {
  check_range("dim", dim, 1, kMaxDim);
  check_range("hidden_dim", hidden_dim, 1, kMaxDim);
  check_range("n_layers", n_layers, 1, kMaxLayers);
  check_range("n_heads", n_heads, 1, dim);
  check_range("n_kv_heads", n_kv_heads, 1, n_heads);
  check_range("vocab_size", vocab_size, 1, kMaxDim * 16);
  check_range("seq_len", seq_len, 1, kMaxDim);
  if (dim % n_heads != 0)
    throw IoError(fmt::format("llama2.c header: dim {} is not a multiple of n_heads {}", dim,
                              n_heads));
  if (n_heads % n_kv_heads != 0)
    throw IoError(fmt::format("llama2.c header: n_heads {} is not a multiple of n_kv_heads {}",
                              n_heads, n_kv_heads));
  if (head_size() % 2 != 0)
    throw IoError(fmt::format("llama2.c header: head size {} must be even for RoPE", head_size()));
}

Llama2cModel Llama2cModel::load(const std::string& path) {
  const auto bytes = io_detail::read_file_bytes(path, "llama2.c checkpoint", std::uint64_t{1} << 40);
  io_detail::ByteCursor in(bytes.data(), bytes.size(), fmt::format("llama2.c checkpoint '{}'", path));
  std::int32_t h[kHeaderInts];
  for (auto& v : h) v = in.read<std::int32_t>("header");
  Llama2cConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] == std::numeric_limits<std::int32_t>::min() ? 0 : std::abs(h[5]);
  c.seq_len = h[6];
  c.validate();

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

  Llama2cWeights w;
  w.token_embedding = read_matrix(in, c.vocab_size, c.dim, "token embedding");
  w.blocks.resize(c.n_layers);
  auto stacked_vectors = [&](VectorF Llama2cBlock::*field, const char* what) {
    for (auto& b : w.blocks) b.*field = read_vector(in, c.dim, what);
  };
  auto stacked_matrices = [&](BlockLinear l, Index rows, Index cols) {
    for (auto& b : w.blocks) b.linear[static_cast<int>(l)] = read_matrix(in, rows, cols, to_string(l));
  };
  stacked_vectors(&Llama2cBlock::rms_att, "rms_att");
  stacked_matrices(BlockLinear::kQ, c.dim, c.dim);
  stacked_matrices(BlockLinear::kK, c.kv_dim(), c.dim);
  stacked_matrices(BlockLinear::kV, c.kv_dim(), c.dim);
  stacked_matrices(BlockLinear::kO, c.dim, c.dim);
  stacked_vectors(&Llama2cBlock::rms_ffn, "rms_ffn");
  stacked_matrices(BlockLinear::kW1, c.hidden_dim, c.dim);
  stacked_matrices(BlockLinear::kW2, c.dim, c.hidden_dim);
  stacked_matrices(BlockLinear::kW3, c.hidden_dim, c.dim);
  w.rms_final = read_vector(in, c.dim, "rms_final");
  w.freq_cis_real = read_matrix(in, c.seq_len, c.head_size() / 2, "freq_cis_real");
  w.freq_cis_imag = read_matrix(in, c.seq_len, c.head_size() / 2, "freq_cis_imag");
  if (!c.shared_classifier) w.classifier = read_matrix(in, c.vocab_size, c.dim, "classifier");
  require_finite_tensor(reinterpret_cast<const float*>(bytes.data() + kHeaderInts * 4),
                        static_cast<Index>(floats), "a weight tensor");
  return Llama2cModel(c, std::move(w));
}

Llama2cModel::Llama2cModel(Llama2cConfig config, Llama2cWeights weights)
    : config_(config), weights_(std::move(weights)) {
  config_.validate();
  const auto& c = config_;
  auto expect = [](const char* what, Index r, Index cc, Index er, Index ec) {
    if (r != er || cc != ec)
      throw InvalidArgument(fmt::format("llama2.c weights: {} is {}×{}, expected {}×{}", what, r,
                                        cc, er, ec));
  };
  expect("token embedding", weights_.token_embedding.rows(), weights_.token_embedding.cols(),
         c.vocab_size, c.dim);
  if (static_cast<int>(weights_.blocks.size()) != c.n_layers)
    throw InvalidArgument(fmt::format("llama2.c weights: {} blocks, expected {}",
                                      weights_.blocks.size(), c.n_layers));
  for (int i = 0; i < num_linear(); ++i) {
    const MatrixF& m = linear(i);
    const auto l = static_cast<BlockLinear>(i % kLinearsPerBlock);
    const Index rows = l == BlockLinear::kK || l == BlockLinear::kV ? c.kv_dim()
                       : l == BlockLinear::kW1 || l == BlockLinear::kW3 ? c.hidden_dim
                                                                         : c.dim;
    const Index cols = l == BlockLinear::kW2 ? c.hidden_dim : c.dim;
    expect(linear_name(i).c_str(), m.rows(), m.cols(), rows, cols);
  }
  for (const auto& b : weights_.blocks) {
    expect("rms_att", b.rms_att.size(), 1, c.dim, 1);
    expect("rms_ffn", b.rms_ffn.size(), 1, c.dim, 1);
  }
  expect("rms_final", weights_.rms_final.size(), 1, c.dim, 1);
  if (!c.shared_classifier)
    expect("classifier", weights_.classifier.rows(), weights_.classifier.cols(), c.vocab_size,
           c.dim);
  packed_.resize(num_linear());
  compute_.assign(num_linear(), PackedCompute::kInteger);
  // RoPE angles as llama2.c computes them (float): pos · θ^(−2j/head_size) for pair j.
  const int half = c.head_size() / 2;
  rope_cos_.resize(c.seq_len, half);
  rope_sin_.resize(c.seq_len, half);
  for (int pos = 0; pos < c.seq_len; ++pos)
    for (int j = 0; j < half; ++j) {
      const float freq =
          1.0f / std::pow(kRopeTheta, static_cast<float>(2 * j) / static_cast<float>(c.head_size()));
      const float angle = static_cast<float>(pos) * freq;
      rope_cos_(pos, j) = std::cos(angle);
      rope_sin_(pos, j) = std::sin(angle);
    }
}

std::string Llama2cModel::linear_name(int index) const {
  if (index < 0 || index >= num_linear())
    throw InvalidArgument(fmt::format("linear layer {} outside [0, {})", index, num_linear()));
  return fmt::format("layers.{}.{}", index / kLinearsPerBlock,
                     to_string(static_cast<BlockLinear>(index % kLinearsPerBlock)));
}

const MatrixF& Llama2cModel::linear(int index) const {
  if (index < 0 || index >= num_linear())
    throw InvalidArgument(fmt::format("linear layer {} outside [0, {})", index, num_linear()));
  return weights_.blocks[index / kLinearsPerBlock].linear[index % kLinearsPerBlock];
}

void Llama2cModel::set_linear(int index, const MatrixFRef& w) {
  const MatrixF& old = linear(index);
  if (w.rows() != old.rows() || w.cols() != old.cols())
    throw InvalidArgument(fmt::format("{}: new weights are {}×{}, expected {}×{}",
                                      linear_name(index), w.rows(), w.cols(), old.rows(),
                                      old.cols()));
  weights_.blocks[index / kLinearsPerBlock].linear[index % kLinearsPerBlock] = w;
  packed_[index].reset();
}

void Llama2cModel::set_linear_packed(int index, std::shared_ptr<const PackedMatrix> packed,
                                     PackedCompute compute) {
  if (!packed) throw InvalidArgument(fmt::format("{}: packed matrix is null", linear_name(index)));
  set_linear(index, packed->dequantized());
  packed_[index] = std::move(packed);
  compute_[index] = compute;
}

const PackedMatrix* Llama2cModel::packed_linear(int index) const {
  linear(index);  // range check
  return packed_[index].get();
}

MatrixF Llama2cModel::forward(const std::vector<int>& tokens, const LinearInputFn& observe) const {
  const auto& c = config_;
  const Index T = static_cast<Index>(tokens.size());
  if (T == 0 || T > c.seq_len)
    throw InvalidArgument(fmt::format("window of {} tokens: expected 1..{} (seq_len)", T,
                                      c.seq_len));
  SingleThreadedEigen single_threaded;
  MatrixF x(T, c.dim);
  for (Index t = 0; t < T; ++t) {
    const int id = tokens[t];
    if (id < 0 || id >= c.vocab_size)
      throw InvalidArgument(fmt::format("token {} at position {} outside [0, {})", id, t,
                                        c.vocab_size));
    x.row(t) = weights_.token_embedding.row(id);
  }
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const float inv_sqrt_hs = 1.0f / std::sqrt(static_cast<float>(hs));
  auto rope = [&](MatrixF& m) {
    for (Index t = 0; t < T; ++t)
      for (Index col = 0; col < m.cols(); col += 2) {
        const int j = static_cast<int>((col % hs) / 2);
        const float cr = rope_cos_(t, j), ci = rope_sin_(t, j);
        const float v0 = m(t, col), v1 = m(t, col + 1);
        m(t, col) = v0 * cr - v1 * ci;
        m(t, col + 1) = v0 * ci + v1 * cr;
      }
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const Llama2cBlock& b = weights_.blocks[l];
    const int base = l * kLinearsPerBlock;
    auto apply = [&](BlockLinear which, const MatrixF& in, MatrixF& out) {
      const int k = static_cast<int>(which);
      if (observe && !single_threaded.with_caller_threads([&] { return observe(base + k, in); }))
        return false;
      if (const PackedMatrix* p = packed_[base + k].get()) {
        out = compute_[base + k] == PackedCompute::kInteger && p->is_uniform() ? qgemm(*p, in)
                                                                               : qgemm_float(*p, in);
      } else {
        out.noalias() = in * b.linear[k].transpose();
      }
      return true;
    };
    MatrixF xb = rms_norm(x, b.rms_att), q, k, v, att(T, c.dim), o;
    if (!apply(BlockLinear::kQ, xb, q) || !apply(BlockLinear::kK, xb, k) ||
        !apply(BlockLinear::kV, xb, v))
      return {};
    rope(q);
    rope(k);
    MatrixF scores(T, T);
    for (int h = 0; h < c.n_heads; ++h) {
      const int kvh = h / group;
      scores.noalias() = q.middleCols(h * hs, hs) * k.middleCols(kvh * hs, hs).transpose();
      for (Index t = 0; t < T; ++t) {
        auto row = scores.row(t).head(t + 1).array();
        row *= inv_sqrt_hs;
        row = (row - row.maxCoeff()).exp();
        row /= row.sum();
        scores.row(t).tail(T - t - 1).setZero();
      }
      att.middleCols(h * hs, hs).noalias() = scores * v.middleCols(kvh * hs, hs);
    }
    if (!apply(BlockLinear::kO, att, o)) return {};
    x += o;
    xb = rms_norm(x, b.rms_ffn);
    MatrixF h1, h3, down;
    if (!apply(BlockLinear::kW1, xb, h1) || !apply(BlockLinear::kW3, xb, h3)) return {};
    // SiLU(w1 x) · (w3 x)
    h1.array() = h1.array() / (1.0f + (-h1.array()).exp()) * h3.array();
    if (!apply(BlockLinear::kW2, h1, down)) return {};
    x += down;
  }
  const MatrixF xf = rms_norm(x, weights_.rms_final);
  const MatrixF& cls = c.shared_classifier ? weights_.token_embedding : weights_.classifier;
  MatrixF logits = xf * cls.transpose();
  return logits;
}

}  // namespace qround::model
