// Packing and dispatch of the packed float GEMM (generic flags).
#include "sgemm_packed.hpp"

#include "qround/isa.hpp"

namespace qround::kernels {
namespace {

using SgemmFn = void (*)(long, long, long, const float*, long, const float*, float*, long,
                         float*) noexcept;

struct SgemmChoice {
  SgemmFn fn;
  const char* name;
};

// The kernel for each qround::Isa (indexed by its value), fixed at compile time: a float path is
// keyed on AVX2+FMA (Isa::kAvx2 implies both) or AVX-512F; an ISA that is not compiled in uses the
// next narrower kernel. active_isa() is only ever an ISA this CPU and OS support.
constexpr SgemmChoice kScalarChoice{sgemm_packed_scalar, "scalar"};
#ifdef QROUND_HAVE_AVX2
constexpr SgemmChoice kAvx2Choice{sgemm_packed_avx2, "avx2"};
#else
constexpr SgemmChoice kAvx2Choice = kScalarChoice;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
constexpr SgemmChoice kAvx512Choice{sgemm_packed_avx512, "avx512"};
#else
constexpr SgemmChoice kAvx512Choice = kAvx2Choice;
#endif
constexpr SgemmChoice kByIsa[] = {kScalarChoice, kAvx2Choice, kAvx512Choice};
static_assert(static_cast<int>(Isa::kScalar) == 0 && static_cast<int>(Isa::kAvx2) == 1 &&
                  static_cast<int>(Isa::kAvx512Vnni) == 2,
              "kByIsa is indexed by Isa");

const SgemmChoice& choice() noexcept { return kByIsa[static_cast<int>(active_isa())]; }

}  // namespace

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

bool use_avx512() noexcept {
#ifdef QROUND_HAVE_AVX512VNNI
  // The project-wide choice (CPU and OS support, QROUND_ISA, scoped overrides in tests).
  return active_isa() == Isa::kAvx512Vnni;
#else
  return false;
#endif
}

void sgemm_packed(long m, long n, long k, const float* a, long lda, const float* packed_b,
                  float* c, long ldc, float* workspace) noexcept {
  choice().fn(m, n, k, a, lda, packed_b, c, ldc, workspace);
}

const char* sgemm_packed_isa() noexcept { return choice().name; }

}  // namespace qround::kernels
