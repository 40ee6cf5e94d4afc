// AVX-512F peak loops (compiled with -mavx512f only, so a CPU with AVX-512F but no VNNI runs
// them; called after a CPU check).
#include <immintrin.h>

#include "kernels.hpp"

namespace qround::bench::limits {

float fma_f32_avx512(long steps, float a, float b) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  __m512 c[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm512_set1_ps(1.0f + float(i) / 16.0f);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm512_fmadd_ps(c[i], va, vb);
  }
  __m512 sum = c[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm512_add_ps(sum, c[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  return lanes[0] + lanes[15];
}

double fma_f64_avx512(long steps, double a, double b) {
  const __m512d va = _mm512_set1_pd(a), vb = _mm512_set1_pd(b);
  __m512d c[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm512_set1_pd(1.0 + double(i) / 16.0);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) c[i] = _mm512_fmadd_pd(c[i], va, vb);
  }
  __m512d sum = c[0];
  for (int i = 1; i < kFmaAccumulators; ++i) sum = _mm512_add_pd(sum, c[i]);
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, sum);
  return lanes[0] + lanes[7];
}

}  // namespace qround::bench::limits
