// The attention kernels compiled for AVX-512 (-ffp-contract=off: the same bits as the baseline).
#include "../attention_impl.hpp"

namespace qround::kernels {

void attention_forward_avx512(const AttentionForwardArgs& a) noexcept { impl::forward(a); }
void attention_backward_avx512(const AttentionBackwardArgs& a) noexcept { impl::backward(a); }

}  // namespace qround::kernels
