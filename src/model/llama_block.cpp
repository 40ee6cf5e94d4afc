#include "qround/model/llama_block.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "qround/error.hpp"

namespace qround::model {
namespace {

template <typename S>
using Mat = BlockMatrix<S>;

// Query rows per tile of the causal attention: small enough that little of the masked half is
// computed, large enough for efficient products.
constexpr Index kCausalTile = 64;
template <typename S>
using Vec = BlockVector<S>;

// dL/dx of y = RMSNorm(x; g) given dL/dy, added into dx:
//   dx_k = inv·g_k·dy_k − inv³/n · x_k · Σ_j g_j dy_j x_j.
template <typename S>
void rms_norm_backward(const Mat<S>& x, const Vec<S>& g, const Vec<S>& inv_rms, const Mat<S>& dy,
                       Mat<S>& dx) {
  const S n = static_cast<S>(x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const S inv = inv_rms[t];
    const S dot = (dy.row(t).cwiseProduct(g.transpose())).dot(x.row(t));
    dx.row(t) +=
        inv * dy.row(t).cwiseProduct(g.transpose()) - (inv * inv * inv / n * dot) * x.row(t);
  }
}

// Rotates consecutive pairs within each head by the position's angles (sign +1), or back (−1:
// the transpose, which is the backward pass of the rotation).
template <typename S>
void rope_rotate(const RopeTable& rope, int head_size, Mat<S>& m, int sign) {
  for (Index t = 0; t < m.rows(); ++t)
    for (Index col = 0; col < m.cols(); col += 2) {
      const int j = static_cast<int>((col % head_size) / 2);
      const S cr = static_cast<S>(rope.cos(t, j));
      const S ci = static_cast<S>(rope.sin(t, j)) * static_cast<S>(sign);
      const S v0 = m(t, col), v1 = m(t, col + 1);
      m(t, col) = v0 * cr - v1 * ci;
      m(t, col + 1) = v0 * ci + v1 * cr;
    }
}

template <typename S>
const Mat<S>& weight(const BlockParams<S>& p, BlockLinear which) {
  const Mat<S>* w = p.linear[static_cast<int>(which)];
  if (!w) throw InvalidArgument(fmt::format("block: no weights for {}", to_string(which)));
  return *w;
}

}  // namespace

template <typename S>
void rms_norm(const Mat<S>& x, const Vec<S>& g, float eps, Mat<S>& out, Vec<S>* inv_rms) {
  out.resize(x.rows(), x.cols());
  if (inv_rms) inv_rms->resize(x.rows());
  for (Index t = 0; t < x.rows(); ++t) {
    const S ss = x.row(t).squaredNorm() / static_cast<S>(x.cols()) + static_cast<S>(eps);
    const S inv = S(1) / std::sqrt(ss);
    out.row(t) = (x.row(t) * inv).cwiseProduct(g.transpose());
    if (inv_rms) (*inv_rms)[t] = inv;
  }
}

template <typename S>
bool block_forward(const LlamaConfig& c, const RopeTable& rope, const BlockParams<S>& p, Mat<S>& x,
                   const BlockLinearFn<S>& apply, BlockTape<S>* tape) {
  const Index T = x.rows();
  if (T == 0 || T > c.seq_len || x.cols() != c.dim)
    throw InvalidArgument(fmt::format("block input is {}×{}, expected 1..{} tokens × {}", T,
                                      x.cols(), c.seq_len, c.dim));
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const S inv_sqrt_hs = S(1) / std::sqrt(static_cast<S>(hs));
  auto linear = [&](BlockLinear which, const Mat<S>& in, Mat<S>& out) {
    if (apply) return apply(which, in, out);
    out.noalias() = in * weight(p, which).transpose();
    return true;
  };
  BlockTape<S> scratch;
  BlockTape<S>& tp = tape ? *tape : scratch;
  if (tape) tp.x = x;
  rms_norm(x, *p.rms_att, c.rms_eps, tp.u, tape ? &tp.inv_rms : nullptr);
  if (!linear(BlockLinear::kQ, tp.u, tp.q) || !linear(BlockLinear::kK, tp.u, tp.k) ||
      !linear(BlockLinear::kV, tp.u, tp.v))
    return false;
  rope_rotate(rope, hs, tp.q, +1);
  rope_rotate(rope, hs, tp.k, +1);
  tp.att.resize(T, c.dim);
  if (tape) tp.probs.resize(c.n_heads);
  Mat<S> scratch_probs;
  for (int h = 0; h < c.n_heads; ++h) {
    const int kvh = h / group;
    Mat<S>& probs = tape ? tp.probs[h] : scratch_probs;
    probs.resize(T, T);
    // Causal: a tile of query rows [r0, r0 + rows) sees keys [0, r0 + rows) only, so the masked
    // half of q·kᵀ is never computed. Entries right of the diagonal inside a tile are set to 0.
    for (Index r0 = 0; r0 < T; r0 += kCausalTile) {
      const Index rows = std::min<Index>(kCausalTile, T - r0), keys = r0 + rows;
      auto p = probs.block(r0, 0, rows, keys);
      p.noalias() =
          tp.q.block(r0, h * hs, rows, hs) * tp.k.block(0, kvh * hs, keys, hs).transpose();
      for (Index i = 0; i < rows; ++i) {
        auto row = p.row(i).head(r0 + i + 1).array();
        row *= inv_sqrt_hs;
        row = (row - row.maxCoeff()).exp();
        row /= row.sum();
        p.row(i).tail(rows - i - 1).setZero();
      }
      tp.att.block(r0, h * hs, rows, hs).noalias() = p * tp.v.block(0, kvh * hs, keys, hs);
    }
  }
  Mat<S> o;
  if (!linear(BlockLinear::kO, tp.att, o)) return false;
  x += o;
  if (tape) tp.x_mid = x;
  rms_norm(x, *p.rms_ffn, c.rms_eps, tp.u_mid, tape ? &tp.inv_rms_mid : nullptr);
  if (!linear(BlockLinear::kW1, tp.u_mid, tp.gate) || !linear(BlockLinear::kW3, tp.u_mid, tp.up))
    return false;
  // SiLU(w1 u) · (w3 u)
  tp.act.resize(T, c.hidden_dim);
  tp.act.array() = tp.gate.array() / (S(1) + (-tp.gate.array()).exp()) * tp.up.array();
  Mat<S> down;
  if (!linear(BlockLinear::kW2, tp.act, down)) return false;
  x += down;
  return true;
}

template <typename S>
void block_backward(const LlamaConfig& c, const RopeTable& rope, const BlockParams<S>& p,
                    const BlockTape<S>& tp, const Mat<S>& dy,
                    std::array<Mat<S>, kLinearsPerBlock>& dw, Mat<S>* dx_out) {
  const Index T = tp.x.rows();
  if (dy.rows() != T || dy.cols() != c.dim || static_cast<int>(tp.probs.size()) != c.n_heads)
    throw InvalidArgument(fmt::format(
        "block backward: gradient is {}×{} for a tape of {} tokens × {} (and {} heads recorded)",
        dy.rows(), dy.cols(), T, c.dim, tp.probs.size()));
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const S inv_sqrt_hs = S(1) / std::sqrt(static_cast<S>(hs));
  auto idx = [](BlockLinear l) { return static_cast<int>(l); };
  // Feed-forward: y = x' + act·W2ᵀ, act = SiLU(gate)·up.
  Mat<S> dx_mid = dy;
  dw[idx(BlockLinear::kW2)].noalias() = dy.transpose() * tp.act;
  const Mat<S> dact = dy * weight(p, BlockLinear::kW2);
  Mat<S> dgate(T, c.hidden_dim), dup(T, c.hidden_dim);
  {
    const auto a = tp.gate.array();
    const auto sig = (S(1) / (S(1) + (-a).exp())).eval();
    dup.array() = dact.array() * a * sig;
    dgate.array() = dact.array() * tp.up.array() * sig * (S(1) + a * (S(1) - sig));
  }
  dw[idx(BlockLinear::kW1)].noalias() = dgate.transpose() * tp.u_mid;
  dw[idx(BlockLinear::kW3)].noalias() = dup.transpose() * tp.u_mid;
  Mat<S> du_mid = dgate * weight(p, BlockLinear::kW1);
  du_mid.noalias() += dup * weight(p, BlockLinear::kW3);
  rms_norm_backward(tp.x_mid, *p.rms_ffn, tp.inv_rms_mid, du_mid, dx_mid);
  // Attention: x' = x + att·Woᵀ.
  dw[idx(BlockLinear::kO)].noalias() = dx_mid.transpose() * tp.att;
  const Mat<S> datt = dx_mid * weight(p, BlockLinear::kO);
  Mat<S> dq = Mat<S>::Zero(T, c.dim), dk = Mat<S>::Zero(T, c.kv_dim()),
         dv = Mat<S>::Zero(T, c.kv_dim());
  Mat<S> dprob(T, T);
  for (int h = 0; h < c.n_heads; ++h) {
    const int kvh = h / group;
    const Mat<S>& probs = tp.probs[h];
    for (Index r0 = 0; r0 < T; r0 += kCausalTile) {  // the forward pass's tiles
      const Index rows = std::min<Index>(kCausalTile, T - r0), keys = r0 + rows;
      const auto p = probs.block(r0, 0, rows, keys);
      const auto da = datt.block(r0, h * hs, rows, hs);
      auto ds = dprob.block(r0, 0, rows, keys);
      ds.noalias() = da * tp.v.block(0, kvh * hs, keys, hs).transpose();
      dv.block(0, kvh * hs, keys, hs).noalias() += p.transpose() * da;
      // Softmax backward per row, then the 1/√hs of the scores: dS = P ⊙ (dP − Σ P dP) / √hs.
      for (Index i = 0; i < rows; ++i) {
        const Index n = r0 + i + 1;
        const S dot = p.row(i).head(n).dot(ds.row(i).head(n));
        ds.row(i).head(n) =
            (p.row(i).head(n).array() * (ds.row(i).head(n).array() - dot)) * inv_sqrt_hs;
        ds.row(i).tail(keys - n).setZero();
      }
      dq.block(r0, h * hs, rows, hs).noalias() += ds * tp.k.block(0, kvh * hs, keys, hs);
      dk.block(0, kvh * hs, keys, hs).noalias() +=
          ds.transpose() * tp.q.block(r0, h * hs, rows, hs);
    }
  }
  rope_rotate(rope, hs, dq, -1);
  rope_rotate(rope, hs, dk, -1);
  dw[idx(BlockLinear::kQ)].noalias() = dq.transpose() * tp.u;
  dw[idx(BlockLinear::kK)].noalias() = dk.transpose() * tp.u;
  dw[idx(BlockLinear::kV)].noalias() = dv.transpose() * tp.u;
  if (dx_out) {
    Mat<S> du = dq * weight(p, BlockLinear::kQ);
    du.noalias() += dk * weight(p, BlockLinear::kK);
    du.noalias() += dv * weight(p, BlockLinear::kV);
    *dx_out = dx_mid;
    rms_norm_backward(tp.x, *p.rms_att, tp.inv_rms, du, *dx_out);
  }
}

#define QROUND_INSTANTIATE_BLOCK(S)                                                            \
  template void rms_norm<S>(const Mat<S>&, const Vec<S>&, float, Mat<S>&, Vec<S>*);            \
  template bool block_forward<S>(const LlamaConfig&, const RopeTable&, const BlockParams<S>&,  \
                                 Mat<S>&, const BlockLinearFn<S>&, BlockTape<S>*);             \
  template void block_backward<S>(const LlamaConfig&, const RopeTable&, const BlockParams<S>&, \
                                  const BlockTape<S>&, const Mat<S>&,                          \
                                  std::array<Mat<S>, kLinearsPerBlock>&, Mat<S>*);
QROUND_INSTANTIATE_BLOCK(float)
QROUND_INSTANTIATE_BLOCK(double)
#undef QROUND_INSTANTIATE_BLOCK

}  // namespace qround::model
