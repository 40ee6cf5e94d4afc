// `qround quantize`: one layer, one method. Reads the weights and calibration inputs from .npy,
// rounds, and writes codes / scales / zero points / dequantized weights / a JSON report into a
// directory — all or nothing (written into a temporary sibling, then renamed into place).
#include <fmt/format.h>

#include <filesystem>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "grid_args.hpp"
#include "output_dir.hpp"
#include "progress.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/round_layer.hpp"
#include "qround/io/report.hpp"

namespace qround::cli {

namespace {

constexpr const char* kHelp =
    R"(usage: qround quantize --weights W.npy --inputs X.npy [--inputs X2.npy ...]
                       [--target-inputs XF.npy ...] --bits B [--group-size G] [--symmetric]
                       [--scale-search minmax|mse|hessian] [--format TYPE] [--method M] [--iterations N]
                       [--seed S] [--threads T] [--max-memory SIZE]
                       [--imatrix FILE [--imatrix-tensor NAME]]
                       [--quiet] --out DIR [method options]

  --weights        float weights, out × in (.npy f32/f16/f64)
  --inputs         calibration inputs the layer sees, tokens × in; repeat for more batches
  --target-inputs  inputs the float layer saw (asymmetric target), one per --inputs batch
  --bits           2..8 (default 4)
  --group-size     inputs sharing a scale; 0 = per row (default 128)
  --symmetric      symmetric grid (default asymmetric with zero points)
  --scale-search   minmax (default), mse, hessian (the default with --format)
  --format         a llama.cpp storage type: q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k
                   iq4_nl (nearest and gptq only: its levels are a table).
                   Implies the bits, symmetry and group size (give them only if they agree); the
                   codes are optimised on exactly the type's levels and DIR/layer.gguf holds them
                   as the type's blocks (tensor "weight"), which llama.cpp dequantizes to
                   exactly dequant.npy
  --imatrix        a llama.cpp importance matrix (imatrix.gguf or legacy .dat): the scale search
                   weights each input by its mean x² from there instead of from --inputs (the
                   method itself still uses --inputs). Needs --scale-search hessian or --format
  --imatrix-tensor which entry of --imatrix (default: its only entry)
  --method         rounding method (default nearest; `qround info` lists them)
  --max-memory     refuse, before allocating, a layer whose Hessian (in² doubles) and copies need
                   more than SIZE bytes (e.g. 4G, 50%; default 80% of this process's memory, or
                   QROUND_MAX_MEMORY)
  --out            output directory: dequant.npy, codes.npy, scales.npy, zeros.npy, report.json
                   (+ offsets.npy and layer.gguf with --format)

Other --key value options are method settings (e.g. --lambda 0.01 for adaround); a setting the
method does not know is an error. Exit codes: 0 ok, 1 runtime error, 2 usage error.
)";

}  // namespace

int run_quantize(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  const std::string weights_path = args.take_required("weights");
  const std::vector<std::string> inputs = args.take_all("inputs");
  const std::vector<std::string> targets = args.take_all("target-inputs");
  RoundLayerOptions options;
  options.grid = take_grid_spec(args);
  const std::optional<std::string> imatrix_path = args.take("imatrix");
  const std::optional<std::string> imatrix_tensor = args.take("imatrix-tensor");
  if (imatrix_tensor && !imatrix_path) throw UsageError("--imatrix-tensor needs --imatrix FILE");
  if (imatrix_path && options.grid.search != ScaleSearch::kHessian)
    throw UsageError(fmt::format(
        "--imatrix weights the hessian scale search, but the search is {}: add --scale-search "
        "hessian (the default with --format)",
        to_string(options.grid.search)));
  const int bits = options.grid.bits;
  const int group_size =
      options.grid.granularity == Granularity::kPerGroup ? options.grid.group_size : 0;
  const std::string method = args.take("method").value_or("nearest");
  try {
    options.method = parse_method(method);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  options.iterations = args.take_int("iterations", -1, -1, 1 << 30);
  options.seed = static_cast<std::uint64_t>(args.take_int("seed", 0, 0, 2147483647));
  options.threads = take_threads(args);
  take_max_memory(args);
  const std::string out_dir = args.take_required("out");
  const bool quiet = args.take_flag("quiet");
  options.params = args.take_rest();
  if (inputs.empty()) throw UsageError("missing required option --inputs");
  try {
    validate(options);  // bad method settings are usage errors, found before any file is read
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  if (!targets.empty() && targets.size() != inputs.size())
    throw UsageError(fmt::format("{} --target-inputs for {} --inputs: give one per batch",
                                 targets.size(), inputs.size()));

  const MatrixF weights = io::load_npy_f32(weights_path);
  LayerProblemOptions problem_options;
  const auto mode = options.params.find("mode");
  problem_options.retain_activations =
      mode != options.params.end() && mode->second == "minibatch";
  LayerProblem problem(weights, problem_options);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const MatrixF x = io::load_npy_f32(inputs[i]);
    if (x.cols() != weights.cols())
      throw InvalidArgument(fmt::format("{} is {}×{} but the weights have {} inputs (expected "
                                        "tokens × {})",
                                        inputs[i], x.rows(), x.cols(), weights.cols(),
                                        weights.cols()));
    try {
      if (targets.empty()) {
        problem.add_batch(x);
      } else {
        const MatrixF xf = io::load_npy_f32(targets[i]);
        problem.add_batch(x, xf);
      }
    } catch (const NumericalError& e) {  // name the layer and the batch
      throw NumericalError(fmt::format("layer {}, {}: {}", weights_path, inputs[i], e.what()));
    }
  }

  if (imatrix_path) {
    const io::Imatrix imatrix = io::read_imatrix(*imatrix_path);
    std::string name;
    if (imatrix_tensor) {
      name = *imatrix_tensor;
    } else if (imatrix.entries.size() == 1) {
      name = imatrix.entries.front().name;
    } else {
      std::string names;
      for (const std::string& n : imatrix.names()) names += (names.empty() ? "" : ", ") + n;
      throw UsageError(fmt::format("{} has {} entries: choose one with --imatrix-tensor ({})",
                                   *imatrix_path, imatrix.entries.size(), names));
    }
    problem.set_scale_importance(imatrix.importance(name, weights.cols()));
  }

  ProgressBar bar(quiet);
  const QuantizedLayer q = round_layer(problem, options, bar.callback());
  bar.finish();

  json::Value report = io::to_json(q.report);
  report.set("rows", static_cast<long long>(weights.rows()));
  report.set("cols", static_cast<long long>(weights.cols()));
  report.set("tokens", static_cast<long long>(problem.tokens()));

  OutputDir out(out_dir);
  io::save_npy(out.path("dequant.npy"), q.dequantized());
  io::save_npy(out.path("codes.npy"), q.codes);
  io::save_npy(out.path("scales.npy"), q.grid.scales);
  io::save_npy(out.path("zeros.npy"), q.grid.zeros);
  if (!q.grid.is_uniform()) {
    MatrixF exponent = q.grid.exponent.transpose();
    io::save_npy(out.path("exponent.npy"), exponent);
  }
  if (q.grid.format) {
    report.set("format", to_string(*q.grid.format));
    if (q.grid.has_offsets()) io::save_npy(out.path("offsets.npy"), q.grid.offsets);
    const std::vector<std::uint8_t> blocks = encode_ggml(q);
    io::GgufFile gguf;
    io::set_standard_metadata(gguf, "qround-layer");
    gguf.set("general.name", io::GgufValue::string(std::filesystem::path(weights_path).stem().string()));
    gguf.add_tensor("weight", *q.grid.format, {weights.cols(), weights.rows()}, blocks.data(),
                    blocks.size());
    io::write_gguf(out.path("layer.gguf"), gguf);
  }
  out.write_text("report.json", json::dump(report) + "\n");
  out.commit();

  if (!quiet)
    fmt::print("{} {}-bit ({}): relative loss {:.6g} (RTN {:.6g}), {} iterations, {:.2f} s -> {}\n",
               q.report.method, bits, group_size == 0 ? std::string("per row")
                                                      : fmt::format("group {}", group_size),
               q.report.relative_loss, q.report.relative_loss_rtn, q.report.iterations,
               q.report.seconds, out_dir);
  return 0;
}

}  // namespace qround::cli
