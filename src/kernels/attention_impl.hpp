// The attention kernels' bodies, compiled once per ISA (attention.cpp, avx2/attention_avx2.cpp,
// avx512vnni/attention_avx512.cpp) with -ffp-contract=off. They compute on GCC/Clang vector
// extensions of kAttentionLanes (8) floats, which each TU lowers to its own registers (two SSE
// registers, one AVX register; AVX-512 machines run the AVX width, as wide as a head of 8 is):
// lane-wise IEEE operations in one order, sums over the lanes in one fixed order, so every ISA
// gives the same bits. Internal linkage: each TU keeps its own copy.
#pragma once

#include <cstdint>
#include <cstring>

#include "attention.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of internal functions only
#endif

namespace qround::kernels::impl {

constexpr long kL = kAttentionLanes;
typedef float Floats __attribute__((vector_size(kL * sizeof(float))));
typedef std::int32_t Ints __attribute__((vector_size(kL * sizeof(std::int32_t))));
static_assert(sizeof(Floats) == kL * sizeof(float), "one vector holds kAttentionLanes floats");

constexpr float kMasked = -3.0e38f;  // a score that is not one of this query's keys

static inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }
static inline Floats splat(float x) { return Floats{} + x; }
static inline Ints lane_index() {
  Ints v;
  for (int l = 0; l < kL; ++l) v[l] = l;
  return v;
}

// e^x for x ≤ 0 (softmax arguments), Cephes' expf scheme (facts from Moshier's Cephes Math Library,
// expf.c): x = n·ln2 + r with |r| ≤ ln2/2, e^r ≈ 1 + r + r²·P(r), times 2^n built in the exponent
// bits. Arguments below −87 give e^−87 (the caller masks what must be exactly 0).
static inline Floats exp_nonpositive(Floats x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer in the low bits
  const Floats t = x * 1.44269504088896341f + magic;
  const Floats n = t - magic;
  Floats r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Floats p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  Ints bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // n + 127 in the exponent field (n ∈ [−126, 0])
  Floats two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// Σ over the lanes in one fixed order.
static inline float lane_sum(Floats v) {
  float s = 0.0f;
  for (int l = 0; l < kL; ++l) s += v[l];
  return s;
}

// Σ_j a[j]·b[j] over `len` (a multiple of kL) entries.
static inline float dot(const float* a, const float* b, long len) {
  Floats acc{};
  for (long j = 0; j < len; j += kL) acc += load(a + j) * load(b + j);
  return lane_sum(acc);
}

// out[r] = Σ_j a[j]·b[r·ld + j] for r < R: R independent sums, each in dot's order.
template <int R>
static inline void dots(const float* a, const float* b, long ld, long len, float* out) {
  Floats acc[R] = {};
  for (long j = 0; j < len; j += kL) {
    const Floats x = load(a + j);
    for (int r = 0; r < R; ++r) acc[r] += x * load(b + r * ld + j);
  }
  for (int r = 0; r < R; ++r) out[r] = lane_sum(acc[r]);
}

// out[r] = Σ_j a[j]·m[r·ld + j] for every r < rows, four at a time.
static inline void matvec(const float* a, const float* m, long ld, long rows, long len,
                          float* out) {
  long r = 0;
  for (; r + 4 <= rows; r += 4) dots<4>(a, m + r * ld, ld, len, out + r);
  for (; r < rows; ++r) dots<1>(a, m + r * ld, ld, len, out + r);
}

// out[j] = Σ_d w[d]·m[d·ld + j] (d in increasing order) for U consecutive vectors from j.
template <int U>
static inline void combine(const float* w, const float* m, long ld, long rows, long j,
                           Floats* out) {
  for (int u = 0; u < U; ++u) out[u] = load(m + j + u * kL) * w[0];
  for (long d = 1; d < rows; ++d)
    for (int u = 0; u < U; ++u) out[u] += load(m + d * ld + j + u * kL) * w[d];
}

// y[j] = Σ_d w[d]·m[d·ld + j] over `len` entries, four vectors at a time for independent chains.
static inline void combine_rows(const float* w, const float* m, long ld, long rows, long len,
                                float* y) {
  long j = 0;
  for (; j + 4 * kL <= len; j += 4 * kL) {
    Floats v[4];
    combine<4>(w, m, ld, rows, j, v);
    for (int u = 0; u < 4; ++u) store(y + j + u * kL, v[u]);
  }
  for (; j < len; j += kL) {
    Floats v[1];
    combine<1>(w, m, ld, rows, j, v);
    store(y + j, v[0]);
  }
}

static inline void forward(const AttentionForwardArgs& a) {
  const long hs = a.head_size, ld = a.stride;
  const Ints lanes = lane_index();
  for (long i = 0; i < a.tokens; ++i) {
    const long n = i + 1, len = (n + kL - 1) / kL * kL;
    float* p = a.probs + i * a.probs_ld;
    // Scores q·k_j / √hs, the keys after i masked; then e^(s − max), normalised.
    combine_rows(a.q + i * a.ldq, a.kt, ld, hs, len, p);
    Floats top = splat(kMasked);
    for (long j = 0; j < len; j += kL) {
      const Ints inside = (lanes + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
      const Floats s = inside ? load(p + j) * a.scale : splat(kMasked);
      store(p + j, s);
      top = top < s ? s : top;
    }
    float mx = top[0];
    for (int l = 1; l < kL; ++l) mx = mx < top[l] ? top[l] : mx;
    Floats total{};
    for (long j = 0; j < len; j += kL) {
      const Ints inside = (lanes + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
      const Floats e = inside ? exp_nonpositive(load(p + j) - mx) : Floats{};
      store(p + j, e);
      total += e;
    }
    const float inv = 1.0f / lane_sum(total);
    for (long j = 0; j < len; j += kL) store(p + j, load(p + j) * inv);
    matvec(p, a.vt, ld, hs, len, a.out + i * a.ldo);
  }
}

// acc[d] (d < D) += Σ_{i ≥ i0} rows[i·ld + j ..+kL] · w[i·ldw + d]: one kL-wide column chunk of
// Σ_i rows_iᵀ w_i, the sum over i in increasing order, the D accumulators held in registers.
template <int D>
static inline void accumulate_columns(const float* rows, long ld, const float* w, long ldw, long i0,
                                      long i1, long j, float* out, long ldo) {
  Floats acc[D] = {};
  for (long i = i0; i < i1; ++i) {
    const Floats x = load(rows + i * ld + j);
    const float* wi = w + i * ldw;
    for (int d = 0; d < D; ++d) acc[d] += x * wi[d];
  }
  for (int d = 0; d < D; ++d) store(out + d * ldo + j, load(out + d * ldo + j) + acc[d]);
}

// out[d·ldo + j] += Σ_{i ≥ j} rows[i·ld + j] · w[i·ldw + d] for every d < dims and j < tokens:
// the key-side gradients (Pᵀ·da, dSᵀ·q). Row i holds entries up to its lane-rounded length
// (zeros after i), so the chunk starting at j is complete in every row i ≥ j.
static inline void accumulate_keys(const float* rows, long ld, const float* w, long ldw, long dims,
                                   long tokens, float* out, long ldo) {
  for (long j = 0; j < tokens; j += kL) {
    long d = 0;
    for (; d + 8 <= dims; d += 8)
      accumulate_columns<8>(rows, ld, w + d, ldw, j, tokens, j, out + d * ldo, ldo);
    for (; d + 4 <= dims; d += 4)
      accumulate_columns<4>(rows, ld, w + d, ldw, j, tokens, j, out + d * ldo, ldo);
    for (; d < dims; ++d)
      accumulate_columns<1>(rows, ld, w + d, ldw, j, tokens, j, out + d * ldo, ldo);
  }
}

// Per query row i (p = its softmax weights, da = dL/d out_i):
//   dp_j = da·v_j,  ds_j = p_j·(dp_j − Σ p·dp)·scale,  dq_i = Σ_j ds_j·k_j;
// then per key j: dv_j += Σ_i p_ij·da_i and dk_j += Σ_i ds_ij·q_i.
static inline void backward(const AttentionBackwardArgs& a) {
  const long hs = a.head_size, ld = a.stride;
  float* dscores = a.scratch;  // tokens × stride: ds of every row
  for (long i = 0; i < a.tokens; ++i) {
    const long n = i + 1, len = (n + kL - 1) / kL * kL;
    const float* p = a.probs + i * ld;
    float* ds = dscores + i * ld;
    combine_rows(a.datt + i * a.ldd, a.vt, ld, hs, len, ds);
    const float centre = dot(p, ds, len);
    for (long j = 0; j < len; j += kL)
      store(ds + j, load(p + j) * (load(ds + j) - centre) * a.scale);
    matvec(ds, a.kt, ld, hs, len, a.dq + i * a.lddq);
  }
  accumulate_keys(a.probs, ld, a.datt, a.ldd, hs, a.tokens, a.dvt, ld);
  accumulate_keys(dscores, ld, a.q, a.ldq, hs, a.tokens, a.dkt, ld);
}

}  // namespace qround::kernels::impl
