#include "qround/model/llama_block.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../kernels/attention.hpp"
#include "../kernels/sgemm_packed.hpp"
#include "qround/error.hpp"

namespace qround::model {
namespace {

template <typename S>
using Mat = BlockMatrix<S>;

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

// Row stride of the transposed keys / values and of the softmax weights: a whole number of the
// attention kernels' lanes.
Index attention_stride(Index tokens) {
  const Index lanes = kernels::kAttentionLanes;
  return (tokens + lanes - 1) / lanes * lanes;
}

// One kv head's keys or values transposed to head_size × stride, zero past the tokens, so that a
// query row's scores against keys 0..i (and the backward pass's products) run along contiguous
// memory: heads are small (8 to 128 dimensions), and a product with so short an inner dimension
// wastes most of a general GEMM's time on packing.
template <typename S>
void transpose_head(const Mat<S>& m, Index col0, int hs, Index stride, Mat<S>& out) {
  out.setZero(hs, stride);
  out.leftCols(m.rows()) = m.block(0, col0, m.rows(), hs).transpose();
}

// Causal softmax attention of one head, row by row (the plain form of kernels::attention_forward,
// which computes the float case): for query i, p = softmax(q_i·Kᵀ[0..i] / √hs) into row i of
// `probs` (entries 0..i) and att_i = Σ_j p_j v_j.
template <typename S>
void attend_head(const Mat<S>& q, Index q_col, const Mat<S>& kt, const Mat<S>& vt, S scale,
                 S* probs, Index probs_ld, Mat<S>& att) {
  const Index T = q.rows(), hs = kt.rows();
  for (Index i = 0; i < T; ++i) {
    const Index n = i + 1;
    Eigen::Map<Vec<S>> p(probs + i * probs_ld, n);
    p = kt.row(0).head(n).transpose() * (q(i, q_col) * scale);
    for (Index d = 1; d < hs; ++d) p += kt.row(d).head(n).transpose() * (q(i, q_col + d) * scale);
    p = (p.array() - p.maxCoeff()).exp();
    p /= p.sum();
    for (Index d = 0; d < hs; ++d) att(i, q_col + d) = vt.row(d).head(n).dot(p.transpose());
  }
}

// The backward pass of attend_head (the plain form of kernels::attention_backward): per query row
// i (p its weights, da = dL/datt_i)
//   dp_j = da·v_j,  dv_j += p_j·da,  ds_j = p_j (dp_j − Σ p dp) / √hs,
//   dq_i = Σ_j ds_j k_j,  dk_j += ds_j q_i,
// the kv head's gradients accumulated transposed (hs × stride) into dkt, dvt.
template <typename S>
void attend_head_backward(const Mat<S>& q, Index q_col, const Mat<S>& kt, const Mat<S>& vt,
                          const Mat<S>& probs, const Mat<S>& datt, S scale, Mat<S>& dq, Mat<S>& dkt,
                          Mat<S>& dvt) {
  const Index T = q.rows(), hs = kt.rows();
  Vec<S> ds(T);
  for (Index i = 0; i < T; ++i) {
    const Index n = i + 1;
    const auto p = probs.row(i).head(n);
    auto dsn = ds.head(n);
    dsn = vt.row(0).head(n).transpose() * datt(i, q_col);
    for (Index d = 1; d < hs; ++d) dsn += vt.row(d).head(n).transpose() * datt(i, q_col + d);
    for (Index d = 0; d < hs; ++d) dvt.row(d).head(n) += p * datt(i, q_col + d);
    const S dot = p.dot(dsn.transpose());
    dsn = (p.transpose().array() * (dsn.array() - dot)) * scale;
    for (Index d = 0; d < hs; ++d) {
      dq(i, q_col + d) = kt.row(d).head(n).dot(dsn.transpose());
      dkt.row(d).head(n) += dsn.transpose() * q(i, q_col + d);
    }
  }
}

// The block's products. Float ones run on the packed GEMM kernels of this CPU (the generic flags
// Eigen is compiled with here leave most of an AVX2 or AVX-512 core idle), with the rows of the
// result split over `threads`: a row's sums do not depend on the split, so neither does the
// result. Double (the finite-difference reference) stays with Eigen.
//   C = A·Bᵀ or A·B (B as stored), C = Aᵀ·B; accumulate adds into C.
enum class Rhs { kAsIs, kTransposed };

template <typename S>
void product(const Mat<S>& a, const Mat<S>& b, Rhs rhs, Mat<S>& c, int threads,
             bool accumulate = false) {
  const Index m = a.rows(), k = a.cols(), n = rhs == Rhs::kTransposed ? b.rows() : b.cols();
  if constexpr (std::is_same_v<S, float>) {
    std::vector<float> packed(kernels::sgemm_packed_b_size(k, n));
    // B(p, j) = b(j, p) (transposed) or b(p, j).
    if (rhs == Rhs::kTransposed)
      kernels::sgemm_pack_b(k, n, b.data(), 1, b.cols(), packed.data());
    else
      kernels::sgemm_pack_b(k, n, b.data(), b.cols(), 1, packed.data());
    Mat<S> fresh;
    Mat<S>& out = accumulate ? fresh : c;
    out.resize(m, n);
    const int parts = static_cast<int>(std::clamp<Index>(m / 16, 1, std::max(1, threads)));
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int t = 0; t < parts; ++t) {
      const Index r0 = m * t / parts, r1 = m * (t + 1) / parts;
      std::vector<float> workspace(kernels::kSgemmWorkspace);
      kernels::sgemm_packed(r1 - r0, n, k, a.data() + r0 * k, k, packed.data(), out.data() + r0 * n,
                            n, workspace.data());
    }
    if (accumulate) c += fresh;
  } else {
    (void)threads;
    if (rhs == Rhs::kTransposed) {
      if (accumulate)
        c.noalias() += a * b.transpose();
      else
        c.noalias() = a * b.transpose();
    } else {
      if (accumulate)
        c.noalias() += a * b;
      else
        c.noalias() = a * b;
    }
  }
}

// C = Aᵀ·B (a weight gradient: Σ over tokens), through a transposed copy of A for the kernels.
template <typename S>
void product_at(const Mat<S>& a, const Mat<S>& b, Mat<S>& c, int threads) {
  if constexpr (std::is_same_v<S, float>) {
    const Mat<S> at = a.transpose();
    product(at, b, Rhs::kAsIs, c, threads);
  } else {
    (void)threads;
    c.noalias() = a.transpose() * b;
  }
}

// The attention kernels' view of query head columns [q_col, q_col + hs) of a tape.
template <typename S>
kernels::AttentionHead kernel_head(const BlockTape<S>& tp, Index q_col, int hs, Index stride,
                                   const Mat<S>& kt, const Mat<S>& vt) {
  kernels::AttentionHead a;
  if constexpr (std::is_same_v<S, float>) {
    a.tokens = tp.q.rows();
    a.head_size = hs;
    a.stride = stride;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hs));
    a.q = tp.q.data() + q_col;
    a.ldq = tp.q.cols();
    a.kt = kt.data();
    a.vt = vt.data();
  }
  return a;
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
                   const BlockLinearFn<S>& apply, BlockTape<S>* tape, int threads) {
  const Index T = x.rows();
  if (T == 0 || T > c.seq_len || x.cols() != c.dim)
    throw InvalidArgument(fmt::format("block input is {}×{}, expected 1..{} tokens × {}", T,
                                      x.cols(), c.seq_len, c.dim));
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const S inv_sqrt_hs = S(1) / std::sqrt(static_cast<S>(hs));
  auto linear = [&](BlockLinear which, const Mat<S>& in, Mat<S>& out) {
    if (apply) return apply(which, in, out);
    product(in, weight(p, which), Rhs::kTransposed, out, threads);
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
  const Index ld = attention_stride(T);
  if (tape)
    for (auto& probs : tp.probs) probs.resize(T, ld);
  const int kv_parts = std::clamp(threads, 1, c.n_kv_heads);
#pragma omp parallel for schedule(static) num_threads(kv_parts) if (kv_parts > 1)
  for (int kvh = 0; kvh < c.n_kv_heads; ++kvh) {
    Mat<S> kt, vt;
    Vec<S> row_probs(ld);  // without a tape only the current query row's weights are kept
    transpose_head(tp.k, kvh * hs, hs, ld, kt);
    transpose_head(tp.v, kvh * hs, hs, ld, vt);
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
      S* probs = tape ? tp.probs[h].data() : row_probs.data();
      const Index probs_ld = tape ? ld : 0;
      if constexpr (std::is_same_v<S, float>) {
        kernels::AttentionForwardArgs a;
        static_cast<kernels::AttentionHead&>(a) = kernel_head(tp, h * hs, hs, ld, kt, vt);
        a.probs = probs;
        a.probs_ld = probs_ld;
        a.out = tp.att.data() + h * hs;
        a.ldo = tp.att.cols();
        kernels::attention_forward(a);
      } else {
        attend_head(tp.q, h * hs, kt, vt, inv_sqrt_hs, probs, probs_ld, tp.att);
      }
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
                    std::array<Mat<S>, kLinearsPerBlock>& dw, Mat<S>* dx_out, int threads) {
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
  product_at(dy, tp.act, dw[idx(BlockLinear::kW2)], threads);
  Mat<S> dact;
  product(dy, weight(p, BlockLinear::kW2), Rhs::kAsIs, dact, threads);
  Mat<S> dgate(T, c.hidden_dim), dup(T, c.hidden_dim);
  {
    const auto a = tp.gate.array();
    const auto sig = (S(1) / (S(1) + (-a).exp())).eval();
    dup.array() = dact.array() * a * sig;
    dgate.array() = dact.array() * tp.up.array() * sig * (S(1) + a * (S(1) - sig));
  }
  product_at(dgate, tp.u_mid, dw[idx(BlockLinear::kW1)], threads);
  product_at(dup, tp.u_mid, dw[idx(BlockLinear::kW3)], threads);
  Mat<S> du_mid;
  product(dgate, weight(p, BlockLinear::kW1), Rhs::kAsIs, du_mid, threads);
  product(dup, weight(p, BlockLinear::kW3), Rhs::kAsIs, du_mid, threads, true);
  rms_norm_backward(tp.x_mid, *p.rms_ffn, tp.inv_rms_mid, du_mid, dx_mid);
  // Attention: x' = x + att·Woᵀ.
  product_at(dx_mid, tp.att, dw[idx(BlockLinear::kO)], threads);
  Mat<S> datt;
  product(dx_mid, weight(p, BlockLinear::kO), Rhs::kAsIs, datt, threads);
  Mat<S> dq(T, c.dim), dk(T, c.kv_dim()), dv(T, c.kv_dim());
  const Index ld = attention_stride(T);
  const int kv_parts = std::clamp(threads, 1, c.n_kv_heads);
#pragma omp parallel for schedule(static) num_threads(kv_parts) if (kv_parts > 1)
  for (int kvh = 0; kvh < c.n_kv_heads; ++kvh) {
    Mat<S> kt, vt, dkt, dvt;
    std::vector<S> scratch(std::is_same_v<S, float> ? T * ld : 0);
    transpose_head(tp.k, kvh * hs, hs, ld, kt);
    transpose_head(tp.v, kvh * hs, hs, ld, vt);
    dkt.setZero(hs, ld);
    dvt.setZero(hs, ld);
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
      if constexpr (std::is_same_v<S, float>) {
        kernels::AttentionBackwardArgs a;
        static_cast<kernels::AttentionHead&>(a) = kernel_head(tp, h * hs, hs, ld, kt, vt);
        a.probs = tp.probs[h].data();
        a.datt = datt.data() + h * hs;
        a.ldd = datt.cols();
        a.dq = dq.data() + h * hs;
        a.lddq = dq.cols();
        a.dkt = dkt.data();
        a.dvt = dvt.data();
        a.scratch = scratch.data();
        kernels::attention_backward(a);
      } else {
        attend_head_backward(tp.q, h * hs, kt, vt, tp.probs[h], datt, inv_sqrt_hs, dq, dkt, dvt);
      }
    }
    dk.block(0, kvh * hs, T, hs) = dkt.leftCols(T).transpose();
    dv.block(0, kvh * hs, T, hs) = dvt.leftCols(T).transpose();
  }
  rope_rotate(rope, hs, dq, -1);
  rope_rotate(rope, hs, dk, -1);
  product_at(dq, tp.u, dw[idx(BlockLinear::kQ)], threads);
  product_at(dk, tp.u, dw[idx(BlockLinear::kK)], threads);
  product_at(dv, tp.u, dw[idx(BlockLinear::kV)], threads);
  if (dx_out) {
    Mat<S> du;
    product(dq, weight(p, BlockLinear::kQ), Rhs::kAsIs, du, threads);
    product(dk, weight(p, BlockLinear::kK), Rhs::kAsIs, du, threads, true);
    product(dv, weight(p, BlockLinear::kV), Rhs::kAsIs, du, threads, true);
    *dx_out = dx_mid;
    rms_norm_backward(tp.x, *p.rms_att, tp.inv_rms, du, *dx_out);
  }
}

#define QROUND_INSTANTIATE_BLOCK(S)                                                            \
  template void rms_norm<S>(const Mat<S>&, const Vec<S>&, float, Mat<S>&, Vec<S>*);            \
  template bool block_forward<S>(const LlamaConfig&, const RopeTable&, const BlockParams<S>&,  \
                                 Mat<S>&, const BlockLinearFn<S>&, BlockTape<S>*, int);        \
  template void block_backward<S>(const LlamaConfig&, const RopeTable&, const BlockParams<S>&, \
                                  const BlockTape<S>&, const Mat<S>&,                          \
                                  std::array<Mat<S>, kLinearsPerBlock>&, Mat<S>*, int);
QROUND_INSTANTIATE_BLOCK(float)
QROUND_INSTANTIATE_BLOCK(double)
#undef QROUND_INSTANTIATE_BLOCK

}  // namespace qround::model
