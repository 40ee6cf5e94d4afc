#include <fmt/format.h>

#include "args.hpp"
#include "commands.hpp"
#include "qround/detail/dense.hpp"
#include "qround/isa.hpp"
#include "qround/round_layer.hpp"
#include "qround/version.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround::cli {

int run_info(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("usage: qround info\n\nPrints the version, the SIMD paths compiled in and "
               "detected on this CPU, and the thread count.\n");
    return 0;
  }
  Args args(argc, argv);
  args.finish();
  fmt::print("qround {}\n", version());
#ifdef _OPENMP
  fmt::print("threads: {} (OpenMP; set OMP_NUM_THREADS or --threads to change)\n",
             omp_get_max_threads());
#else
  fmt::print("threads: 1 (built without OpenMP)\n");
#endif
  auto names = [](const std::vector<Isa>& isas) {
    std::string s;
    for (Isa isa : isas) s += fmt::format("{}{}", s.empty() ? "" : " ", to_string(isa));
    return s;
  };
  fmt::print("isa: {} (active; QROUND_ISA=scalar|avx2|avx512vnni overrides)\n",
             to_string(active_isa()));
  fmt::print("  compiled: {}\n", names(compiled_isas()));
  fmt::print("  supported: {}\n", names(supported_isas()));
  fmt::print("dense float kernel: {}\n", detail::dense_kernel_name());
  std::string methods;
  for (Method m : available_methods()) methods += fmt::format("{}{}", methods.empty() ? "" : " ",
                                                              to_string(m));
  fmt::print("methods: {}\n", methods);
  return 0;
}

}  // namespace qround::cli
