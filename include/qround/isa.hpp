// Instruction-set selection for the integer kernels. The active ISA is the best of (compiled into
// this build) ∩ (supported by the CPU, including the OS having enabled the register state via
// XCR0), chosen once on first use.
//
// Override with the environment variable QROUND_ISA=scalar|avx2|avx512vnni (read once). A name that
// is unknown, not compiled or not supported here is not fatal: a one-line warning goes to stderr
// and the automatic choice is used instead (a packed file must keep working on any CPU).
// Tests use ScopedIsaOverride, which throws InvalidArgument for an ISA this machine cannot run.
// AMX is not implemented (the development CPU has none); Isa has no AMX member yet.
#pragma once

#include <string_view>
#include <vector>

namespace qround {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };

const char* to_string(Isa isa);        // "scalar" | "avx2" | "avx512vnni"
Isa parse_isa(std::string_view name);  // throws InvalidArgument for an unknown name

std::vector<Isa> compiled_isas();   // kernels present in this build
std::vector<Isa> supported_isas();  // compiled ∩ what this CPU and OS can run, best last
bool isa_supported(Isa isa);
Isa active_isa();  // what qgemm uses now (scoped override > env > automatic)

// Forces `isa` for the lifetime of the object (tests, benchmarks). Not thread-safe against
// concurrent qgemm calls that started before it; nesting restores the previous choice.
class ScopedIsaOverride {
 public:
  explicit ScopedIsaOverride(Isa isa);
  ~ScopedIsaOverride();
  ScopedIsaOverride(const ScopedIsaOverride&) = delete;
  ScopedIsaOverride& operator=(const ScopedIsaOverride&) = delete;

 private:
  int previous_;
};

}  // namespace qround
