// Portable peak loops (no ISA flags).
#include "kernels.hpp"

namespace qround::bench::limits {
namespace {

template <typename T>
T multiply_add_chains(long steps, T a, T b) {
  T c[kFmaAccumulators];
  for (int i = 0; i < kFmaAccumulators; ++i) c[i] = T(1) + T(i) / T(16);  // distinct: no CSE
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kFmaAccumulators; ++i) c[i] = c[i] * a + b;
  }
  T sum = 0;
  for (int i = 0; i < kFmaAccumulators; ++i) sum += c[i];
  return sum;
}

}  // namespace

float fma_f32_scalar(long steps, float a, float b) { return multiply_add_chains(steps, a, b); }
double fma_f64_scalar(long steps, double a, double b) { return multiply_add_chains(steps, a, b); }

std::int32_t int8_dot_scalar(long steps, int seed) {
  std::uint32_t acc[kInt8Accumulators] = {};  // unsigned: wrapping sums are defined
  std::int32_t x = static_cast<std::uint8_t>(seed), w = static_cast<std::int8_t>(seed + 1);
  for (long s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kInt8Accumulators; ++i) {
#if defined(__GNUC__)
      __asm__ volatile("" : "+r"(x));  // an operand "changes": the products are not hoisted
#endif
      acc[i] += static_cast<std::uint32_t>(x * w);
    }
  }
  std::uint32_t sum = 0;
  for (int i = 0; i < kInt8Accumulators; ++i) sum += acc[i];
  return static_cast<std::int32_t>(sum);
}

std::uint64_t read_scalar(const std::uint64_t* data, std::size_t words) {
  std::uint64_t acc[8] = {};
  for (std::size_t i = 0; i < words; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += data[i + j];
  std::uint64_t sum = 0;
  for (int j = 0; j < 8; ++j) sum ^= acc[j];
  return sum;
}

}  // namespace qround::bench::limits
