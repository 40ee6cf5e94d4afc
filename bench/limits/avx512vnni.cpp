// AVX-512 VNNI peak loop (compiled with -mavx512f -mavx512vnni only; called after a CPU check).
#include <immintrin.h>

#include "kernels.hpp"

namespace qround::bench::limits {

std::int32_t int8_dot_avx512vnni(long steps, int seed) {
  const __m512i x = _mm512_set1_epi8(static_cast<char>(seed));
  const __m512i w = _mm512_set1_epi8(static_cast<char>(seed + 1));
  __m512i acc[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) acc[i] = _mm512_set1_epi32(i);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], x, w);
  }
  __m512i sum = acc[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  alignas(64) std::int32_t lanes[16];
  _mm512_store_si512(lanes, sum);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(lanes[0]) +
                                   static_cast<std::uint32_t>(lanes[15]));
}

}  // namespace qround::bench::limits
