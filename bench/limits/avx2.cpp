// AVX2 + FMA peak loops (compiled with -mavx2 -mfma only; called after a CPU check).
#include <immintrin.h>

#include "kernels.hpp"

namespace qround::bench::limits {

float fma_f32_avx2(long steps, float a, float b) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  __m256 c[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm256_set1_ps(1.0f + float(i) / 16.0f);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm256_fmadd_ps(c[i], va, vb);
  }
  __m256 sum = c[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm256_add_ps(sum, c[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  return lanes[0] + lanes[7];
}

double fma_f64_avx2(long steps, double a, double b) {
  const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
  __m256d c[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm256_set1_pd(1.0 + double(i) / 16.0);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm256_fmadd_pd(c[i], va, vb);
  }
  __m256d sum = c[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm256_add_pd(sum, c[i]);
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, sum);
  return lanes[0] + lanes[3];
}

// The loop is written in assembly: with intrinsics the products, having loop-invariant operands,
// would be hoisted out of the loop (and with an asm barrier per chain GCC spills accumulators).
// vpmaddubsw multiplies the u8 bytes of x by the s8 bytes of w and adds pairs into i16.
std::int32_t int8_dot_avx2(long steps, int seed) {
  static_assert(kInt8Accumulators == 10, "the loop below names its 10 accumulators");
  if (steps <= 0) return 0;
  const __m256i x = _mm256_set1_epi8(static_cast<char>(seed));      // u8 activations
  const __m256i w = _mm256_set1_epi8(static_cast<char>(seed + 1));  // s8 weights
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
          a7 = a0, a8 = a0, a9 = a0, t;
#define QROUND_INT8_CHAIN(acc)       \
  "vpmaddubsw %[w], %[x], %[t]\n\t"  \
  "vpmaddwd %[ones], %[t], %[t]\n\t" \
  "vpaddd %[t], %[" #acc "], %[" #acc "]\n\t"
  __asm__ volatile(
      "1:\n\t"  //
      QROUND_INT8_CHAIN(a0) QROUND_INT8_CHAIN(a1) QROUND_INT8_CHAIN(a2) QROUND_INT8_CHAIN(a3)
          QROUND_INT8_CHAIN(a4) QROUND_INT8_CHAIN(a5) QROUND_INT8_CHAIN(a6) QROUND_INT8_CHAIN(a7)
              QROUND_INT8_CHAIN(a8) QROUND_INT8_CHAIN(a9)  //
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      : [n] "+r"(steps), [t] "=&x"(t), [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
        [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7), [a8] "+x"(a8), [a9] "+x"(a9)
      : [x] "x"(x), [w] "x"(w), [ones] "x"(ones)
      : "cc");
#undef QROUND_INT8_CHAIN
  __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), a2), a3);
  sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(sum, a4), a5), a6);
  sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(sum, a7), a8), a9);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(_mm256_extract_epi32(sum, 0)) +
                                   static_cast<std::uint32_t>(_mm256_extract_epi32(sum, 7)));
}

std::uint64_t read_avx2(const std::uint64_t* data, std::size_t words) {
  __m256i acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_si256();
  const __m256i* p = reinterpret_cast<const __m256i*>(data);
  const std::size_t vectors = words / 4;
  for (std::size_t i = 0; i < vectors; i += 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_add_epi64(acc[j], _mm256_load_si256(p + i + j));
  }
  __m256i sum = acc[0];
  for (int j = 1; j < 8; ++j) sum = _mm256_add_epi32(sum, acc[j]);
  return static_cast<std::uint64_t>(_mm256_extract_epi64(sum, 0) ^ _mm256_extract_epi64(sum, 3));
}

}  // namespace qround::bench::limits
