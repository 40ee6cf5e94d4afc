// `qround demo`: the embedded default job. An LLM-like synthetic layer (correlated inputs with a few
// outlier channels, weights with rare large values) rounded by every available method at 4, 3 and
// 2 bits; a table of relative reconstruction loss and time.
#include <fmt/format.h>

#include "args.hpp"
#include "commands.hpp"
#include "progress.hpp"
#include "qround/round_layer.hpp"
#include "qround/synthetic.hpp"

namespace qround::cli {

int run_demo(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print(
        "usage: qround demo [--out N] [--in N] [--tokens N] [--group-size G] [--seed S]\n"
        "                   [--iterations N] [--quiet]\n\n"
        "Builds an LLM-like synthetic layer and rounds it with every available method at 4, 3\n"
        "and 2 bits (asymmetric, group size G, default 64), printing relative loss and time.\n");
    return 0;
  }
  Args args(argc, argv);
  SyntheticLayerOptions layer_options;
  layer_options.out = args.take_int("out", 128, 1, 1 << 16);
  layer_options.in = args.take_int("in", 256, 1, 1 << 16);
  layer_options.tokens = args.take_int("tokens", 1024, 1, 1 << 22);
  layer_options.seed = static_cast<std::uint64_t>(args.take_int("seed", 7, 0, 1 << 30));
  const int group_size = args.take_int("group-size", 64, 0, 1 << 16);
  const int iterations = args.take_int("iterations", -1, -1, 1 << 30);
  const bool quiet = args.take_flag("quiet");
  args.finish();

  const SyntheticLayer layer = make_synthetic_layer(layer_options);
  LayerProblem problem(layer.weights);
  problem.add_batch(layer.inputs);

  fmt::print("LLM-like layer: {} out × {} in, {} calibration tokens, group size {}\n\n",
             layer_options.out, layer_options.in, layer_options.tokens,
             group_size == 0 ? std::string("per row") : std::to_string(group_size));
  fmt::print("{:<10} {:>4} {:>14} {:>14} {:>9} {:>9}\n", "method", "bits", "relative loss",
             "RTN rel. loss", "vs RTN", "seconds");
  fmt::print("{}\n", std::string(65, '-'));
  for (int bits : {4, 3, 2}) {
    for (Method method : available_methods()) {
      RoundLayerOptions options;
      options.method = method;
      options.grid = GridSpec::with_group_size(bits, group_size);
      options.iterations = iterations;
      ProgressBar bar(quiet);
      const QuantizedLayer q = round_layer(problem, options, bar.callback());
      bar.finish();
      const auto& r = q.report;
      fmt::print("{:<10} {:>4} {:>14.6f} {:>14.6f} {:>8.1f}% {:>9.3f}\n", r.method, bits,
                 r.relative_loss, r.relative_loss_rtn,
                 r.loss_rtn > 0 ? 100.0 * r.loss / r.loss_rtn : 100.0, r.seconds);
    }
  }
  return 0;
}

}  // namespace qround::cli
