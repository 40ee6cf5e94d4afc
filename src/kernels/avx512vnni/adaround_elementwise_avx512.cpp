// AdaRound elementwise kernels at AVX-512 width (the shared bodies, vectorised by the compiler).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "../adaround_elementwise_impl.hpp"

namespace qround::kernels {

void adaround_soft_pass_avx512(const SoftPassArgs& a) noexcept { impl::soft_pass(a); }
void adaround_grad_pass_avx512(const GradPassArgs& a) noexcept { impl::grad_pass(a); }

}  // namespace qround::kernels
