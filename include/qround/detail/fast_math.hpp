// Branch-free float exp / log / pow for hot elementwise loops (rectified sigmoids, regularisers):
// plain arithmetic and bit casts the compiler vectorises for any target ISA, unlike libm calls.
// Relative error about 2e-7 (exp) and 1e-7 (log) over the ranges documented per function.
// Internal linkage on purpose: per-ISA kernel TUs include this too, and a shared inline copy built
// with AVX-512 flags (e.g. not inlined in a Debug build) must never be what generic code links to.
#pragma once

#include <cstdint>
#include <cstring>

namespace qround::detail {

static inline float bits_to_float(std::int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline std::int32_t float_to_bits(float f) {
  std::int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// e^x for x in [−87, 88] (clamped there: no inf, no denormals).
static inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  // r = x − n·ln2 in two pieces (Cody–Waite), |r| ≤ ln2/2.
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bits_to_float((static_cast<std::int32_t>(n) + 127) << 23);
}

// ln x for finite x > 0 (normal range).
static inline float fast_log(float x) {
  const std::int32_t bits = float_to_bits(x);
  std::int32_t e = ((bits >> 23) & 0xFF) - 127;
  float m = bits_to_float((bits & 0x007FFFFF) | 0x3F800000);  // [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? m * 0.5f : m;  // [0.707, 1.414]
  e = high ? e + 1 : e;
  const float t = (m - 1.0f) / (m + 1.0f);  // |t| ≤ 0.172
  const float t2 = t * t;
  float s = 0.11111111f;
  s = s * t2 + 0.14285715f;
  s = s * t2 + 0.2f;
  s = s * t2 + 0.33333334f;
  s = s * t2 + 1.0f;
  return 2.0f * t * s + static_cast<float>(e) * 0.693147180559945f;
}

// a^p for a ≥ 0 and p > 0 (0^p = 0).
static inline float fast_pow(float a, float p) {
  const float safe = a > 1e-30f ? a : 1.0f;
  const float v = fast_exp(p * fast_log(safe));
  return a > 1e-30f ? v : 0.0f;
}

}  // namespace qround::detail
