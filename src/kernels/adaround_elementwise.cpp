// AdaRound elementwise kernels for the baseline ISA, and the dispatch.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "adaround_elementwise_impl.hpp"
#include "sgemm_packed.hpp"

namespace qround::kernels {

void adaround_soft_pass_scalar(const SoftPassArgs& a) noexcept { impl::soft_pass(a); }
void adaround_grad_pass_scalar(const GradPassArgs& a) noexcept { impl::grad_pass(a); }

void adaround_soft_pass(const SoftPassArgs& a) noexcept {
#ifdef QROUND_HAVE_AVX512VNNI
  if (use_avx512()) return adaround_soft_pass_avx512(a);
#endif
  adaround_soft_pass_scalar(a);
}

void adaround_grad_pass(const GradPassArgs& a) noexcept {
#ifdef QROUND_HAVE_AVX512VNNI
  if (use_avx512()) return adaround_grad_pass_avx512(a);
#endif
  adaround_grad_pass_scalar(a);
}

}  // namespace qround::kernels
