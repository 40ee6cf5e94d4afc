// AVX-VNNI peak loop (compiled with -mavx2 -mavxvnni only; called after a CPU check).
#include <immintrin.h>

#include "kernels.hpp"

namespace qround::bench::limits {

std::int32_t int8_dot_avxvnni(long steps, int seed) {
  const __m256i x = _mm256_set1_epi8(static_cast<char>(seed));
  const __m256i w = _mm256_set1_epi8(static_cast<char>(seed + 1));
  __m256i acc[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) acc[i] = _mm256_set1_epi32(i);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) acc[i] = _mm256_dpbusd_avx_epi32(acc[i], x, w);
  }
  __m256i sum = acc[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm256_add_epi32(sum, acc[i]);
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(_mm256_extract_epi32(sum, 0)) +
                                   static_cast<std::uint32_t>(_mm256_extract_epi32(sum, 7)));
}

}  // namespace qround::bench::limits
