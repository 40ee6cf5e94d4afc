// Engine storage formats: llama.cpp's ggml tensor types, as facts qround's grids and files use.
//
// A quantized ggml type stores, per block of consecutive inputs of one row, a few parameters (fp16
// scales and offsets, small integer sub-block scales) and one integer code per input. Its level
// formula, written as ggml's dequantization evaluates it in float32 (ggml-quants.c), is always
//
//   ŵ = s·n            q8_0, q4_0, q5_0 (s = d), q3_k (s = d·(sc − 32)), q6_k (s = d·sc)
//   ŵ = s·n + b        q4_1, q5_1 (s = d, b = m), q2_k, q4_k, q5_k (s = d·sc, b = −dmin·m)
//
// and every product there is exact in float32 (an 11-bit fp16 significand times integers of at
// most 13 bits), so a level is computed with at most one rounding whether or not the compiler
// fuses the multiply-add. qround's Grid keeps s and b per sub-block (derived from the stored
// parameters exactly as above) and the stored parameters themselves, so a file reproduces the
// simulated levels bit for bit.
//
// Type ids, block sizes and byte counts: ggml/include/ggml.h (enum ggml_type) and
// ggml/src/ggml-common.h (block_q4_0 … block_q6_K, QK_K = 256, K_SCALE_SIZE = 12).
//
// iq4_nl, the one table format: its 4-bit code n indexes a fixed table of 16 int8 values, and
//
//   ŵ = d·kvalues_iq4nl[n]   n ∈ [0, 15], d fp16 per block of 32 (QK4_NL)
//
// Facts, from llama.cpp's ggml: GGML_TYPE_IQ4_NL = 20 (ggml.h); block_iq4_nl is { ggml_half d;
// uint8_t qs[QK4_NL/2]; } with QK4_NL = 32, 18 bytes (ggml-common.h, static_assert "wrong iq4_nl
// block size/padding"); kvalues_iq4nl = {−127, −104, −83, −65, −49, −35, −22, −10, 1, 13, 25, 38,
// 53, 69, 89, 113} (ggml-common.h); dequantize_row_iq4_nl (ggml-quants.c) computes
// y[j] = d·kvalues_iq4nl[qs[j] & 0xf] and y[j + 16] = d·kvalues_iq4nl[qs[j] >> 4] in float32
// (low nibbles inputs 0..15, high nibbles 16..31); the product of an fp16 d and an int8 is exact.
// llama.cpp's quantizer (quantize_row_iq4_nl_impl) may store a negative d, and d = 0 for a block
// whose largest magnitude is below GROUP_MAX_EPS: qround's grids allow both for iq4_nl.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace qround {

enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIQ4_NL = 20,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  GgmlType type;
  const char* name;      // lower case as llama.cpp's tools print it: "q4_k", "f16"
  int block;             // inputs per block (1 for float types, 32, or 256 = QK_K)
  int block_bytes;       // bytes per block
  int sub_block;         // inputs sharing one (s, b): == block for the 32-blocks, 16 or 32 in K-quants
  int bits;              // bits of one code (0 for float types)
  std::int32_t qmin, qmax;  // code range as the level formula sees it (n above)
  bool has_offset;       // levels s·n + b with a stored real offset
  bool super_block;      // K-quant: fp16 d (and dmin) per 256, integer scales per sub-block
  int scale_bits;        // K-quants: bits of the stored sub-block scale (and min); 0 otherwise
  // Table formats (iq4_nl): the level of code n is s·levels[n]; nullptr for the uniform s·n (+ b).
  const std::int8_t* levels = nullptr;

  bool quantized() const { return bits != 0; }
  // Codes as the level formula sees them are signed: Grid::symmetric of the format's grids (q4_1,
  // the K-quants with offsets and iq4_nl's table indices 0..15 are not).
  bool signed_codes() const { return qmin < 0; }
  double bits_per_weight() const { return 8.0 * block_bytes / block; }
};

// The traits of `type`; throws InvalidArgument for a type qround does not know.
const GgmlTypeTraits& ggml_traits(GgmlType type);
// kvalues_iq4nl of ggml-common.h: the levels of iq4_nl in units of d, ascending.
inline constexpr std::int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                 1,    13,   25,  38,  53,  69,  89,  113};
// Every type qround can store, float types first.
const std::vector<GgmlType>& ggml_types();
// Every quantized type qround can choose codes for (q4_0 … q6_k, iq4_nl).
const std::vector<GgmlType>& ggml_quantized_types();
const char* to_string(GgmlType type);
// "q4_k" / "Q4_K" / "q4_K" …; throws InvalidArgument listing the known names.
GgmlType parse_ggml_type(std::string_view name);
// True for the integer ids ggml assigns to the types above.
bool is_known_ggml_type(std::uint32_t id);
// Bytes of `n` consecutive inputs of `type` (n a multiple of the block; else InvalidArgument).
std::uint64_t ggml_row_bytes(GgmlType type, std::uint64_t n);

// ---- half-precision conversions, exactly as ggml converts -------------------------------------
// fp32 → fp16 rounds to nearest even (ggml_compute_fp32_to_fp16 and F16C's _cvtss_sh(x, 0) agree);
// values beyond the fp16 range become ±Inf, which callers must refuse before storing.

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float fp16_to_fp32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // Inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  // Subnormal (or zero): man · 2^−24, exact in float32.
  const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

inline std::uint16_t fp32_to_fp16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN stays NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to Inf
  if (abs < 0x38800000u) {
    // Below the smallest normal fp16 (2^−14): round abs / 2^−24 to an integer, ties to even.
    const float scaled = bits_float(abs) * 16777216.0f;  // exact: a power-of-two scaling
    std::uint32_t m = static_cast<std::uint32_t>(scaled);
    const float rest = scaled - static_cast<float>(m);
    if (rest > 0.5f || (rest == 0.5f && (m & 1u))) ++m;
    return static_cast<std::uint16_t>(sign | m);  // m == 0x400 is the smallest normal: still right
  }
  // Normal: drop 13 mantissa bits with round-to-nearest-even; a carry into the exponent is right.
  const std::uint32_t rebased = abs - (112u << 23);
  const std::uint32_t rounded = rebased + 0x0fffu + ((rebased >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

// The fp16 value nearest to f (ties to even), back in float32.
inline float round_to_fp16(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }
// Largest finite fp16 value.
constexpr float kFp16Max = 65504.0f;

inline float bf16_to_fp32(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }
// As ggml_compute_fp32_to_bf16: round to nearest even, NaN forced quiet.
inline std::uint16_t fp32_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 64u);
  return static_cast<std::uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

}  // namespace qround
