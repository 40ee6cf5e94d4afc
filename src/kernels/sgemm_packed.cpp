// Packing and dispatch of the packed float GEMM (generic flags).
#include "sgemm_packed.hpp"

#include <cstdlib>
#include <cstring>

namespace qround::kernels {

void sgemm_pack_b(long k, long n, const float* b, long row_stride, long col_stride,
                  float* packed) noexcept {
  const long panels = (n + kSgemmNr - 1) / kSgemmNr;
  float* out = packed;
  for (long p0 = 0; p0 < k; p0 += kSgemmKc) {
    const long kc = k - p0 < kSgemmKc ? k - p0 : kSgemmKc;
    for (long j = 0; j < panels; ++j) {
      const long j0 = j * kSgemmNr;
      const long nr = n - j0 < kSgemmNr ? n - j0 : kSgemmNr;
      for (long p = 0; p < kc; ++p) {
        const float* src = b + (p0 + p) * row_stride + j0 * col_stride;
        for (long jj = 0; jj < nr; ++jj) out[jj] = src[jj * col_stride];
        for (long jj = nr; jj < kSgemmNr; ++jj) out[jj] = 0.0f;
        out += kSgemmNr;
      }
    }
  }
}

namespace {

using SgemmFn = void (*)(long, long, long, const float*, long, const float*, float*, long,
                         float*) noexcept;

struct Choice {
  SgemmFn fn;
  const char* name;
};

Choice choose() {
#ifdef QROUND_HAVE_AVX512VNNI
  const char* env = std::getenv("QROUND_ISA");
  const bool forced_down = env != nullptr && std::strcmp(env, "avx512vnni") != 0;
  // __builtin_cpu_supports checks the OS-enabled state (XCR0) for AVX-512 as well.
  if (!forced_down && __builtin_cpu_supports("avx512f")) return {sgemm_packed_avx512, "avx512"};
#endif
  return {sgemm_packed_scalar, "scalar"};
}

const Choice& chosen() {
  static const Choice c = choose();
  return c;
}

}  // namespace

void sgemm_packed(long m, long n, long k, const float* a, long lda, const float* packed_b,
                  float* c, long ldc, float* workspace) noexcept {
  chosen().fn(m, n, k, a, lda, packed_b, c, ldc, workspace);
}

const char* sgemm_packed_isa() noexcept { return chosen().name; }

bool use_avx512() noexcept { return chosen().fn != sgemm_packed_scalar; }

}  // namespace qround::kernels
