// Runtime ISA detection and the kernel table.
#include "dispatch.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qround/error.hpp"
#include "qround/isa.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define QROUND_X86_CPUID 1
#endif

namespace qround {
namespace {

#ifdef QROUND_X86_CPUID
struct CpuFeatures {
  bool avx2 = false;
  bool avx512vnni = false;
};

std::uint64_t read_xcr0() {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1,
             f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1,
             avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512vnni = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl && vnni;
  return f;
}
#endif

bool cpu_can_run(Isa isa) {
  if (isa == Isa::kScalar) return true;
#ifdef QROUND_X86_CPUID
  static const CpuFeatures f = detect();
  return isa == Isa::kAvx2 ? f.avx2 : f.avx512vnni;
#else
  return false;
#endif
}

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
#ifdef QROUND_HAVE_AVX2
      return true;
#else
      return false;
#endif
    case Isa::kAvx512Vnni:
#ifdef QROUND_HAVE_AVX512VNNI
      return true;
#else
      return false;
#endif
  }
  return false;
}

constexpr Isa kAll[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni};

Isa best_supported() {
  Isa best = Isa::kScalar;
  for (Isa isa : kAll)
    if (isa_supported(isa)) best = isa;
  return best;
}

Isa initial_choice() {
  const Isa best = best_supported();
  const char* env = std::getenv("QROUND_ISA");
  if (env == nullptr || *env == '\0') return best;
  try {
    const Isa wanted = parse_isa(env);
    if (isa_supported(wanted)) return wanted;
    std::fprintf(stderr, "qround: warning: QROUND_ISA=%s is %s here; using %s\n", env,
                 compiled(wanted) ? "not supported by this CPU" : "not compiled into this build",
                 to_string(best));
  } catch (const InvalidArgument&) {
    std::fprintf(stderr,
                 "qround: warning: QROUND_ISA=%s is unknown (expected scalar, avx2 or "
                 "avx512vnni); using %s\n",
                 env, to_string(best));
  }
  return best;
}

constexpr int kNoOverride = -1;
std::atomic<int> g_override{kNoOverride};

}  // namespace

const char* to_string(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
  }
  return "unknown";
}

Isa parse_isa(std::string_view name) {
  for (Isa isa : kAll)
    if (name == to_string(isa)) return isa;
  throw InvalidArgument(fmt::format("unknown ISA '{}': expected scalar, avx2 or avx512vnni", name));
}

std::vector<Isa> compiled_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAll)
    if (compiled(isa)) out.push_back(isa);
  return out;
}

bool isa_supported(Isa isa) { return compiled(isa) && cpu_can_run(isa); }

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAll)
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa active_isa() {
  const int forced = g_override.load(std::memory_order_acquire);
  if (forced != kNoOverride) return static_cast<Isa>(forced);
  static const Isa chosen = initial_choice();
  return chosen;
}

ScopedIsaOverride::ScopedIsaOverride(Isa isa) {
  if (!isa_supported(isa))
    throw InvalidArgument(fmt::format(
        "cannot force ISA {}: {}", to_string(isa),
        compiled(isa) ? "this CPU does not support it" : "it is not compiled into this build"));
  previous_ = g_override.exchange(static_cast<int>(isa), std::memory_order_acq_rel);
}

ScopedIsaOverride::~ScopedIsaOverride() { g_override.store(previous_, std::memory_order_release); }

namespace kernels {

KernelPair kernels_for(Isa isa) {
  switch (isa) {
#ifdef QROUND_HAVE_AVX512VNNI
    case Isa::kAvx512Vnni:
      return {qgemm_int8_avx512vnni, qgemm_int4_avx512vnni};
#endif
#ifdef QROUND_HAVE_AVX2
    case Isa::kAvx2:
      return {qgemm_int8_avx2, qgemm_int4_avx2};
#endif
    default:
      return {qgemm_int8_scalar, qgemm_int4_scalar};
  }
}

}  // namespace kernels
}  // namespace qround
