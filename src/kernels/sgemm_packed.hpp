// Float GEMM against a pre-packed right-hand side: C (m × n) = A (m × k) · B (k × n), A and C
// row-major. B is packed once (it is reused for many A's: AdaRound's Hessian for every row block
// and iteration, a minibatch for every row block) into panels of kSgemmNr columns, kSgemmKc rows at
// a time:
//   for each k-block p0 = 0, Kc, 2Kc, … (kc = min(Kc, k − p0) rows):
//     for each panel j (columns j·Nr … j·Nr + Nr − 1, zero-padded past n):
//       kc × Nr floats, row-major
// POD-only header: included by the per-ISA kernel TUs (no Eigen, no STL there).
#pragma once

#include <cstddef>

namespace qround::kernels {

constexpr long kSgemmNr = 32;  // columns per packed panel (two 16-float AVX-512 vectors)
constexpr long kSgemmKc = 256; // rows of B per packed block (one panel: 32 KiB, stays in L1)
constexpr long kSgemmMr = 12;  // rows of A per micro-tile
constexpr long kSgemmMc = 96;  // rows of A packed at a time (96 × 256 floats: 96 KiB, in L2)

// Floats needed to pack a k × n right-hand side.
inline std::size_t sgemm_packed_b_size(long k, long n) {
  return static_cast<std::size_t>(k) * static_cast<std::size_t>((n + kSgemmNr - 1) / kSgemmNr) *
         static_cast<std::size_t>(kSgemmNr);
}
// Floats of workspace sgemm_packed needs (one packed block of A).
constexpr std::size_t kSgemmWorkspace = static_cast<std::size_t>(kSgemmMc) * kSgemmKc;

// Packs B(p, j) = b[p·row_stride + j·col_stride] (any layout, e.g. a transpose) into `packed`.
void sgemm_pack_b(long k, long n, const float* b, long row_stride, long col_stride,
                  float* packed) noexcept;

// C = A · B with B packed by sgemm_pack_b; `workspace` holds kSgemmWorkspace floats (64-byte
// aligned is best). Single-threaded: callers parallelise over row blocks of A / C. The summation
// order depends only on k, so a row's result is the same whichever block it is computed in.
void sgemm_packed(long m, long n, long k, const float* a, long lda, const float* packed_b,
                  float* c, long ldc, float* workspace) noexcept;

// The implementations behind sgemm_packed (exposed for tests and benchmarks).
void sgemm_packed_scalar(long m, long n, long k, const float* a, long lda, const float* packed_b,
                         float* c, long ldc, float* workspace) noexcept;
#ifdef QROUND_HAVE_AVX2
void sgemm_packed_avx2(long m, long n, long k, const float* a, long lda, const float* packed_b,
                       float* c, long ldc, float* workspace) noexcept;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
void sgemm_packed_avx512(long m, long n, long k, const float* a, long lda, const float* packed_b,
                         float* c, long ldc, float* workspace) noexcept;
#endif
// Whether the AVX-512 kernels run: compiled in and qround::active_isa() is avx512vnni (CPU and OS
// support, QROUND_ISA, ScopedIsaOverride).
bool use_avx512() noexcept;
// Name of the implementation sgemm_packed uses now ("avx512", "avx2" or "scalar"): the widest
// compiled kernel no wider than qround::active_isa() (CPU and OS support, QROUND_ISA, scoped
// overrides); the choice per ISA is made once, a call only reads the active ISA.
const char* sgemm_packed_isa() noexcept;

}  // namespace qround::kernels
