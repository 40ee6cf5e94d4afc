// The peak loops of machine_limits.cpp, one translation unit per instruction set (compiled with
// that set's flags only, like src/kernels, so the binary still runs on a CPU without it; the
// caller checks the CPU first). Each runs `steps` steps and returns a value that depends on every
// accumulator, which the caller consumes. Work per step is given beside each loop.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qround::bench::limits {

constexpr int kFmaAccumulators = 12;  // > FMA latency (4–5) × FMA units (1–2) on current x86
constexpr int kInt8Accumulators = 10;

// Portable code (scalar multiply-add; a fallback off x86 or without AVX2).
constexpr double kF32ScalarFlopPerStep = kFmaAccumulators * 2.0;
float fma_f32_scalar(long steps, float a, float b);
constexpr double kF64ScalarFlopPerStep = kFmaAccumulators * 2.0;
double fma_f64_scalar(long steps, double a, double b);
constexpr double kInt8ScalarOpsPerStep = kInt8Accumulators * 2.0;
std::int32_t int8_dot_scalar(long steps, int seed);
std::uint64_t read_scalar(const std::uint64_t* data, std::size_t words);  // words % 8 == 0

// AVX2 + FMA (ymm).
constexpr double kF32Avx2FlopPerStep = kFmaAccumulators * 8 * 2.0;
float fma_f32_avx2(long steps, float a, float b);
constexpr double kF64Avx2FlopPerStep = kFmaAccumulators * 4 * 2.0;
double fma_f64_avx2(long steps, double a, double b);
// vpmaddubsw (32 u8 × s8 products) + vpmaddwd (pairs → i32) + vpaddd per accumulator.
constexpr double kInt8Avx2OpsPerStep = kInt8Accumulators * 32 * 2.0;
std::int32_t int8_dot_avx2(long steps, int seed);
std::uint64_t read_avx2(const std::uint64_t* data, std::size_t words);  // words % 32 == 0

// AVX-VNNI: vpdpbusd on ymm (32 u8 × s8 products per instruction).
constexpr double kInt8AvxVnniOpsPerStep = kFmaAccumulators * 32 * 2.0;
std::int32_t int8_dot_avxvnni(long steps, int seed);

// AVX-512F (zmm).
constexpr double kF32Avx512FlopPerStep = kFmaAccumulators * 16 * 2.0;
float fma_f32_avx512(long steps, float a, float b);
constexpr double kF64Avx512FlopPerStep = kFmaAccumulators * 8 * 2.0;
double fma_f64_avx512(long steps, double a, double b);

// AVX-512 VNNI: vpdpbusd on zmm (64 products per instruction).
constexpr double kInt8Avx512VnniOpsPerStep = kFmaAccumulators * 64 * 2.0;
std::int32_t int8_dot_avx512vnni(long steps, int seed);

}  // namespace qround::bench::limits
