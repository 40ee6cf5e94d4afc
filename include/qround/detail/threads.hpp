// Thread count for an OpenMP region: the caller's request, or OpenMP's default when it is 0.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround::detail {

inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Whether a parallel region over row blocks of a Hessian-form step (rows × cols × cols multiply-adds)
// is worth waking threads for; tiny layers run faster serially, with identical results.
inline bool worth_parallel(long long rows, long long cols) { return rows * cols * cols >= (1LL << 20); }

}  // namespace qround::detail
