// The differentiable Llama block (model/llama_block.hpp): its backward pass against central finite
// differences in double, on a small GQA block, for every weight matrix and the input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "qround/error.hpp"
#include "qround/isa.hpp"
#include "qround/model/llama_block.hpp"

namespace qround::model {
namespace {

using MatD = BlockMatrix<double>;
using VecD = BlockVector<double>;

struct SmallBlock {
  LlamaConfig config;
  RopeTable rope;
  VecD rms_att, rms_ffn;
  std::array<MatD, kLinearsPerBlock> w;
  MatD x, probe;  // input and the random projection of the output the loss takes

  explicit SmallBlock(unsigned seed, int seq_len = 7) {
    config.dim = 16;
    config.hidden_dim = 24;
    config.n_layers = 1;
    config.n_heads = 4;
    config.n_kv_heads = 2;
    config.vocab_size = 8;
    config.seq_len = seq_len;
    config.rms_eps = 1e-5f;
    rope = RopeTable::for_config(config);
    std::mt19937 gen(seed);
    std::normal_distribution<double> n(0.0, 1.0);
    auto fill = [&](MatD& m, Index r, Index c, double scale) {
      m.resize(r, c);
      for (Index i = 0; i < m.size(); ++i) m.data()[i] = scale * n(gen);
    };
    rms_att.resize(config.dim);
    rms_ffn.resize(config.dim);
    for (Index i = 0; i < config.dim; ++i) {
      rms_att[i] = 1.0 + 0.3 * n(gen);
      rms_ffn[i] = 1.0 + 0.3 * n(gen);
    }
    const Index d = config.dim, kv = config.kv_dim(), h = config.hidden_dim;
    // Scaled so the softmax is neither flat nor saturated and SiLU sees both signs.
    fill(w[0], d, d, 0.6);
    fill(w[1], kv, d, 0.6);
    fill(w[2], kv, d, 0.5);
    fill(w[3], d, d, 0.4);
    fill(w[4], h, d, 0.5);
    fill(w[5], h, d, 0.5);
    fill(w[6], d, h, 0.4);
    fill(x, config.seq_len, d, 1.0);
    fill(probe, config.seq_len, d, 1.0);
  }

  BlockParams<double> params() const {
    BlockParams<double> p;
    p.rms_att = &rms_att;
    p.rms_ffn = &rms_ffn;
    for (int k = 0; k < kLinearsPerBlock; ++k) p.linear[k] = &w[k];
    return p;
  }

  // L = Σ probe ⊙ y.
  double loss(const MatD& input) const {
    MatD y = input;
    EXPECT_TRUE(block_forward<double>(config, rope, params(), y));
    return (y.array() * probe.array()).sum();
  }
};

// Seeds 1, 2 at 7 tokens (every entry checked), seed 3 at 150 tokens (rows of keys longer than the
// attention kernels' lanes, a partial last vector; every 13th entry checked).
TEST(LlamaBlock, BackwardMatchesFiniteDifferences) {
  for (unsigned seed : {1u, 2u, 3u}) {
    const int seq_len = seed == 3 ? 150 : 7;
    const Index stride = seed == 3 ? 13 : 1;
    SmallBlock b(seed, seq_len);
    BlockTape<double> tape;
    MatD y = b.x;
    ASSERT_TRUE(block_forward<double>(b.config, b.rope, b.params(), y, {}, &tape));
    std::array<MatD, kLinearsPerBlock> grad;
    MatD grad_x;
    block_backward<double>(b.config, b.rope, b.params(), tape, b.probe, grad, &grad_x);
    const double eps = 1e-5;
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      ASSERT_EQ(grad[k].rows(), b.w[k].rows());
      ASSERT_EQ(grad[k].cols(), b.w[k].cols());
      double worst = 0.0, scale = 0.0;
      for (Index i = 0; i < b.w[k].size(); i += stride) {
        const double saved = b.w[k].data()[i];
        b.w[k].data()[i] = saved + eps;
        const double up = b.loss(b.x);
        b.w[k].data()[i] = saved - eps;
        const double down = b.loss(b.x);
        b.w[k].data()[i] = saved;
        const double fd = (up - down) / (2 * eps);
        worst = std::max(worst, std::fabs(fd - grad[k].data()[i]));
        scale = std::max(scale, std::fabs(fd));
      }
      EXPECT_LT(worst, 1e-6 * std::max(1.0, scale))
          << to_string(static_cast<BlockLinear>(k)) << " seed " << seed;
      EXPECT_GT(scale, 1e-3) << "a gradient that is ~0 everywhere checks nothing";
    }
    double worst = 0.0;
    for (Index i = 0; i < b.x.size(); i += stride) {
      MatD xp = b.x, xm = b.x;
      xp.data()[i] += eps;
      xm.data()[i] -= eps;
      const double fd = (b.loss(xp) - b.loss(xm)) / (2 * eps);
      worst = std::max(worst, std::fabs(fd - grad_x.data()[i]));
    }
    EXPECT_LT(worst, 1e-6) << "input gradient, seed " << seed;
  }
}

TEST(LlamaBlock, FloatForwardAgreesWithDouble) {
  SmallBlock b(3);
  MatD yd = b.x;
  ASSERT_TRUE(block_forward<double>(b.config, b.rope, b.params(), yd));
  BlockVector<float> ga = b.rms_att.cast<float>(), gf = b.rms_ffn.cast<float>();
  std::array<MatrixF, kLinearsPerBlock> wf;
  BlockParams<float> p;
  p.rms_att = &ga;
  p.rms_ffn = &gf;
  for (int k = 0; k < kLinearsPerBlock; ++k) {
    wf[k] = b.w[k].cast<float>();
    p.linear[k] = &wf[k];
  }
  MatrixF yf = b.x.cast<float>();
  ASSERT_TRUE(block_forward<float>(b.config, b.rope, p, yf));
  EXPECT_LT((yf.cast<double>() - yd).cwiseAbs().maxCoeff(), 1e-4 * yd.cwiseAbs().maxCoeff());
}

// The float path (the attention kernels and the packed GEMM of every ISA this CPU runs) against
// the double one (Eigen products, plain per-row attention), forward and backward, at a length
// with partial vectors and more rows than the products split; and the same bits for any thread
// count.
struct FloatBlock {
  BlockVector<float> ga, gf;
  std::array<MatrixF, kLinearsPerBlock> w;
  BlockParams<float> p;
  explicit FloatBlock(const SmallBlock& b)
      : ga(b.rms_att.cast<float>()), gf(b.rms_ffn.cast<float>()) {
    p.rms_att = &ga;
    p.rms_ffn = &gf;
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      w[k] = b.w[k].cast<float>();
      p.linear[k] = &w[k];
    }
  }
};

struct FloatPass {
  MatrixF y, dx;
  std::array<MatrixF, kLinearsPerBlock> dw;
};

FloatPass float_pass(const SmallBlock& b, const FloatBlock& f, int threads) {
  FloatPass r;
  r.y = b.x.cast<float>();
  BlockTape<float> tape;
  EXPECT_TRUE(block_forward<float>(b.config, b.rope, f.p, r.y, {}, &tape, threads));
  const MatrixF dy = b.probe.cast<float>();
  block_backward<float>(b.config, b.rope, f.p, tape, dy, r.dw, &r.dx, threads);
  return r;
}

double relative_gap(const MatrixF& f, const MatD& d) {
  return (f.cast<double>() - d).cwiseAbs().maxCoeff() / std::max(1e-30, d.cwiseAbs().maxCoeff());
}

TEST(LlamaBlock, FloatBackwardAgreesWithDoubleOnEveryIsa) {
  const SmallBlock b(5, 150);
  MatD yd = b.x;
  BlockTape<double> tape;
  ASSERT_TRUE(block_forward<double>(b.config, b.rope, b.params(), yd, {}, &tape));
  std::array<MatD, kLinearsPerBlock> dwd;
  MatD dxd;
  block_backward<double>(b.config, b.rope, b.params(), tape, b.probe, dwd, &dxd);
  const FloatBlock f(b);
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(to_string(isa));
    ScopedIsaOverride use(isa);
    const FloatPass r = float_pass(b, f, 1);
    EXPECT_LT(relative_gap(r.y, yd), 1e-5);
    EXPECT_LT(relative_gap(r.dx, dxd), 1e-4);
    for (int k = 0; k < kLinearsPerBlock; ++k)
      EXPECT_LT(relative_gap(r.dw[k], dwd[k]), 1e-4) << to_string(static_cast<BlockLinear>(k));
  }
}

TEST(LlamaBlock, FloatPassSameBitsForAnyThreadCount) {
  const SmallBlock b(6, 150);
  const FloatBlock f(b);
  const FloatPass one = float_pass(b, f, 1);
  for (int threads : {2, 3}) {
    const FloatPass r = float_pass(b, f, threads);
    EXPECT_EQ(r.y, one.y) << threads << " threads";
    EXPECT_EQ(r.dx, one.dx) << threads << " threads";
    for (int k = 0; k < kLinearsPerBlock; ++k) EXPECT_EQ(r.dw[k], one.dw[k]) << threads;
  }
}

TEST(LlamaBlock, RefusesBadShapes) {
  SmallBlock b(4);
  MatD too_long = MatD::Zero(b.config.seq_len + 1, b.config.dim);
  EXPECT_THROW(block_forward<double>(b.config, b.rope, b.params(), too_long), InvalidArgument);
  MatD wrong_width = MatD::Zero(2, b.config.dim + 1);
  EXPECT_THROW(block_forward<double>(b.config, b.rope, b.params(), wrong_width), InvalidArgument);
  BlockTape<double> tape;
  MatD y = b.x;
  ASSERT_TRUE(block_forward<double>(b.config, b.rope, b.params(), y, {}, &tape));
  std::array<MatD, kLinearsPerBlock> grad;
  EXPECT_THROW(block_backward<double>(b.config, b.rope, b.params(), tape, MatD::Zero(1, 16), grad),
               InvalidArgument);
}

}  // namespace
}  // namespace qround::model
