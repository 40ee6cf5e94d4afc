#include "qround/model/llama.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif
#include "qround/error.hpp"
#include "qround/model/llama_block.hpp"
#include "qround/qgemm.hpp"

namespace qround::model {
namespace {

constexpr int kMaxDim = 1 << 20;
constexpr int kMaxLayers = 4096;

void check_range(const char* source, const char* field, int value, int lo, int hi) {
  if (value < lo || value > hi)
    throw IoError(fmt::format("{}: {} = {} must be in [{}, {}]", source, field, value, lo, hi));
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

void LlamaConfig::validate(const char* source) const {
  check_range(source, "dim", dim, 1, kMaxDim);
  check_range(source, "hidden_dim", hidden_dim, 1, kMaxDim);
  check_range(source, "n_layers", n_layers, 1, kMaxLayers);
  check_range(source, "n_heads", n_heads, 1, dim);
  check_range(source, "n_kv_heads", n_kv_heads, 1, n_heads);
  check_range(source, "vocab_size", vocab_size, 1, kMaxDim * 16);
  check_range(source, "seq_len", seq_len, 1, kMaxDim);
  if (dim % n_heads != 0)
    throw IoError(fmt::format("{}: dim {} is not a multiple of n_heads {}", source, dim, n_heads));
  if (n_heads % n_kv_heads != 0)
    throw IoError(fmt::format("{}: n_heads {} is not a multiple of n_kv_heads {}", source, n_heads,
                              n_kv_heads));
  if (head_size() % 2 != 0)
    throw IoError(fmt::format("{}: head size {} must be even for RoPE", source, head_size()));
  if (!(rms_eps > 0.0f && rms_eps < 1.0f))
    throw IoError(fmt::format("{}: RMSNorm epsilon {} must be in (0, 1)", source, rms_eps));
  if (!(rope_theta > 1.0f && std::isfinite(rope_theta)))
    throw IoError(fmt::format("{}: RoPE base {} must be a finite number > 1", source, rope_theta));
}

namespace {

// A token embedding row whose mean square overflows float would reach block 0's RMSNorm as
// 1/√∞ = 0: every such token's logits become equal and the NLL a silent ln(vocab). Refused by
// row, as the forward pass computes it (float, Σx²/dim).
void require_normable_embedding(const MatrixFRef& e) {
  for (Index r = 0; r < e.rows(); ++r) {
    const float ms = e.row(r).squaredNorm() / static_cast<float>(e.cols());
    if (!std::isfinite(ms))
      throw NumericalError(fmt::format(
          "token embedding row {}: its mean square overflows float (largest |value| {:g}); the "
          "forward pass's RMSNorm would turn it into zeros",
          r, e.row(r).cwiseAbs().maxCoeff()));
  }
}

}  // namespace

LlamaModel::LlamaModel(LlamaConfig config, LlamaWeights weights)
    : config_(config), weights_(std::move(weights)) {
  config_.validate();
  const auto& c = config_;
  auto expect = [](const char* what, Index r, Index cc, Index er, Index ec) {
    if (r != er || cc != ec)
      throw InvalidArgument(
          fmt::format("llama weights: {} is {}×{}, expected {}×{}", what, r, cc, er, ec));
  };
  expect("token embedding", weights_.token_embedding.rows(), weights_.token_embedding.cols(),
         c.vocab_size, c.dim);
  require_normable_embedding(weights_.token_embedding);
  if (static_cast<int>(weights_.blocks.size()) != c.n_layers)
    throw InvalidArgument(
        fmt::format("llama weights: {} blocks, expected {}", weights_.blocks.size(), c.n_layers));
  for (int i = 0; i < num_linear(); ++i) {
    const MatrixF& m = linear(i);
    const auto l = static_cast<BlockLinear>(i % kLinearsPerBlock);
    const Index rows = l == BlockLinear::kK || l == BlockLinear::kV     ? c.kv_dim()
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
  rope_ = RopeTable::for_config(c);
}

RopeTable RopeTable::for_config(const LlamaConfig& c) {
  RopeTable r;
  const int half = c.head_size() / 2;
  r.cos.resize(c.seq_len, half);
  r.sin.resize(c.seq_len, half);
  for (int pos = 0; pos < c.seq_len; ++pos)
    for (int j = 0; j < half; ++j) {
      const float freq = 1.0f / std::pow(c.rope_theta, static_cast<float>(2 * j) /
                                                           static_cast<float>(c.head_size()));
      const float angle = static_cast<float>(pos) * freq;
      r.cos(pos, j) = std::cos(angle);
      r.sin(pos, j) = std::sin(angle);
    }
  return r;
}

std::string LlamaModel::linear_name(int index) const {
  if (index < 0 || index >= num_linear())
    throw InvalidArgument(fmt::format("linear layer {} outside [0, {})", index, num_linear()));
  return fmt::format("layers.{}.{}", index / kLinearsPerBlock,
                     to_string(static_cast<BlockLinear>(index % kLinearsPerBlock)));
}

const MatrixF& LlamaModel::linear(int index) const {
  if (index < 0 || index >= num_linear())
    throw InvalidArgument(fmt::format("linear layer {} outside [0, {})", index, num_linear()));
  return weights_.blocks[index / kLinearsPerBlock].linear[index % kLinearsPerBlock];
}

void LlamaModel::set_linear(int index, const MatrixFRef& w) {
  const MatrixF& old = linear(index);
  if (w.rows() != old.rows() || w.cols() != old.cols())
    throw InvalidArgument(fmt::format("{}: new weights are {}×{}, expected {}×{}",
                                      linear_name(index), w.rows(), w.cols(), old.rows(),
                                      old.cols()));
  weights_.blocks[index / kLinearsPerBlock].linear[index % kLinearsPerBlock] = w;
  packed_[index].reset();
}

void LlamaModel::set_linear_packed(int index, std::shared_ptr<const PackedMatrix> packed,
                                   PackedCompute compute) {
  if (!packed) throw InvalidArgument(fmt::format("{}: packed matrix is null", linear_name(index)));
  set_linear(index, packed->dequantized());
  packed_[index] = std::move(packed);
  compute_[index] = compute;
}

const PackedMatrix* LlamaModel::packed_linear(int index) const {
  linear(index);  // range check
  return packed_[index].get();
}

void LlamaModel::set_token_embedding(const MatrixFRef& w) {
  const MatrixF& old = weights_.token_embedding;
  if (w.rows() != old.rows() || w.cols() != old.cols())
    throw InvalidArgument(fmt::format("token embedding: new weights are {}×{}, expected {}×{}",
                                      w.rows(), w.cols(), old.rows(), old.cols()));
  require_normable_embedding(w);
  weights_.token_embedding = w;
}

void LlamaModel::set_classifier(const MatrixFRef& w) {
  if (config_.shared_classifier)
    throw InvalidArgument("classifier: it is tied to the token embedding (set_token_embedding)");
  const MatrixF& old = weights_.classifier;
  if (w.rows() != old.rows() || w.cols() != old.cols())
    throw InvalidArgument(fmt::format("classifier: new weights are {}×{}, expected {}×{}", w.rows(),
                                      w.cols(), old.rows(), old.cols()));
  weights_.classifier = w;
}

MatrixF LlamaModel::embed(const std::vector<int>& tokens) const {
  const auto& c = config_;
  const Index T = static_cast<Index>(tokens.size());
  if (T == 0 || T > c.seq_len)
    throw InvalidArgument(
        fmt::format("window of {} tokens: expected 1..{} (seq_len)", T, c.seq_len));
  MatrixF x(T, c.dim);
  for (Index t = 0; t < T; ++t) {
    const int id = tokens[t];
    if (id < 0 || id >= c.vocab_size)
      throw InvalidArgument(
          fmt::format("token {} at position {} outside [0, {})", id, t, c.vocab_size));
    x.row(t) = weights_.token_embedding.row(id);
  }
  return x;
}

bool LlamaModel::run_block(int l, MatrixF& x, const LinearInputFn& observe) const {
  const LlamaBlock& b = weights_.blocks[l];
  const int base = l * kLinearsPerBlock;
  SingleThreadedEigen single_threaded;
  BlockParams<float> params;
  params.rms_att = &b.rms_att;
  params.rms_ffn = &b.rms_ffn;
  for (int k = 0; k < kLinearsPerBlock; ++k) params.linear[k] = &b.linear[k];
  const BlockLinearFn<float> apply = [&](BlockLinear which, const MatrixF& in, MatrixF& out) {
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
  return block_forward<float>(config_, rope_, params, x, apply);
}

void LlamaModel::forward_block(int l, MatrixF& x) const { forward_block(l, x, {}); }

bool LlamaModel::forward_block(int l, MatrixF& x, const LinearInputFn& observe) const {
  if (l < 0 || l >= config_.n_layers)
    throw InvalidArgument(fmt::format("block {} outside [0, {})", l, config_.n_layers));
  return run_block(l, x, observe);
}

MatrixF LlamaModel::logits(const MatrixF& hidden) const { return head(hidden, {}); }

MatrixF LlamaModel::head(const MatrixF& hidden, const LinearInputFn& observe) const {
  SingleThreadedEigen single_threaded;
  MatrixF xf;
  rms_norm<float>(hidden, weights_.rms_final, config_.rms_eps, xf);
  if (observe && !single_threaded.with_caller_threads([&] { return observe(num_linear(), xf); }))
    return {};
  const MatrixF& cls = config_.shared_classifier ? weights_.token_embedding : weights_.classifier;
  return xf * cls.transpose();
}

MatrixF LlamaModel::forward(const std::vector<int>& tokens, const LinearInputFn& observe,
                            bool observe_classifier) const {
  MatrixF x = embed(tokens);
  for (int l = 0; l < config_.n_layers; ++l)
    if (!run_block(l, x, observe)) return {};
  return head(x, observe_classifier ? observe : LinearInputFn{});
}

}  // namespace qround::model
