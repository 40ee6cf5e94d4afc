// Internal: the kernel pair (int8 container, int4 container) of one ISA.
#pragma once

#include "params.hpp"
#include "qround/isa.hpp"

namespace qround::kernels {

struct KernelPair {
  QgemmKernel int8;
  QgemmKernel int4;
};

// The kernels of `isa`; an ISA that is not compiled in falls back to scalar (callers pass
// active_isa(), which is always compiled and supported).
KernelPair kernels_for(Isa isa);

}  // namespace qround::kernels
