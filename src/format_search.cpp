// Scale search for ggml storage formats (see scale_search.hpp): chooses every stored parameter of
// every block to minimise Σ u_i (w_i − ŵ_i)² of nearest rounding, u = diag(H) (kHessian) or 1.
//
// The ideas are llama.cpp's (ggml-quants.c: make_qx_quants' scan of candidate inverse scales
// around the top code, make_qkx3_quants' weighted least-squares (s, b) refit for the codes of each
// candidate, make_qp_quants' quantization of the sub-block scales with weights), then extended:
// both signs for symmetric formats, every candidate scored on its final stored values (fp16 d, m,
// dmin; integer sc, m) with nearest codes, and for K-quants a joint choice of the super-block
// d / dmin and the sub-block integers (coordinate descent over sc ± 1, m ± 1, a least-squares refit
// of (d, dmin) for the fixed codes and a few neighbouring fp16 values).
//
// Measured on this machine (AMD EPYC, 2 cores, quiet), against llama.cpp = ggml_quantize_chunk of
// the prebuilt libggml-base.so v0.4.0 with imatrix = importance, dequantized by its to_float;
// Σ_j imp_j (w − ŵ)² summed over tensors, ours / llama.cpp (measured 2026-12-02):
//   real layers (12 of stories260K, imp = diag XᵀX; K-quants: 4 rows of 64 side by side = 256)
//     q8_0 0.758  q4_0 0.979  q5_0 0.964  q4_1 0.975  q5_1 0.978
//     q2_k 0.937  q3_k 0.981  q4_k 0.956  q5_k 0.929  q6_k 0.934   (no layer worse, any type)
//   synthetic 256×4096 (Gaussian, outlier columns, log-normal importance)
//     q8_0 0.877  q4_0 0.991  q5_0 0.980  q4_1 0.989  q5_1 0.981
//     q2_k 0.834  q3_k 0.989  q4_k 0.914  q5_k 0.772  q6_k 0.819
//   speed, q4_k 4096×4096 with importance: llama.cpp 3.37 s (its quantizer is single-threaded),
//     this search 1.13 s on 2 threads (2.43 s on 1).
//
// iq4_nl (levels d·kvalues_iq4nl[n], a table; search_table_block): the candidates contain
// llama.cpp's own choice (quantize_row_iq4_nl_impl, ntry = 7) under our weights and under its
// native ones, so per block the stored d is never worse on Σ u (w − ŵ)² than llama.cpp's with the
// same u. Measured 2026-12-02, ours / llama.cpp on Σ imp (w − ŵ)², imp = diag XᵀX:
//   against a plain reimplementation in tests/test_format_search.cpp: 12 real layers mean 0.948,
//     worst 0.966; synthetic 48×1024 (3 seeds) 0.893 / 0.918 / 0.901
//   against ggml_quantize_chunk of the prebuilt engine (scripts/interop.sh, imatrix = diag XᵀX):
//     synthetic 32×4096 0.922, layers.0.wq 0.948, layers.1.w1 0.960
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "qround/scale_search.hpp"

namespace qround {
namespace {

constexpr float kRound = 12582912.0f;  // 1.5·2^23: (t + kRound) − kRound rounds |t| < 2^22 to even
constexpr float kTiny = 6.103515625e-05f;  // 2^−14, the smallest normal fp16: scale of empty blocks
constexpr int kQK32 = 32;                  // inputs of a 32-block

// ---- stored values ---------------------------------------------------------------------------

// The fp16 value nearest to x, finite (clamped to ±65504) and nonzero (±2^−24 at the least).
float fp16_scale(float x) {
  float r = round_to_fp16(x);
  if (std::isinf(r)) r = std::copysign(kFp16Max, x);
  if (r == 0.0f) r = std::copysign(5.9604644775390625e-8f, x);
  return r;
}
// The fp16 value nearest to x, finite (an offset or dmin may be 0).
float fp16_value(float x) {
  const float r = round_to_fp16(x);
  return std::isinf(r) ? std::copysign(kFp16Max, x) : r;
}
// The fp16 value `k` representable steps away from v (an fp16 value); v itself when that leaves
// the finite range.
float fp16_step(float v, int k) {
  const std::uint16_t h = fp32_to_fp16(v);
  int o = (h & 0x8000u) ? -static_cast<int>(h & 0x7fffu) : static_cast<int>(h);
  o += k;
  const int mag = o < 0 ? -o : o;
  if (mag >= 0x7c00) return v;
  return fp16_to_fp32(static_cast<std::uint16_t>(o < 0 ? (0x8000 | mag) : mag));
}

int round_int(float x) { return static_cast<int>(std::lrint(x)); }
int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---- the inner loops ---------------------------------------------------------------------------

// Σ u (w − ŵ)² over n values, ŵ the nearest of the levels s·q + b, q ∈ [lo, hi] (s, b as ggml
// computes them, so this is the exact error up to the rare code a division would round otherwise).
float nearest_error(const float* w, const float* u, int n, float s, float b, float lo, float hi) {
  const float inv = 1.0f / s;
  float e = 0.0f;
#pragma omp simd reduction(+ : e)
  for (int i = 0; i < n; ++i) {
    float t = (w[i] - b) * inv;
    t = t < lo ? lo : (t > hi ? hi : t);
    const float q = (t + kRound) - kRound;
    const float d = w[i] - (s * q + b);
    e += u[i] * d * d;
  }
  return e;
}

// Weighted sums of the codes q = clamp(round((w − b)·inv), lo, hi) of n values.
struct CodeSums {
  float u = 0, uq = 0, uqq = 0, uwq = 0, uw = 0;
};
CodeSums code_sums(const float* w, const float* u, int n, float inv, float b, float lo, float hi) {
  float su = 0, suq = 0, suqq = 0, suwq = 0, suw = 0;
#pragma omp simd reduction(+ : su, suq, suqq, suwq, suw)
  for (int i = 0; i < n; ++i) {
    float t = (w[i] - b) * inv;
    t = t < lo ? lo : (t > hi ? hi : t);
    const float q = (t + kRound) - kRound;
    su += u[i];
    suq += u[i] * q;
    suqq += u[i] * q * q;
    suwq += u[i] * w[i] * q;
    suw += u[i] * w[i];
  }
  return {su, suq, suqq, suwq, suw};
}

// Weighted least squares (s, b) for fixed codes; false when the codes do not determine both.
bool affine_fit(const CodeSums& c, float& s, float& b) {
  const double det = static_cast<double>(c.u) * c.uqq - static_cast<double>(c.uq) * c.uq;
  if (!(det > 1e-30 * static_cast<double>(c.u) * c.uqq)) return false;
  s = static_cast<float>((static_cast<double>(c.u) * c.uwq - static_cast<double>(c.uw) * c.uq) /
                         det);
  b = static_cast<float>((static_cast<double>(c.uqq) * c.uw - static_cast<double>(c.uq) * c.uwq) /
                         det);
  return std::isfinite(s) && std::isfinite(b) && s != 0.0f;
}

struct Range {
  float lo, hi, vmax, amax;  // min, max, the value of largest magnitude and that magnitude
};
Range range_of(const float* w, int n) {
  Range r{w[0], w[0], w[0], std::fabs(w[0])};
  for (int i = 1; i < n; ++i) {
    r.lo = std::min(r.lo, w[i]);
    r.hi = std::max(r.hi, w[i]);
    if (std::fabs(w[i]) > r.amax) {
      r.amax = std::fabs(w[i]);
      r.vmax = w[i];
    }
  }
  return r;
}

// ---- 32-blocks
// -----------------------------------------------------------------------------------

// q8_0 / q4_0 / q5_0: the fp16 d minimising the error of one block; both signs of d are scanned
// (ggml's q4_0 maps the largest magnitude to −8), each candidate also refit by least squares.
float search_symmetric_block(const float* w, const float* u, int n, int qmin, int qmax) {
  const Range r = range_of(w, n);
  if (r.amax == 0.0f) return kTiny;
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  float best_d = fp16_scale(r.vmax / lo);
  float best_e = nearest_error(w, u, n, best_d, 0.0f, lo, hi);
  auto consider = [&](float d) {
    d = fp16_scale(d);
    if (d == best_d) return;
    const float e = nearest_error(w, u, n, d, 0.0f, lo, hi);
    if (e < best_e) best_e = e, best_d = d;
  };
  auto refit = [&](float d) {
    const CodeSums c = code_sums(w, u, n, 1.0f / d, 0.0f, lo, hi);
    if (c.uqq > 0.0f) consider(c.uwq / c.uqq);
  };
  const int steps = qmax >= 64 ? 4 : 9;
  for (const float top : {lo, hi}) {
    for (int k = -steps; k <= steps; ++k) {
      const float d = r.vmax / (top + 0.1f * static_cast<float>(k));
      consider(d);
      refit(d);
    }
  }
  for (int it = 0; it < 2; ++it) refit(best_d);
  for (int pass = 0; pass < 2; ++pass) {
    const float center = best_d;
    for (const int k : {-2, -1, 1, 2}) consider(fp16_step(center, k));
    if (best_d == center) break;
  }
  return best_d;
}

// q4_1 / q5_1: fp16 d and m of ŵ = d·n + m, n ∈ [0, nmax].
void search_affine_block(const float* w, const float* u, int n, int nmax, float& d_out,
                         float& m_out) {
  const Range r = range_of(w, n);
  const float hi = static_cast<float>(nmax);
  if (r.hi == r.lo) {
    m_out = fp16_value(r.lo);
    d_out = fp16_scale(std::max(std::fabs(r.lo) * 1e-3f, kTiny));
    return;
  }
  float best_d = fp16_scale((r.hi - r.lo) / hi), best_m = fp16_value(r.lo);
  float best_e = nearest_error(w, u, n, best_d, best_m, 0.0f, hi);
  auto consider = [&](float d, float m) {
    d = fp16_scale(d);
    m = fp16_value(m);
    if (d == best_d && m == best_m) return;
    const float e = nearest_error(w, u, n, d, m, 0.0f, hi);
    if (e < best_e) best_e = e, best_d = d, best_m = m;
  };
  auto refit = [&](float inv, float b) {
    float s, m;
    if (affine_fit(code_sums(w, u, n, inv, b, 0.0f, hi), s, m)) consider(s, m);
  };
  for (int k = -10; k <= 10; ++k) {
    const float inv = (hi + 0.1f * static_cast<float>(k)) / (r.hi - r.lo);
    refit(inv, r.lo);
  }
  for (int it = 0; it < 2; ++it) refit(1.0f / best_d, best_m);
  for (int pass = 0; pass < 3; ++pass) {
    const float cd = best_d, cm = best_m;
    for (int i = -1; i <= 1; ++i)
      for (int j = -1; j <= 1; ++j)
        if (i != 0 || j != 0) consider(fp16_step(cd, i), fp16_step(cm, j));
    if (best_d == cd && best_m == cm) break;
  }
  d_out = best_d;
  m_out = best_m;
}

// ---- table formats (iq4_nl) ----------------------------------------------------------------

// ŵ = d·T[k] with T ascending (kvalues_iq4nl). The nearest entry of t = w/d in units of d: the
// number of midpoints between neighbouring entries that t exceeds (a tie keeps the smaller k).
struct Table {
  const std::int8_t* v;
  float value[16];
  float mid[15];
  explicit Table(const std::int8_t* levels) : v(levels) {
    for (int k = 0; k < 16; ++k) value[k] = static_cast<float>(levels[k]);
    for (int k = 0; k < 15; ++k) mid[k] = 0.5f * (value[k] + value[k + 1]);  // exact halves
  }
  int nearest(float t) const {
    int k = 0;
    for (int j = 0; j < 15; ++j) k += t > mid[j] ? 1 : 0;
    return k;
  }
};

// Σ u (w − d·T[k])² with k the nearest entry of w/d; d = 0 gives every level 0.
float table_error(const Table& tab, const float* w, const float* u, int n, float d) {
  float e = 0.0f;
  if (d == 0.0f) {
    for (int i = 0; i < n; ++i) e += u[i] * w[i] * w[i];
    return e;
  }
  const float inv = 1.0f / d;
  for (int i = 0; i < n; ++i) {
    const float r = w[i] - d * tab.value[tab.nearest(w[i] * inv)];
    e += u[i] * r * r;
  }
  return e;
}

// For the entries k nearest to w·inv: Σ u w T[k] and Σ u T[k]², the weighted least-squares d of
// those codes being their ratio.
void table_sums(const Table& tab, const float* w, const float* u, int n, float inv, float& sqx,
                float& sqq) {
  sqx = 0.0f, sqq = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float q = tab.value[tab.nearest(w[i] * inv)];
    sqx += u[i] * q * w[i];
    sqq += u[i] * q * q;
  }
}

// llama.cpp's own choice of d for one block (quantize_row_iq4_nl_impl with ntry = 7, as
// quantize_iq4_nl calls it): d0 = max/(−T[0]) with `max` the value of largest magnitude, its
// codes' least-squares d, then the inverse scales (itry + T[0])/max, itry = −7..7, each kept when
// its least-squares fit explains more (sumqx²/sumq2) than the best so far. Written from that
// description; `wt` are the weights llama.cpp's objective uses. Returns the unrounded d.
float llama_table_d(const Table& tab, const float* w, const float* wt, int n, float vmax) {
  float sqx, sqq;
  table_sums(tab, w, wt, n, 1.0f / (-vmax / tab.value[0]), sqx, sqq);
  if (!(sqq > 0.0f)) return -vmax / tab.value[0];
  float d = sqx / sqq, best = d * sqx;
  for (int itry = -7; itry <= 7; ++itry) {
    table_sums(tab, w, wt, n, (static_cast<float>(itry) + tab.value[0]) / vmax, sqx, sqq);
    if (sqq > 0.0f && sqx * sqx > best * sqq) d = sqx / sqq, best = d * sqx;
  }
  return d;
}

// iq4_nl: the fp16 d minimising Σ u (w − d·T[k])² with nearest codes. Candidates: llama.cpp's own
// choice (above) under our weights u and under its native weights (x², or importance ·
// sqrt(σ² + x²) with σ² = 2·Σx²/n when `weighted`), then a wider scan that puts the largest
// magnitude near either end of the table (both signs of d), every candidate also refit by least
// squares, all scored on their stored fp16 value; finally refits and fp16 neighbours of the best.
// An all-zero block stores d = 0, as ggml does.
float search_table_block(const Table& tab, const float* w, const float* u, int n, bool weighted) {
  const Range r = range_of(w, n);
  if (r.amax == 0.0f) return 0.0f;
  float best_d = fp16_scale(r.vmax / tab.value[0]);
  float best_e = table_error(tab, w, u, n, best_d);
  auto consider = [&](float d) {
    if (!std::isfinite(d) || d == 0.0f) return;
    d = fp16_scale(d);
    if (d == best_d) return;
    const float e = table_error(tab, w, u, n, d);
    if (e < best_e) best_e = e, best_d = d;
  };
  auto refit = [&](float inv) {
    float sqx, sqq;
    table_sums(tab, w, u, n, inv, sqx, sqq);
    if (sqq > 0.0f) consider(sqx / sqq);
  };
  consider(llama_table_d(tab, w, u, n, r.vmax));
  float native[kQK32];
  float sigma2 = 0.0f;
  for (int i = 0; i < n; ++i) sigma2 += w[i] * w[i];
  sigma2 *= 2.0f / static_cast<float>(n);
  for (int i = 0; i < n; ++i)
    native[i] = weighted ? u[i] * std::sqrt(sigma2 + w[i] * w[i]) : w[i] * w[i];
  consider(llama_table_d(tab, w, native, n, r.vmax));
  for (const float top : {tab.value[0], tab.value[15]}) {
    for (int k = -10; k <= 10; ++k) {
      const float t = top + (top < 0 ? 1.0f : -1.0f) * static_cast<float>(k);
      const float inv = t / r.vmax;
      consider(1.0f / inv);
      refit(inv);
    }
  }
  for (int it = 0; it < 2; ++it) refit(1.0f / best_d);
  for (int pass = 0; pass < 2; ++pass) {
    const float center = best_d;
    for (const int k : {-2, -1, 1, 2}) consider(fp16_step(center, k));
    if (best_d == center) break;
  }
  return best_d;
}

// ---- K-quants
// ------------------------------------------------------------------------------------

struct KShape {
  int sub;           // inputs per sub-block
  int nsub;          // sub-blocks per super-block
  int qmin, qmax;    // codes
  int sc_lo, sc_hi;  // sub-block scale as the level uses it (q3_k: sc − 32)
  bool offset;       // q2_k / q4_k / q5_k: ŵ = d·sc·n − dmin·m
};

KShape kshape(GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  KShape k{t.sub_block, t.block / t.sub_block,   t.qmin,      t.qmax,
           1,           (1 << t.scale_bits) - 1, t.has_offset};
  if (type == GgmlType::kQ3_K) k.sc_lo = -32, k.sc_hi = 31;
  if (type == GgmlType::kQ6_K) k.sc_lo = -128, k.sc_hi = 127;
  return k;
}

// The best unconstrained (float) scale and offset of one sub-block, and the weights of its error's
// sensitivity to them (Σ u q², Σ u) for the super-block fits.
struct SubFit {
  float s = 0, mb = 0;  // ŵ ≈ s·q − mb (mb ≥ 0; 0 for symmetric formats)
  float ws = 0, wm = 0;
};

SubFit fit_sub_affine(const float* w, const float* u, int n, int nmax) {
  const Range r = range_of(w, n);
  const float lo = std::min(r.lo, 0.0f);  // ŵ at code 0 is −dmin·m ≤ 0
  const float hi = static_cast<float>(nmax);
  SubFit f;
  if (r.hi <= lo) {  // constant block ≤ 0
    f.mb = -lo;
    for (int i = 0; i < n; ++i) f.wm += u[i];
    return f;
  }
  double best = std::numeric_limits<double>::infinity();
  for (int k = -9; k <= 9; ++k) {
    const float inv = (hi + 0.1f * static_cast<float>(k)) / (r.hi - lo);
    const CodeSums c = code_sums(w, u, n, inv, lo, 0.0f, hi);
    float s, b;
    if (!affine_fit(c, s, b) || b > 0.0f) {
      if (!(c.uqq > 0.0f)) continue;
      b = 0.0f;
      s = c.uwq / c.uqq;
    }
    if (!(s > 0.0f)) continue;
    // Error of the fit for these codes, from the sums (Σ u w² is common to all candidates).
    const double e = -2.0 * s * c.uwq - 2.0 * b * c.uw + static_cast<double>(s) * s * c.uqq +
                     2.0 * s * b * c.uq + static_cast<double>(b) * b * c.u;
    if (e < best) {
      best = e;
      f.s = s;
      f.mb = -b;
      f.ws = c.uqq;
      f.wm = c.u;
    }
  }
  if (!(best < std::numeric_limits<double>::infinity())) {  // zero importance: min-max
    f.s = (r.hi - lo) / hi;
    f.mb = -lo;
    f.ws = f.wm = 1.0f;
  }
  return f;
}

SubFit fit_sub_symmetric(const float* w, const float* u, int n, int qmin, int qmax) {
  const Range r = range_of(w, n);
  SubFit f;
  if (r.amax == 0.0f) return f;
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  double best = std::numeric_limits<double>::infinity();
  for (const float top : {lo, hi})
    for (int k = -6; k <= 6; ++k) {
      const float s0 = r.vmax / (top + 0.1f * static_cast<float>(k));
      const CodeSums c = code_sums(w, u, n, 1.0f / s0, 0.0f, lo, hi);
      if (!(c.uqq > 0.0f)) continue;
      const double e = -static_cast<double>(c.uwq) * c.uwq / c.uqq;
      if (e < best) {
        best = e;
        f.s = c.uwq / c.uqq;
        f.ws = c.uqq;
      }
    }
  if (!(best < std::numeric_limits<double>::infinity()) || f.s == 0.0f) {
    f.s = r.vmax / lo;
    f.ws = 1.0f;
  }
  return f;
}

// Integer multiple of d nearest to x within [lo, hi], never 0 when `nonzero` (a zero scale would
// collapse the sub-block's levels; ±1 contains those levels and more).
int lattice_index(float x, float d, int lo, int hi, bool nonzero) {
  int k = clamp_int(round_int(x / d), lo, hi);
  if (nonzero && k == 0) k = (x / d < 0.0f && lo < 0) ? -1 : 1;
  return k;
}

// Candidate lattice steps d for the values x_j (weights a_j), by make_qp_quants' idea: the largest
// magnitude on (or near) the top index, each candidate also refit by weighted least squares; the
// `keep` best by Σ a (x − d·k)², as distinct fp16 values.
void lattice_candidates(const float* x, const float* a, int n, int lo, int hi, bool nonzero,
                        int keep, std::vector<float>& out) {
  out.clear();
  float vmax = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > std::fabs(vmax)) vmax = x[j];
  if (vmax == 0.0f) {
    out.push_back(kTiny);
    return;
  }
  std::array<std::pair<double, float>, 48> cand;
  int nc = 0;
  auto score = [&](float d) {
    d = fp16_scale(d);
    for (int i = 0; i < nc; ++i)
      if (cand[i].second == d) return;
    double e = 0.0, sxk = 0.0, skk = 0.0;
    for (int j = 0; j < n; ++j) {
      const int k = lattice_index(x[j], d, lo, hi, nonzero);
      const double r = x[j] - static_cast<double>(d) * k;
      e += a[j] * r * r;
      sxk += static_cast<double>(a[j]) * x[j] * k;
      skk += static_cast<double>(a[j]) * k * k;
    }
    if (nc < static_cast<int>(cand.size())) cand[nc++] = {e, d};
    if (skk > 0.0) {
      const float d2 = fp16_scale(static_cast<float>(sxk / skk));
      for (int i = 0; i < nc; ++i)
        if (cand[i].second == d2) return;
      double e2 = 0.0;
      for (int j = 0; j < n; ++j) {
        const double r = x[j] - static_cast<double>(d2) * lattice_index(x[j], d2, lo, hi, nonzero);
        e2 += a[j] * r * r;
      }
      if (nc < static_cast<int>(cand.size())) cand[nc++] = {e2, d2};
    }
  };
  std::vector<int> tops{hi};
  if (lo < 0) tops.push_back(lo);
  for (const int top : tops)
    for (int k = -4; k <= 4; ++k) score(vmax / (static_cast<float>(top) + 0.1f * k));
  std::stable_sort(cand.begin(), cand.begin() + nc,
                   [](const auto& p, const auto& q) { return p.first < q.first; });
  for (int i = 0; i < nc && static_cast<int>(out.size()) < keep; ++i) out.push_back(cand[i].second);
}

// One super-block's stored parameters while searching.
struct KParams {
  float d = 0, dmin = 0;
  std::array<int, 16> sc{}, m{};
  std::array<float, 16> err{};
  float total = 0;
};

class SuperBlockSearch {
 public:
  SuperBlockSearch(const KShape& k, const float* w, const float* u) : k_(k), w_(w), u_(u) {}

  void run(KParams& best) {
    std::array<SubFit, 16> fits;
    std::array<float, 16> s, mb, ws, wm;
    for (int j = 0; j < k_.nsub; ++j) {
      fits[j] = k_.offset
                    ? fit_sub_affine(w_ + j * k_.sub, u_ + j * k_.sub, k_.sub, k_.qmax)
                    : fit_sub_symmetric(w_ + j * k_.sub, u_ + j * k_.sub, k_.sub, k_.qmin, k_.qmax);
      s[j] = fits[j].s, mb[j] = fits[j].mb, ws[j] = fits[j].ws, wm[j] = fits[j].wm;
    }
    std::vector<float> ds, dms{0.0f};
    lattice_candidates(s.data(), ws.data(), k_.nsub, k_.sc_lo, k_.sc_hi, true, 3, ds);
    if (k_.offset) {
      float mmax = 0.0f;
      for (int j = 0; j < k_.nsub; ++j) mmax = std::max(mmax, mb[j]);
      if (mmax > 0.0f)
        lattice_candidates(mb.data(), wm.data(), k_.nsub, 0, k_.sc_hi, false, 2, dms);
    }
    best.total = std::numeric_limits<float>::infinity();
    for (const float d : ds)
      for (const float dmin : dms) {
        KParams p;
        p.d = d;
        p.dmin = dmin;
        for (int j = 0; j < k_.nsub; ++j) {
          p.sc[j] = lattice_index(s[j], d, k_.sc_lo, k_.sc_hi, true);
          p.m[j] = k_.offset && dmin != 0.0f ? lattice_index(mb[j], dmin, 0, k_.sc_hi, false) : 0;
        }
        evaluate(p);
        if (p.total < best.total) best = p;
      }
    descend(best);
    for (int it = 0; it < 2; ++it) {
      if (!refit_super(best)) break;
      descend(best);
    }
  }

 private:
  float sub_error(int j, float d, float dmin, int sc, int m) const {
    const float sl = d * static_cast<float>(sc);  // exact, as ggml computes it
    const float b = -(dmin * static_cast<float>(m));
    return nearest_error(w_ + j * k_.sub, u_ + j * k_.sub, k_.sub, sl, b,
                         static_cast<float>(k_.qmin), static_cast<float>(k_.qmax));
  }
  void evaluate(KParams& p) const {
    p.total = 0.0f;
    for (int j = 0; j < k_.nsub; ++j) {
      p.err[j] = sub_error(j, p.d, p.dmin, p.sc[j], p.m[j]);
      p.total += p.err[j];
    }
  }
  // Coordinate descent over each sub-block's integers (sub-blocks are independent for fixed d).
  void descend(KParams& p) const {
    static constexpr int kMoves[6][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {1, 1}, {-1, -1}};
    const int moves = k_.offset && p.dmin != 0.0f ? 6 : 2;
    for (int j = 0; j < k_.nsub; ++j) {
      for (int it = 0; it < 4; ++it) {
        int bsc = p.sc[j], bm = p.m[j];
        for (int mv = 0; mv < moves; ++mv) {
          const int sc = p.sc[j] + kMoves[mv][0], m = p.m[j] + kMoves[mv][1];
          if (sc < k_.sc_lo || sc > k_.sc_hi || sc == 0 || m < 0 || m > k_.sc_hi) continue;
          const float e = sub_error(j, p.d, p.dmin, sc, m);
          if (e < p.err[j]) p.err[j] = e, bsc = sc, bm = m;
        }
        if (bsc == p.sc[j] && bm == p.m[j]) break;
        p.sc[j] = bsc, p.m[j] = bm;
      }
    }
    p.total = 0.0f;
    for (int j = 0; j < k_.nsub; ++j) p.total += p.err[j];
  }
  // Least-squares (d, dmin) for the current codes and integers, then its neighbouring fp16
  // values; true when p improved.
  bool refit_super(KParams& p) const {
    double xx = 0, xy = 0, yy = 0, wx = 0, wy = 0;
    const float lo = static_cast<float>(k_.qmin), hi = static_cast<float>(k_.qmax);
    for (int j = 0; j < k_.nsub; ++j) {
      const float sl = p.d * static_cast<float>(p.sc[j]);
      const float b = -(p.dmin * static_cast<float>(p.m[j]));
      const float inv = 1.0f / sl;
      const float* w = w_ + j * k_.sub;
      const float* u = u_ + j * k_.sub;
      double sqq = 0, sq = 0, su = 0, swq = 0, sw = 0;
      for (int i = 0; i < k_.sub; ++i) {
        float t = (w[i] - b) * inv;
        t = t < lo ? lo : (t > hi ? hi : t);
        const double q = (t + kRound) - kRound;
        sqq += u[i] * q * q, sq += u[i] * q, su += u[i], swq += u[i] * w[i] * q, sw += u[i] * w[i];
      }
      const double sc = p.sc[j], m = -static_cast<double>(p.m[j]);  // ŵ = d·(sc·q) + dmin·(−m)
      xx += sc * sc * sqq, xy += sc * m * sq, yy += m * m * su, wx += sc * swq, wy += m * sw;
    }
    double d = p.d, dmin = p.dmin;
    const double det = xx * yy - xy * xy;
    if (k_.offset && yy > 0.0 && det > 1e-12 * xx * yy) {
      d = (wx * yy - wy * xy) / det;
      dmin = (xx * wy - xy * wx) / det;
    } else if (xx > 0.0) {
      d = (wx - dmin * xy) / xx;
    }
    if (!std::isfinite(d) || !std::isfinite(dmin) || d == 0.0) return false;
    const float d0 = fp16_scale(static_cast<float>(d));
    const float m0 = k_.offset ? std::max(0.0f, fp16_value(static_cast<float>(dmin))) : 0.0f;
    const float start = p.total;
    const int mr = k_.offset && m0 != 0.0f ? 1 : 0;
    for (int i = -1; i <= 1; ++i)
      for (int jm = -mr; jm <= mr; ++jm) {
        KParams q = p;
        q.d = fp16_step(d0, i);
        q.dmin = mr ? fp16_step(m0, jm) : (k_.offset ? std::max(m0, 0.0f) : 0.0f);
        if (q.dmin < 0.0f) continue;
        if (q.d == p.d && q.dmin == p.dmin) continue;
        evaluate(q);
        if (q.total < p.total) p = q;
      }
    return p.total < start;
  }

  const KShape& k_;
  const float* w_;
  const float* u_;
};

// ---- input checks ------------------------------------------------------------------------------

// The scale a plain min-max fit of the block at (row, first input c0) would store; refused when it
// is beyond fp16 (the file would hold an Inf).
void check_block_range(const float* w, Index row, Index c0, const GgmlTypeTraits& t) {
  double need = 0.0;
  const int subs = t.block / t.sub_block;
  // Table formats: the largest |level| is 127·|d| (kvalues_iq4nl[0] = −127).
  const double qspan = t.levels ? 127.0 : t.has_offset ? t.qmax : std::max(-t.qmin, t.qmax);
  const double smax = !t.super_block ? 1.0
                                     : (t.type == GgmlType::kQ3_K   ? 32.0
                                        : t.type == GgmlType::kQ6_K ? 128.0
                                                                    : (1 << t.scale_bits) - 1);
  double lo_all = 0.0, hi_all = 0.0;
  for (int j = 0; j < subs; ++j) {
    double lo = w[j * t.sub_block], hi = lo, amax = 0.0;
    for (int i = 0; i < t.sub_block; ++i) {
      const double v = w[j * t.sub_block + i];
      lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::fabs(v));
    }
    lo_all = std::min(lo_all, lo), hi_all = std::max(hi_all, hi);
    if (t.has_offset) {
      need = std::max(need, (hi - std::min(lo, t.super_block ? 0.0 : lo)) / qspan / smax);
      need = std::max(need, std::fabs(std::min(lo, t.super_block ? 0.0 : lo)) / smax);
    } else {
      need = std::max(need, amax / qspan / smax);
    }
  }
  if (need > kFp16Max)
    throw InvalidArgument(fmt::format(
        "format {}: row {}, block of inputs {}..{} spans [{}, {}]: its scale {} would overflow "
        "fp16 (at most {})",
        t.name, row, c0, c0 + t.block - 1, lo_all, hi_all, need, kFp16Max));
}

}  // namespace

Grid make_format_grid(const MatrixFRef& w, const GridSpec& spec, const VectorD* importance) {
  spec.validate();
  if (!spec.format) throw InvalidArgument("make_format_grid: the grid spec names no format");
  const GgmlTypeTraits& t = ggml_traits(*spec.format);
  const Index rows = w.rows(), cols = w.cols();
  if (rows == 0 || cols == 0)
    throw InvalidArgument(
        fmt::format("cannot build a {} grid for an empty {}×{} matrix", t.name, rows, cols));
  if (cols % t.block != 0)
    throw InvalidArgument(
        fmt::format("format {} needs rows of a multiple of {} inputs: the {}×{} weights have {}",
                    t.name, t.block, rows, cols, cols));
  require_finite(w, "weight matrix");
  if (spec.search == ScaleSearch::kHessian) {
    if (importance == nullptr)
      throw InvalidArgument(
          fmt::format("the hessian scale search for format {} needs diag(H): "
                      "pass the importance vector (one value per input)",
                      t.name));
    if (importance->size() != cols)
      throw InvalidArgument(fmt::format("importance has {} entries, expected {} (one per input)",
                                        importance->size(), cols));
    for (Index j = 0; j < cols; ++j)
      if (!((*importance)[j] >= 0.0) || !std::isfinite((*importance)[j]))
        throw InvalidArgument(
            fmt::format("importance[{}] = {} must be finite and >= 0", j, (*importance)[j]));
  }
  // Contiguous copy (the search reads blocks as plain arrays) and the overflow check.
  const MatrixF wc = w;
  for (Index r = 0; r < rows; ++r)
    for (Index c0 = 0; c0 < cols; c0 += t.block)
      check_block_range(wc.data() + r * cols + c0, r, c0, t);

  // Weights of the objective, scaled to at most 1 (same minimiser, no float overflow).
  std::vector<float> u(static_cast<size_t>(cols), 1.0f);
  if (spec.search == ScaleSearch::kHessian) {
    const double top = importance->maxCoeff();
    if (top > 0.0)
      for (Index j = 0; j < cols; ++j) u[j] = static_cast<float>((*importance)[j] / top);
  }

  Grid grid;
  grid.format = *spec.format;
  grid.bits = t.bits;
  grid.symmetric = t.signed_codes();
  grid.restricted = false;
  grid.granularity = Granularity::kPerGroup;
  grid.group_size = t.sub_block;
  grid.rows = rows;
  grid.cols = cols;
  const Index groups = cols / t.sub_block, blocks = cols / t.block;
  grid.zeros = MatrixI32::Zero(rows, groups);
  FormatParams& p = grid.stored;
  p.d.resize(rows, blocks);
  if (t.has_offset) p.dmin.resize(rows, blocks);
  if (t.super_block) {
    p.sc.resize(rows, groups);
    if (t.has_offset) p.m.resize(rows, groups);
  }
  const KShape ks = t.super_block ? kshape(t.type) : KShape{};
  const Table table(t.levels ? t.levels : kIq4NlValues);
  const double work = static_cast<double>(rows) * static_cast<double>(cols);

#pragma omp parallel for schedule(dynamic, 4) if (work > 65536.0)
  for (Index r = 0; r < rows; ++r) {
    const float* wr = wc.data() + r * cols;
    for (Index b = 0; b < blocks; ++b) {
      const float* wb = wr + b * t.block;
      const float* ub = u.data() + b * t.block;
      if (!t.super_block) {
        if (t.levels) {
          p.d(r, b) =
              search_table_block(table, wb, ub, t.block, spec.search == ScaleSearch::kHessian);
        } else if (t.has_offset) {
          float d, m;
          search_affine_block(wb, ub, t.block, t.qmax, d, m);
          p.d(r, b) = d, p.dmin(r, b) = m;
        } else {
          p.d(r, b) = search_symmetric_block(wb, ub, t.block, t.qmin, t.qmax);
        }
        continue;
      }
      KParams best;
      SuperBlockSearch(ks, wb, ub).run(best);
      p.d(r, b) = best.d;
      if (t.has_offset) p.dmin(r, b) = best.dmin;
      for (int j = 0; j < ks.nsub; ++j) {
        const Index g = b * ks.nsub + j;
        p.sc(r, g) = t.type == GgmlType::kQ3_K ? best.sc[j] + 32 : best.sc[j];
        if (t.has_offset) p.m(r, g) = best.m[j];
      }
    }
  }
  derive_format_levels(grid);
  return grid;
}

}  // namespace qround
