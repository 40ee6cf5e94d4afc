// The attention kernels for the baseline ISA, and the dispatch.
#include "attention.hpp"

#include "attention_impl.hpp"
#include "qround/isa.hpp"

namespace qround::kernels {
namespace {

struct AttentionChoice {
  void (*forward)(const AttentionForwardArgs&) noexcept;
  void (*backward)(const AttentionBackwardArgs&) noexcept;
  const char* name;
};

// Indexed by qround::Isa; an ISA that is not compiled in uses the next narrower path.
constexpr AttentionChoice kScalarChoice{attention_forward_scalar, attention_backward_scalar,
                                        "scalar"};
#ifdef QROUND_HAVE_AVX2
constexpr AttentionChoice kAvx2Choice{attention_forward_avx2, attention_backward_avx2, "avx2"};
#else
constexpr AttentionChoice kAvx2Choice = kScalarChoice;
#endif
#ifdef QROUND_HAVE_AVX512VNNI
constexpr AttentionChoice kAvx512Choice{attention_forward_avx512, attention_backward_avx512,
                                        "avx512"};
#else
constexpr AttentionChoice kAvx512Choice = kAvx2Choice;
#endif
constexpr AttentionChoice kByIsa[] = {kScalarChoice, kAvx2Choice, kAvx512Choice};
static_assert(static_cast<int>(Isa::kScalar) == 0 && static_cast<int>(Isa::kAvx2) == 1 &&
                  static_cast<int>(Isa::kAvx512Vnni) == 2,
              "kByIsa is indexed by Isa");

const AttentionChoice& choice() noexcept { return kByIsa[static_cast<int>(active_isa())]; }

}  // namespace

void attention_forward_scalar(const AttentionForwardArgs& a) noexcept { impl::forward(a); }
void attention_backward_scalar(const AttentionBackwardArgs& a) noexcept { impl::backward(a); }

void attention_forward(const AttentionForwardArgs& a) noexcept { choice().forward(a); }
void attention_backward(const AttentionBackwardArgs& a) noexcept { choice().backward(a); }
const char* attention_isa() noexcept { return choice().name; }

}  // namespace qround::kernels
