// AVX-512 VNNI kernels: vpdpbusd (u8 × s8 → i32, 4 products per lane). One 64-byte k-step of a
// block is exactly one operand: lane r holds the 4 inputs of row r.
//   int8: the activation is the u8 side as x + 128 (x ^ 0x80), the weight d the s8 side; the
//         extra 128 · Σ d is removed per group with the precomputed row sums — exact in int32.
//   int4: the nibble n ∈ [0, 15] is the u8 side, the activation the s8 side (no offset needed);
//         d = n − o is restored per group as acc − o · Σ x with the token's group sums.
// Register tile: RB blocks (16 rows each) × TB tokens, int32 accumulators per group and f32
// accumulators across groups.
// GCC 12 reports its own _mm512_undefined_*() placeholders inside the intrinsic headers as
// "maybe uninitialized" (a known false positive); nothing in this file reads uninitialized data.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../epilogue.hpp"
#include "../params.hpp"

namespace qround::kernels {
namespace {

constexpr int kMaxRb = 4;
// Tokens per register tile: int8 keeps 4·3 int32 + 4·3 f32 accumulators + 4 weights in the 32
// ZMM registers; int4 needs two unpacked weights per block, so it takes 2 tokens.
template <bool kInt4>
constexpr int kMaxTb = kInt4 ? 2 : 3;
constexpr std::int64_t kPrefetchBytes = 1024;  // per weight stream, ahead of the loads

template <bool kInt4>
struct Step;

template <>
struct Step<false> {  // int8
  static constexpr int kInputs = kInt8StepK;
  template <int RB, int TB>
  static inline void run(const std::uint8_t* const* w, const std::int8_t* const* x,
                         __m512i (&acc)[RB][TB], std::int64_t s) noexcept {
    const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
    __m512i wv[RB];
    for (int i = 0; i < RB; ++i) wv[i] = _mm512_load_si512(w[i] + s * kStepBytes);
    for (int j = 0; j < TB; ++j) {
      std::int32_t four;
      std::memcpy(&four, x[j] + s * kInputs, 4);
      const __m512i xv = _mm512_xor_si512(_mm512_set1_epi32(four), flip);
      for (int i = 0; i < RB; ++i) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[i]);
    }
  }
  static inline __m512i fix(const QgemmParams& p, std::int64_t b, std::int64_t, std::int64_t g,
                            __m512i acc) noexcept {
    const __m512i sums = _mm512_load_si512(p.row_sums + side_index(p, b, g));
    return _mm512_sub_epi32(acc, _mm512_slli_epi32(sums, 7));
  }
};

template <>
struct Step<true> {  // int4
  static constexpr int kInputs = kInt4StepK;
  template <int RB, int TB>
  static inline void run(const std::uint8_t* const* w, const std::int8_t* const* x,
                         __m512i (&acc)[RB][TB], std::int64_t s) noexcept {
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512i lo[RB], hi[RB];
    for (int i = 0; i < RB; ++i) {
      const __m512i v = _mm512_load_si512(w[i] + s * kStepBytes);
      lo[i] = _mm512_and_si512(v, low);
      hi[i] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
    }
    for (int j = 0; j < TB; ++j) {
      std::int32_t a, b;
      std::memcpy(&a, x[j] + s * kInputs, 4);
      std::memcpy(&b, x[j] + s * kInputs + 4, 4);
      const __m512i xa = _mm512_set1_epi32(a), xb = _mm512_set1_epi32(b);
      for (int i = 0; i < RB; ++i) {
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], lo[i], xa);
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], hi[i], xb);
      }
    }
  }
  static inline __m512i fix(const QgemmParams& p, std::int64_t b, std::int64_t t, std::int64_t g,
                            __m512i acc) noexcept {
    const std::int32_t xs = p.xsum[t * p.groups + g];
    if (p.common_offset >= 0)  // symmetric: o = 8 on every row, no per-lane multiply
      return _mm512_sub_epi32(acc, _mm512_set1_epi32(p.common_offset * xs));
    const __m512i o = _mm512_load_si512(p.offsets + side_index(p, b, g));
    return _mm512_sub_epi32(acc, _mm512_mullo_epi32(o, _mm512_set1_epi32(xs)));
  }
};

// Accumulators of one register tile carried from one K-chunk to the next.
struct TileState {
  alignas(64) float out[kMaxRb][3][kBlockRows];
  alignas(64) std::int32_t acc[kMaxRb][3][kBlockRows];
};

// K-chunk of this many k-steps: RB = 4 blocks × 64 bytes × 128 steps = 32 KiB of weights, which
// stay in L1 while every token tile of the work item passes over them.
constexpr std::int64_t kChunkSteps = 128;

inline std::int64_t total_steps(const QgemmParams& p) {
  return (p.groups - 1) * p.group_steps + p.last_group_steps;
}

// Steps [s_begin, s_end) of blocks b0.. × tokens t0..; `state` carries the accumulators between
// chunks (nullptr when this call covers all steps).
template <bool kInt4, bool kRaw, int RB, int TB>
void tile(const QgemmParams& p, std::int64_t b0, std::int64_t t0, std::int64_t s_begin,
          std::int64_t s_end, TileState* state) noexcept {
  using S = Step<kInt4>;
  const std::int64_t all = total_steps(p);
  const std::uint8_t* w[RB];
  const std::int8_t* x[TB];
  for (int i = 0; i < RB; ++i) w[i] = p.weights + (b0 + i) * p.block_bytes;
  for (int j = 0; j < TB; ++j) x[j] = p.xq + (t0 + j) * p.kp;
  __m512 out[RB][TB];
  __m512i acc[RB][TB];
  const bool resume = s_begin > 0, mid_group = s_begin % p.group_steps != 0;
  for (int i = 0; i < RB; ++i)
    for (int j = 0; j < TB; ++j) {
      out[i][j] = resume ? _mm512_load_ps(state->out[i][j]) : _mm512_setzero_ps();
      acc[i][j] =
          resume && mid_group ? _mm512_load_si512(state->acc[i][j]) : _mm512_setzero_si512();
    }
  const bool prefetch = TB == 1;  // GEMV streams weights once: keep DRAM requests in flight
  std::int64_t s = s_begin;
  while (s < s_end) {
    const std::int64_t g = s / p.group_steps < p.groups ? s / p.group_steps : p.groups - 1;
    const std::int64_t g_end = g + 1 < p.groups ? (g + 1) * p.group_steps : all;
    const std::int64_t e = g_end < s_end ? g_end : s_end;
    for (; s < e; ++s) {
      if (prefetch)
        for (int i = 0; i < RB; ++i)
          _mm_prefetch(reinterpret_cast<const char*>(w[i] + s * kStepBytes + kPrefetchBytes),
                       _MM_HINT_T0);
      S::template run<RB, TB>(w, x, acc, s);
    }
    if (s != g_end) break;  // the chunk ends inside group g: carry acc over
#pragma GCC unroll 4
    for (int i = 0; i < RB; ++i) {
      const __m512 scale = _mm512_load_ps(p.scales + side_index(p, b0 + i, g));
#pragma GCC unroll 4
      for (int j = 0; j < TB; ++j) {
        const __m512i exact = S::fix(p, b0 + i, t0 + j, g, acc[i][j]);
        if (kRaw) {
          alignas(64) std::int32_t lanes[kBlockRows];
          _mm512_store_si512(lanes, exact);
          float unused[kBlockRows];
          finish_group(p, b0 + i, t0 + j, g, lanes, unused);
        } else {
          out[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), scale, out[i][j]);
        }
        acc[i][j] = _mm512_setzero_si512();
      }
    }
  }
  if (s_end < all) {
    for (int i = 0; i < RB; ++i)
      for (int j = 0; j < TB; ++j) {
        _mm512_store_ps(state->out[i][j], out[i][j]);
        _mm512_store_si512(state->acc[i][j], acc[i][j]);
      }
    return;
  }
  if (kRaw) return;
  for (int i = 0; i < RB; ++i) {
    const std::int64_t row0 = (b0 + i) * kBlockRows;
    const std::int64_t live = p.rows - row0;
    const __mmask16 mask =
        live >= kBlockRows ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << live) - 1u);
    for (int j = 0; j < TB; ++j) {
      const __m512 y = _mm512_mul_ps(out[i][j], _mm512_set1_ps(p.xscale[t0 + j]));
      _mm512_mask_storeu_ps(p.y + (t0 + j) * p.ldy + row0, mask, y);
    }
  }
}

// Up to this many tokens per work item keep their chunk state on the stack (the entry splits
// larger batches into tiles of 128); 64 states × 1.5 KiB.
constexpr std::int64_t kMaxChunkedTokens = 128;
constexpr std::int64_t kMaxTileStates = kMaxChunkedTokens / 2;

template <bool kInt4, bool kRaw, int RB>
void tokens_tile(const QgemmParams& p, std::int64_t b0) noexcept {
  constexpr int kTb = kMaxTb<kInt4>;
  const std::int64_t tokens = p.token_end - p.token_begin;
  const std::int64_t all = total_steps(p);
  // One token tile: stream all of K. Several: K-chunks, each reused by every token tile.
  const bool chunked = tokens > kTb && all > kChunkSteps && tokens <= kMaxChunkedTokens;
  const std::int64_t chunk = chunked ? kChunkSteps : all;
  TileState states[kMaxTileStates];
  for (std::int64_t s0 = 0; s0 < all; s0 += chunk) {
    const std::int64_t s1 = s0 + chunk < all ? s0 + chunk : all;
    std::int64_t t = p.token_begin;
    TileState* st = states;
    for (; t + kTb <= p.token_end; t += kTb, ++st) tile<kInt4, kRaw, RB, kTb>(p, b0, t, s0, s1, st);
    switch (p.token_end - t) {
      case 2:
        tile<kInt4, kRaw, RB, 2>(p, b0, t, s0, s1, st);
        break;
      case 1:
        tile<kInt4, kRaw, RB, 1>(p, b0, t, s0, s1, st);
        break;
      default:
        break;
    }
  }
}

template <bool kInt4, bool kRaw>
void run_blocks(const QgemmParams& p) noexcept {
  std::int64_t b = p.block_begin;
  for (; b + kMaxRb <= p.block_end; b += kMaxRb) tokens_tile<kInt4, kRaw, kMaxRb>(p, b);
  switch (p.block_end - b) {
    case 3:
      tokens_tile<kInt4, kRaw, 3>(p, b);
      break;
    case 2:
      tokens_tile<kInt4, kRaw, 2>(p, b);
      break;
    case 1:
      tokens_tile<kInt4, kRaw, 1>(p, b);
      break;
    default:
      break;
  }
}

template <bool kInt4>
void run(const QgemmParams& p) noexcept {
  if (p.acc != nullptr)
    run_blocks<kInt4, true>(p);
  else
    run_blocks<kInt4, false>(p);
}

}  // namespace

void qgemm_int8_avx512vnni(const QgemmParams& p) noexcept { run<false>(p); }
void qgemm_int4_avx512vnni(const QgemmParams& p) noexcept { run<true>(p); }

}  // namespace qround::kernels
