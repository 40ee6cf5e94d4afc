// AVX2 kernels: vpmaddubsw (u8 × s8 → pairs summed in i16, saturating) + vpmaddwd (→ i32). A
// 64-byte k-step of a block is two 32-byte halves (rows 0–7 and 8–15, 4 inputs per i32 lane).
//   int8: u8 side = |d|, s8 side = sign(x, d) (vpsignb): |d| · ±x = d · x with |d|, |x| ≤ 127,
//         so a pair sums to at most 2 · 127 · 127 = 32 258 < 32 767 — no saturation. Neither side
//         can be −128 (weights and activations are restricted to ±127).
//   int4: u8 side = nibble n ∈ [0, 15], s8 side = x; the two nibble halves' pair sums add up to
//         at most 4 · 15 · 127 = 7 620 in i16; d = n − o is restored per group (acc − o · Σ x).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../epilogue.hpp"
#include "../params.hpp"

namespace qround::kernels {
namespace {

constexpr int kMaxTb = 2;
constexpr int kHalves = 2;
constexpr std::int64_t kPrefetchBytes = 1024;

inline __m256i broadcast4(const std::int8_t* x) noexcept {
  std::int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

template <bool kInt4, int TB>
inline void step(const std::uint8_t* w, const std::int8_t* const* x, __m256i (&acc)[kHalves][TB],
                 std::int64_t s) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (!kInt4) {
    for (int h = 0; h < kHalves; ++h) {
      const __m256i wv =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(w + s * kStepBytes + 32 * h));
      const __m256i aw = _mm256_abs_epi8(wv);
      for (int j = 0; j < TB; ++j) {
        const __m256i xs = _mm256_sign_epi8(broadcast4(x[j] + s * kInt8StepK), wv);
        const __m256i pairs = _mm256_maddubs_epi16(aw, xs);
        acc[h][j] = _mm256_add_epi32(acc[h][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  } else {
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int h = 0; h < kHalves; ++h) {
      const __m256i v =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(w + s * kStepBytes + 32 * h));
      const __m256i lo = _mm256_and_si256(v, low);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      for (int j = 0; j < TB; ++j) {
        const std::int8_t* xs = x[j] + s * kInt4StepK;
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, broadcast4(xs)),
                                               _mm256_maddubs_epi16(hi, broadcast4(xs + 4)));
        acc[h][j] = _mm256_add_epi32(acc[h][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
}

template <bool kInt4, int TB>
void tile(const QgemmParams& p, std::int64_t b, std::int64_t t0) noexcept {
  const std::uint8_t* w = p.weights + b * p.block_bytes;
  const std::int8_t* x[TB];
  for (int j = 0; j < TB; ++j) x[j] = p.xq + (t0 + j) * p.kp;
  constexpr std::int64_t kInputs = kInt4 ? kInt4StepK : kInt8StepK;
  __m256 out[kHalves][TB];
  for (int h = 0; h < kHalves; ++h)
    for (int j = 0; j < TB; ++j) out[h][j] = _mm256_setzero_ps();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int64_t steps = g + 1 < p.groups ? p.group_steps : p.last_group_steps;
    __m256i acc[kHalves][TB];
    for (int h = 0; h < kHalves; ++h)
      for (int j = 0; j < TB; ++j) acc[h][j] = _mm256_setzero_si256();
    for (std::int64_t s = 0; s < steps; ++s) {
      if (TB == 1)
        _mm_prefetch(reinterpret_cast<const char*>(w + s * kStepBytes + kPrefetchBytes),
                     _MM_HINT_T0);
      step<kInt4, TB>(w, x, acc, s);
    }
    const std::int64_t side = side_index(p, b, g);
    for (int j = 0; j < TB; ++j) {
      alignas(32) std::int32_t lanes[kBlockRows];
      for (int h = 0; h < kHalves; ++h)
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8 * h), acc[h][j]);
      if (kInt4) subtract_offsets(p, b, t0 + j, g, lanes);
      if (p.acc != nullptr) {
        float unused[kBlockRows];
        finish_group(p, b, t0 + j, g, lanes, unused);
        continue;
      }
      for (int h = 0; h < kHalves; ++h) {
        const __m256i exact = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes + 8 * h));
        const __m256 scale = _mm256_load_ps(p.scales + side + 8 * h);
        out[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), scale, out[h][j]);
      }
    }
    w += steps * kStepBytes;
    for (int j = 0; j < TB; ++j) x[j] += steps * kInputs;
  }
  if (p.acc != nullptr) return;
  for (int j = 0; j < TB; ++j) {
    alignas(32) float rows[kBlockRows];
    for (int h = 0; h < kHalves; ++h) _mm256_store_ps(rows + 8 * h, out[h][j]);
    store_outputs(p, b, t0 + j, rows);
  }
}

template <bool kInt4>
void run(const QgemmParams& p) noexcept {
  for (std::int64_t b = p.block_begin; b < p.block_end; ++b) {
    std::int64_t t = p.token_begin;
    for (; t + kMaxTb <= p.token_end; t += kMaxTb) tile<kInt4, kMaxTb>(p, b, t);
    if (t < p.token_end) tile<kInt4, 1>(p, b, t);
  }
}

}  // namespace

void qgemm_int8_avx2(const QgemmParams& p) noexcept { run<false>(p); }
void qgemm_int4_avx2(const QgemmParams& p) noexcept { run<true>(p); }

}  // namespace qround::kernels
