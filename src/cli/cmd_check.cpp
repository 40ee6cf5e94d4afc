// `qround check`: the inference check on one layer quantized by `qround quantize`. Packs the codes,
// runs the kernel on the inputs, and compares with the float simulation and the float layer.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "qround/check.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/io/gguf.hpp"
#include "qround/error.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/packed.hpp"

namespace qround::cli {
namespace {

constexpr const char* kHelp = R"(usage: qround check --weights W.npy --inputs X.npy --quantized DIR
                    [--act-bits 8|32] [--threads T] [--json]

  --weights    the float weights, out × in (.npy)
  --inputs     inputs to run, tokens × in (.npy)
  --quantized  a directory written by `qround quantize` (codes.npy, scales.npy, zeros.npy,
               report.json, exponent.npy for NUPES); written with --format, its layer.gguf is
               dequantized as ggml does and compared bit for bit with dequant.npy (exit 1 if any
               level differs)
  --act-bits   8 (default): integer path, activations quantized per token to int8;
               32: float-activation path (needed for NUPES grids)
  --json       print {"isa", "act_bits", "sqnr_int_vs_sim_db", "sqnr_int_vs_float_db",
               "sqnr_sim_vs_float_db", "max_abs_err", "rel_err"}; an infinite SQNR (bit-identical
               outputs) is written as null

The simulation models both quantizations (weights on their grid, activations fake-quantized per
token like the kernel) in double; the integer path must match it to float rounding (≳ 100 dB).
Exit codes: 0 ok, 1 runtime error, 2 usage error.
)";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The quantized layer `qround quantize` wrote into `dir`, for weights of shape rows × cols.
QuantizedLayer read_quantized(const std::string& dir, Index rows, Index cols) {
  const std::filesystem::path d(dir);
  const json::Value report = json::parse(read_text((d / "report.json").string()));
  QuantizedLayer q;
  q.codes = io::load_npy_i8((d / "codes.npy").string());
  Grid& g = q.grid;
  g.bits = static_cast<int>(report.at("bits").as_int(2, 8));
  g.symmetric = report.at("symmetric").as_bool();
  const std::int64_t group = report.at("group_size").as_int(0, std::int64_t{1} << 40);
  g.rows = q.codes.rows();
  g.cols = q.codes.cols();
  g.group_size = group == 0 ? g.cols : std::min<Index>(group, g.cols);
  g.granularity = group == 0 ? Granularity::kPerRow : Granularity::kPerGroup;
  g.scales = io::load_npy_f32((d / "scales.npy").string());
  g.zeros = io::load_npy_i32((d / "zeros.npy").string());
  // 8-bit symmetric codes reach the int8 kernels only if restricted to ±127; the packer names
  // any −128 it finds.
  g.restricted = g.symmetric && q.codes.size() > 0 && q.codes.minCoeff() > g.qmin();
  const auto exponent_path = d / "exponent.npy";
  if (std::filesystem::exists(exponent_path)) {
    const MatrixF e = io::load_npy_f32(exponent_path.string());
    g.exponent = Eigen::Map<const VectorF>(e.data(), e.size());
  }
  if (q.codes.rows() != rows || q.codes.cols() != cols)
    throw InvalidArgument(fmt::format("{}: codes are {}×{} but the weights are {}×{}", dir,
                                      q.codes.rows(), q.codes.cols(), rows, cols));
  g.validate(rows, cols);
  q.report.bits = g.bits;
  q.report.symmetric = g.symmetric;
  q.report.group_size = group;
  return q;
}

json::Value db(double v) { return std::isfinite(v) ? json::Value(v) : json::Value(nullptr); }

double sqnr_db(const MatrixF& ref, const MatrixF& x) {
  double signal = 0, noise = 0;
  for (Index i = 0; i < ref.size(); ++i) {
    signal += double(ref.data()[i]) * ref.data()[i];
    const double e = double(ref.data()[i]) - x.data()[i];
    noise += e * e;
  }
  return noise == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(signal / noise);
}

// A layer written with --format: the GGUF blocks, dequantized as ggml does, must equal the
// simulated weights (dequant.npy) bit for bit; exit 1 if not.
int check_format_dir(const std::string& dir, const json::Value& report, const MatrixF& w,
                     bool as_json) {
  const std::filesystem::path d(dir);
  const GgmlType type = parse_ggml_type(report.at("format").as_string());
  const io::GgufFile gguf = io::read_gguf((d / "layer.gguf").string());
  const io::GgufTensor& t = gguf.tensor("weight");
  if (t.type != type || t.rows() != w.rows() || t.cols() != w.cols())
    throw IoError(fmt::format("{}: tensor 'weight' is {} {}×{}, expected {} {}×{}",
                              (d / "layer.gguf").string(), to_string(t.type), t.rows(), t.cols(),
                              to_string(type), w.rows(), w.cols()));
  const MatrixF engine = dequantize_ggml(type, t.data(), t.bytes(), w.rows(), w.cols());
  const MatrixF simulated = io::load_npy_f32((d / "dequant.npy").string());
  if (simulated.rows() != w.rows() || simulated.cols() != w.cols())
    throw IoError(fmt::format("{}: dequant.npy is {}×{}, expected {}×{}", dir, simulated.rows(),
                              simulated.cols(), w.rows(), w.cols()));
  Index differ = 0;
  for (Index i = 0; i < engine.size(); ++i)
    differ += float_bits(engine.data()[i]) != float_bits(simulated.data()[i]) ? 1 : 0;
  const MatrixI8 codes = io::load_npy_i8((d / "codes.npy").string());
  const QuantizedLayer decoded = decode_ggml_codes(type, t.data(), t.bytes(), w.rows(), w.cols());
  const bool codes_equal = decoded.codes == codes;
  const double sim_db = sqnr_db(w, simulated);
  if (as_json) {
    json::Value v = json::Value::object();
    v.set("format", to_string(type));
    v.set("gguf_levels_equal_simulated", differ == 0);
    v.set("differing_levels", static_cast<long long>(differ));
    v.set("gguf_codes_equal", codes_equal);
    v.set("sqnr_sim_vs_float_db", db(sim_db));
    fmt::print("{}\n", json::dump(v));
  } else {
    fmt::print("{}×{} layer in format {} ({:.4g} bits per weight)\n", w.rows(), w.cols(),
               to_string(type), ggml_traits(type).bits_per_weight());
    fmt::print("GGUF levels (ggml dequantization) {} the simulated weights: {} of {} differ\n",
               differ == 0 ? "equal" : "DIFFER from", differ, engine.size());
    fmt::print("GGUF codes {} codes.npy; simulation vs the float weights: {:.2f} dB\n",
               codes_equal ? "equal" : "DIFFER from", sim_db);
  }
  return differ == 0 && codes_equal ? 0 : 1;
}

}  // namespace

int run_check(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  const std::string weights_path = args.take_required("weights");
  const std::string inputs_path = args.take_required("inputs");
  const std::string dir = args.take_required("quantized");
  CheckOptions options;
  options.act_bits = args.take_int("act-bits", 8, 8, 32);
  if (options.act_bits != 8 && options.act_bits != 32)
    throw UsageError(fmt::format("--act-bits {}: expected 8 or 32", options.act_bits));
  options.qgemm.threads = take_threads(args);
  const bool as_json = args.take_flag("json");
  args.finish();

  const MatrixF w = io::load_npy_f32(weights_path);
  const MatrixF x = io::load_npy_f32(inputs_path);
  if (x.cols() != w.cols())
    throw InvalidArgument(
        fmt::format("{} is {}×{} but the weights have {} inputs (expected "
                    "tokens × {})",
                    inputs_path, x.rows(), x.cols(), w.cols(), w.cols()));
  const std::filesystem::path d(dir);
  const json::Value report = json::parse(read_text((d / "report.json").string()));
  if (report.find("format") != nullptr) return check_format_dir(dir, report, w, as_json);
  const QuantizedLayer layer = read_quantized(dir, w.rows(), w.cols());
  const PackedMatrix packed(layer);
  const CheckResult r = check(packed, layer, x, w, options);

  if (as_json) {
    json::Value v = json::Value::object();
    v.set("isa", to_string(r.isa));
    v.set("act_bits", r.act_bits);
    v.set("container", to_string(packed.container()));
    v.set("sqnr_int_vs_sim_db", db(r.sqnr_int_vs_sim_db));
    v.set("sqnr_int_vs_float_db", db(r.sqnr_int_vs_float_db));
    v.set("sqnr_sim_vs_float_db", db(r.sqnr_sim_vs_float_db));
    v.set("max_abs_err", r.max_abs_err);
    v.set("rel_err", r.rel_err);
    fmt::print("{}\n", json::dump(v));
  } else {
    fmt::print(
        "{}×{} layer, {} tokens, {}-bit weights in the {} container, {} activations, "
        "kernels: {}\n",
        r.rows, r.cols, r.tokens, layer.grid.bits, to_string(packed.container()),
        r.act_bits == 8 ? "int8" : "f32", to_string(r.isa));
    fmt::print(
        "kernel vs simulation: SQNR {:.1f} dB, max abs error {:.3g}, relative error {:.3g}\n",
        r.sqnr_int_vs_sim_db, r.max_abs_err, r.rel_err);
    fmt::print("vs the float layer:   kernel {:.2f} dB, simulation {:.2f} dB\n",
               r.sqnr_int_vs_float_db, r.sqnr_sim_vs_float_db);
  }
  return 0;
}

}  // namespace qround::cli
