// The causal attention kernels of block reconstruction (src/kernels/attention.hpp): every path
// this CPU runs gives the same bits as the baseline one, and the baseline agrees with a plain
// double-precision softmax attention and its hand-derived backward pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../src/kernels/attention.hpp"
#include "qround/isa.hpp"

namespace qround {
namespace {

using kernels::kAttentionLanes;

// One head's inputs in the kernels' layout (keys and values transposed, padded with zeros).
struct Head {
  long T = 0, hs = 0, ld = 0;
  std::vector<float> q, kt, vt, datt;  // q, datt: T × hs
};

Head make_head(long T, long hs, float magnitude, unsigned seed) {
  Head h;
  h.T = T;
  h.hs = hs;
  h.ld = (T + kAttentionLanes - 1) / kAttentionLanes * kAttentionLanes;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, magnitude);
  h.q.resize(T * hs);
  h.datt.resize(T * hs);
  h.kt.assign(hs * h.ld, 0.0f);
  h.vt.assign(hs * h.ld, 0.0f);
  for (auto& x : h.q) x = n(rng);
  for (auto& x : h.datt) x = n(rng) / magnitude;
  for (long d = 0; d < hs; ++d)
    for (long j = 0; j < T; ++j) {
      h.kt[d * h.ld + j] = n(rng);
      h.vt[d * h.ld + j] = n(rng) / magnitude;
    }
  return h;
}

kernels::AttentionHead view(const Head& h) {
  kernels::AttentionHead a;
  a.tokens = h.T;
  a.head_size = h.hs;
  a.stride = h.ld;
  a.scale = 1.0f / std::sqrt(static_cast<float>(h.hs));
  a.q = h.q.data();
  a.ldq = h.hs;
  a.kt = h.kt.data();
  a.vt = h.vt.data();
  return a;
}

struct Result {
  std::vector<float> probs, out, dq, dkt, dvt;
};

Result run(const Head& h, bool with_backward) {
  Result r;
  r.probs.assign(h.T * h.ld, -1.0f);
  r.out.assign(h.T * h.hs, 0.0f);
  kernels::AttentionForwardArgs f;
  static_cast<kernels::AttentionHead&>(f) = view(h);
  f.probs = r.probs.data();
  f.probs_ld = h.ld;
  f.out = r.out.data();
  f.ldo = h.hs;
  kernels::attention_forward(f);
  if (!with_backward) return r;
  r.dq.assign(h.T * h.hs, 0.0f);
  r.dkt.assign(h.hs * h.ld, 0.0f);
  r.dvt.assign(h.hs * h.ld, 0.0f);
  std::vector<float> scratch(h.T * h.ld);
  kernels::AttentionBackwardArgs b;
  static_cast<kernels::AttentionHead&>(b) = view(h);
  b.probs = r.probs.data();
  b.datt = h.datt.data();
  b.ldd = h.hs;
  b.dq = r.dq.data();
  b.lddq = h.hs;
  b.dkt = r.dkt.data();
  b.dvt = r.dvt.data();
  b.scratch = scratch.data();
  kernels::attention_backward(b);
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The plain double-precision reference: softmax(q kᵀ/√hs) with the causal mask, and the gradients
// of L = Σ datt ⊙ out written out directly (dv = Pᵀ da, dP = da vᵀ, dS = P ⊙ (dP − rowsum(P ⊙
// dP))).
struct Reference {
  std::vector<double> probs, out, dq, dk, dv;  // probs T × T; the rest T × hs
};

Reference reference(const Head& h) {
  const long T = h.T, hs = h.hs;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  auto K = [&](long j, long d) { return static_cast<double>(h.kt[d * h.ld + j]); };
  auto V = [&](long j, long d) { return static_cast<double>(h.vt[d * h.ld + j]); };
  Reference r;
  r.probs.assign(T * T, 0.0);
  r.out.assign(T * hs, 0.0);
  r.dq.assign(T * hs, 0.0);
  r.dk.assign(T * hs, 0.0);
  r.dv.assign(T * hs, 0.0);
  for (long i = 0; i < T; ++i) {
    double mx = -1e300;
    std::vector<double> s(i + 1);
    for (long j = 0; j <= i; ++j) {
      double acc = 0.0;
      for (long d = 0; d < hs; ++d) acc += h.q[i * hs + d] * K(j, d);
      s[j] = acc * scale;
      mx = std::max(mx, s[j]);
    }
    double sum = 0.0;
    for (long j = 0; j <= i; ++j) sum += std::exp(s[j] - mx);
    for (long j = 0; j <= i; ++j) r.probs[i * T + j] = std::exp(s[j] - mx) / sum;
    for (long d = 0; d < hs; ++d)
      for (long j = 0; j <= i; ++j) r.out[i * hs + d] += r.probs[i * T + j] * V(j, d);
  }
  for (long i = 0; i < T; ++i) {
    std::vector<double> dp(i + 1, 0.0);
    double centre = 0.0;
    for (long j = 0; j <= i; ++j) {
      for (long d = 0; d < hs; ++d) {
        dp[j] += h.datt[i * hs + d] * V(j, d);
        r.dv[j * hs + d] += r.probs[i * T + j] * h.datt[i * hs + d];
      }
      centre += r.probs[i * T + j] * dp[j];
    }
    for (long j = 0; j <= i; ++j) {
      const double ds = r.probs[i * T + j] * (dp[j] - centre) * scale;
      for (long d = 0; d < hs; ++d) {
        r.dq[i * hs + d] += ds * K(j, d);
        r.dk[j * hs + d] += ds * h.q[i * hs + d];
      }
    }
  }
  return r;
}

// Largest |a − b| over max(1, |b|): the floats against the double reference.
double worst_relative(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return worst;
}

struct Shape {
  long T, hs;
  float magnitude;
};

// Odd token counts around the lane width, one token, head sizes from 1 to 64, and scores large
// enough that a softmax row saturates (magnitude 30: |q·k|/√hs in the hundreds).
const Shape kShapes[] = {{1, 8, 1.0f},   {2, 1, 1.0f},  {7, 3, 1.0f},    {8, 8, 1.0f},
                         {9, 5, 1.0f},   {33, 8, 1.0f}, {100, 13, 1.0f}, {64, 64, 1.0f},
                         {40, 8, 30.0f}, {17, 2, 30.0f}};

TEST(AttentionKernels, MatchThePlainDoubleReference) {
  ScopedIsaOverride scalar(Isa::kScalar);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(::testing::Message()
                 << s.T << " tokens, head " << s.hs << ", magnitude " << s.magnitude);
    const Head h = make_head(s.T, s.hs, s.magnitude, 7);
    const Result r = run(h, true);
    const Reference ref = reference(h);
    std::vector<float> probs(s.T * s.T), dk(s.T * s.hs), dv(s.T * s.hs);
    for (long i = 0; i < s.T; ++i) {
      for (long j = 0; j < s.T; ++j) probs[i * s.T + j] = j <= i ? r.probs[i * h.ld + j] : 0.0f;
      // Row i's padding up to the lane width is zero: the backward pass reads it.
      for (long j = i + 1;
           j < std::min(h.ld, (i + kAttentionLanes) / kAttentionLanes * kAttentionLanes); ++j)
        ASSERT_EQ(r.probs[i * h.ld + j], 0.0f) << "row " << i << " entry " << j;
    }
    for (long j = 0; j < s.T; ++j)
      for (long d = 0; d < s.hs; ++d) {
        dk[j * s.hs + d] = r.dkt[d * h.ld + j];
        dv[j * s.hs + d] = r.dvt[d * h.ld + j];
      }
    // Float arithmetic over up to 100 terms: a few ulps of the largest magnitudes involved.
    const double tol = s.magnitude > 1.0f ? 2e-4 : 2e-5;
    EXPECT_LT(worst_relative(probs, ref.probs), tol);
    EXPECT_LT(worst_relative(r.out, ref.out), tol);
    EXPECT_LT(worst_relative(r.dq, ref.dq), tol * s.magnitude);
    EXPECT_LT(worst_relative(dk, ref.dk), tol * s.magnitude);
    EXPECT_LT(worst_relative(dv, ref.dv), tol);
  }
}

TEST(AttentionKernels, EveryPathGivesTheBaselineBits) {
  for (const Shape& s : kShapes) {
    const Head h = make_head(s.T, s.hs, s.magnitude, 11);
    Result base;
    {
      ScopedIsaOverride scalar(Isa::kScalar);
      base = run(h, true);
    }
    for (Isa isa : supported_isas()) {
      SCOPED_TRACE(::testing::Message()
                   << to_string(isa) << ": " << s.T << " tokens, head " << s.hs);
      ScopedIsaOverride use(isa);
      const Result r = run(h, true);
      EXPECT_TRUE(same_bits(r.probs, base.probs));
      EXPECT_TRUE(same_bits(r.out, base.out));
      EXPECT_TRUE(same_bits(r.dq, base.dq));
      EXPECT_TRUE(same_bits(r.dkt, base.dkt));
      EXPECT_TRUE(same_bits(r.dvt, base.dvt));
    }
  }
}

TEST(AttentionKernels, OneReusedProbabilityRowGivesTheSameOutput) {
  // Without a tape the forward pass keeps one row of weights (probs_ld = 0).
  const Head h = make_head(45, 8, 1.0f, 3);
  const Result taped = run(h, false);
  std::vector<float> row(h.ld), out(h.T * h.hs);
  kernels::AttentionForwardArgs f;
  static_cast<kernels::AttentionHead&>(f) = view(h);
  f.probs = row.data();
  f.probs_ld = 0;
  f.out = out.data();
  f.ldo = h.hs;
  kernels::attention_forward(f);
  EXPECT_TRUE(same_bits(out, taped.out));
}

TEST(AttentionKernels, ReportsThePathItTakes) {
  for (Isa isa : supported_isas()) {
    ScopedIsaOverride use(isa);
    const std::string name = kernels::attention_isa();
    const char* expected = isa == Isa::kScalar ? "scalar" : isa == Isa::kAvx2 ? "avx2" : "avx512";
    EXPECT_EQ(name, expected);
  }
}

}  // namespace
}  // namespace qround
