// `qround plan`: mixed-precision bit allocation over the layers of a manifest. Measures every
// layer at every candidate bit width (or ggml storage format) with the chosen method, prints the
// Pareto front (storage → least summed sensitivity) and writes it, with the point chosen for
// --budget, to a JSON file (atomically).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "progress.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/mixed_precision.hpp"

namespace qround::cli {

namespace {

constexpr const char* kHelp =
    R"(usage: qround plan --layers manifest.json [--bits 2,3,4,8 | --formats q4_0,q4_k,q6_k]
                   [--method M] [--group-size G]
                   [--symmetric] [--scale-search minmax|mse|hessian] [--budget BPW | --budget-bytes N]
                   [--iterations N] [--seed S] [--threads T] [--max-memory SIZE] [--quiet]
                   --out plan.json [method options]

  --layers        {"layers": [{"name": ..., "weights": W.npy, "inputs": X.npy or [X1.npy, ...]}, ...]}
                  (relative paths are resolved against the manifest's folder)
  --bits          candidate bit widths, comma-separated (default 2,3,4,8; 8 bits is symmetric)
  --formats       candidate ggml storage formats instead, comma-separated (q4_0 q4_1 q5_0 q5_1
                  q8_0 q2_k q3_k q4_k q5_k q6_k); costs are every byte of their blocks, a layer
                  whose rows are not whole blocks of a format never gets it; --group-size and
                  --symmetric do not apply, --scale-search mse measures with hessian
  --method        rounding method measured at each width (default nearest)
  --group-size    inputs sharing a scale; 0 = per row (default 128)
  --budget        average bits per weight, scales and zero points included: picks "chosen"
  --budget-bytes  the same as a total size in bytes
  --max-memory    refuse, before allocating, a layer whose Hessian (in² doubles) needs more than
                  SIZE bytes (e.g. 4G, 50%; default 80% of this process's memory)
  --out           the plan: {"front": [{"bits_per_weight", "loss", "allocation": {name: bits}}],
                  "chosen": {...} or null}; with --formats the allocation maps names to formats
                  and "notes" lists the layers that cannot take a format

Sensitivity is each layer's relative reconstruction loss at that width; the front is exact (see
"exact" in the output). Other --key value options are method settings. Exit codes: 0 ok,
1 runtime error, 2 usage error.
)";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot open the manifest '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct ManifestLayer {
  std::string name, weights;
  std::vector<std::string> inputs;
};

std::vector<ManifestLayer> read_manifest(const std::string& path) {
  const json::Value root = json::parse(read_text(path));
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  auto resolve = [&](const json::Value& v) {
    const std::filesystem::path p(v.as_string());
    return (p.is_absolute() ? p : folder / p).string();
  };
  std::vector<ManifestLayer> layers;
  for (const json::Value& entry : root.at("layers").as_array()) {
    ManifestLayer layer;
    layer.name = entry.at("name").as_string();
    layer.weights = resolve(entry.at("weights"));
    const json::Value& inputs = entry.at("inputs");
    if (inputs.is_array()) {
      for (const json::Value& x : inputs.as_array()) layer.inputs.push_back(resolve(x));
    } else {
      layer.inputs.push_back(resolve(inputs));
    }
    if (layer.inputs.empty())
      throw IoError(fmt::format("{}: layer '{}' lists no inputs", path, layer.name));
    for (const ManifestLayer& other : layers)
      if (other.name == layer.name)
        throw IoError(fmt::format("{}: layer name '{}' appears twice", path, layer.name));
    layers.push_back(std::move(layer));
  }
  if (layers.empty()) throw IoError(fmt::format("{}: \"layers\" is empty", path));
  return layers;
}

LayerProblem load_problem(const ManifestLayer& layer) {
  LayerProblem problem(io::load_npy_f32(layer.weights));
  for (const std::string& path : layer.inputs) {
    const MatrixF x = io::load_npy_f32(path);
    if (x.cols() != problem.cols())
      throw InvalidArgument(fmt::format("layer '{}': {} is {}×{} but the weights have {} inputs",
                                        layer.name, path, x.rows(), x.cols(), problem.cols()));
    try {
      problem.add_batch(x);
    } catch (const NumericalError& e) {
      throw NumericalError(fmt::format("layer '{}', {}: {}", layer.name, path, e.what()));
    }
  }
  return problem;
}

// "q4_0,q4_k" → the formats; UsageError naming the bad item and the known names.
std::vector<GgmlType> parse_formats(const std::string& text) {
  std::vector<GgmlType> formats;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      formats.push_back(parse_ggml_type(item));
    } catch (const InvalidArgument& e) {
      throw UsageError(fmt::format("--formats: {}", e.what()));
    }
  }
  if (formats.empty())
    throw UsageError("--formats: no formats given (expected e.g. q4_0,q4_k,q6_k)");
  return formats;
}

json::Value point_json(const ParetoFront& front, const AllocationPoint& p) {
  json::Value v = json::Value::object();
  v.set("bits_per_weight", p.bits_per_weight);
  v.set("total_bytes", static_cast<double>(p.total_bits) / 8.0);
  v.set("loss", p.loss);
  json::Value allocation = json::Value::object();
  for (size_t i = 0; i < p.bits.size(); ++i) {
    if (p.formats[i])
      allocation.set(front.names[i], to_string(*p.formats[i]));
    else
      allocation.set(front.names[i], p.bits[i]);
  }
  v.set("allocation", std::move(allocation));
  return v;
}

// "2:3 4:11" (or "q4_0:3 q6_k:11"): how many layers got each candidate, in table order.
std::string histogram(const SensitivityTable& table, const AllocationPoint& p) {
  std::map<int, int> count;
  for (int j : p.choice) ++count[j];
  std::string out;
  for (const auto& [j, n] : count)
    out += fmt::format("{}{}:{}", out.empty() ? "" : " ", table.label(j), n);
  return out;
}

void print_front(const SensitivityTable& table, const ParetoFront& front,
                 const AllocationPoint* chosen) {
  constexpr size_t kMaxRows = 40;
  const size_t n = front.points.size();
  fmt::print("Pareto front: {} points over {} layers ({} weights){}\n", n, front.names.size(),
             front.total_weights,
             front.exact ? "" : fmt::format(", costs rounded to {} bits", front.cost_quantum_bits));
  fmt::print("{:>12} {:>14} {:>14}  {}\n", "bits/weight", "bytes", "loss", "layers per candidate");
  for (size_t i = 0; i < n; ++i) {
    const AllocationPoint& p = front.points[i];
    const bool shown = n <= kMaxRows || i == 0 || i + 1 == n || &p == chosen ||
                       (i * (kMaxRows - 1)) / (n - 1) != ((i - 1) * (kMaxRows - 1)) / (n - 1);
    if (!shown) continue;
    fmt::print("{:>12.4f} {:>14.0f} {:>14.6g}  {}{}\n", p.bits_per_weight, p.total_bits / 8.0,
               p.loss, histogram(table, p), &p == chosen ? "   <- chosen" : "");
  }
  if (n > kMaxRows) fmt::print("(a sample of the {} points; the plan file has them all)\n", n);
  if (chosen) {
    fmt::print("chosen: {:.4f} bits/weight, loss {:.6g}\n", chosen->bits_per_weight, chosen->loss);
    for (size_t i = 0; i < chosen->bits.size(); ++i) {
      if (chosen->formats[i])
        fmt::print("  {:<32} {}\n", front.names[i], to_string(*chosen->formats[i]));
      else
        fmt::print("  {:<32} {} bits\n", front.names[i], chosen->bits[i]);
    }
  }
  for (const std::string& note : table.notes) fmt::print("note: {}\n", note);
}

}  // namespace

int run_plan(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  const std::string manifest = args.take_required("layers");
  SensitivityOptions options;
  const auto bits_text = args.take("bits");
  const auto formats_text = args.take("formats");
  if (bits_text && formats_text) throw UsageError("give --bits or --formats, not both");
  if (formats_text)
    options.formats = parse_formats(*formats_text);
  else
    options.bits = parse_bit_widths("bits", bits_text.value_or("2,3,4,8"));
  const int group_size = args.take_int("group-size", 128, 0, 1 << 30);
  const bool symmetric = args.take_flag("symmetric");
  options.rounding.grid = GridSpec::with_group_size(4, group_size, symmetric);
  if (auto s = args.take("scale-search")) {
    try {
      options.rounding.grid.search = parse_scale_search(*s);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }
  try {
    options.rounding.method = parse_method(args.take("method").value_or("nearest"));
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  options.rounding.iterations = args.take_int("iterations", -1, -1, 1 << 30);
  options.rounding.seed = static_cast<std::uint64_t>(args.take_int("seed", 0, 0, 2147483647));
  options.rounding.threads = take_threads(args);
  take_max_memory(args);
  const auto budget_bpw = args.take("budget");
  const auto budget_bytes = args.take("budget-bytes");
  if (budget_bpw && budget_bytes) throw UsageError("give --budget or --budget-bytes, not both");
  std::optional<Budget> budget;
  if (budget_bpw || budget_bytes) {
    const std::string& text = budget_bpw ? *budget_bpw : *budget_bytes;
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(v > 0.0) || !std::isfinite(v))
      throw UsageError(fmt::format("--budget{}: '{}' is not a positive finite number",
                                   budget_bpw ? "" : "-bytes", text));
    budget = budget_bpw ? Budget::bits_per_weight(v) : Budget::total_bytes(v);
  }
  const std::string out_path = args.take_required("out");
  const bool quiet = args.take_flag("quiet");
  options.rounding.params = args.take_rest();
  try {
    options.validate();
    validate(options.rounding);  // method settings too: an unknown one is a usage error
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }

  const std::vector<ManifestLayer> manifest_layers = read_manifest(manifest);
  std::vector<LayerSource> sources;
  for (const ManifestLayer& layer : manifest_layers)
    sources.push_back({layer.name, [layer] { return load_problem(layer); }});

  ProgressBar bar(quiet);
  const SensitivityTable table = measure_sensitivity(sources, options, bar.callback());
  bar.finish();
  const ParetoFront front = pareto_front(table);
  const AllocationPoint* chosen = budget ? &choose(front, *budget) : nullptr;

  json::Value plan = json::Value::object();
  plan.set("method", to_string(options.rounding.method));
  plan.set("group_size", group_size);
  plan.set("symmetric", symmetric);
  json::Value bits = json::Value::array();
  for (int b : table.bits) bits.push_back(b);
  plan.set("bits", std::move(bits));
  json::Value labels = json::Value::array();
  for (Index j = 0; j < static_cast<Index>(table.bits.size()); ++j)
    labels.push_back(table.label(j));
  plan.set("candidates", std::move(labels));
  plan.set("total_weights", static_cast<double>(front.total_weights));
  plan.set("exact", front.exact);
  json::Value sensitivity = json::Value::object();
  for (size_t i = 0; i < table.names.size(); ++i) {
    json::Value row = json::Value::object();
    for (Index j = 0; j < static_cast<Index>(table.bits.size()); ++j) {
      const Index layer = static_cast<Index>(i);
      row.set(table.label(j), table.is_available(layer, j)
                                  ? json::Value(table.sensitivity(layer, j))
                                  : json::Value());
    }
    sensitivity.set(table.names[i], std::move(row));
  }
  plan.set("sensitivity", std::move(sensitivity));
  json::Value notes = json::Value::array();
  for (const std::string& note : table.notes) notes.push_back(note);
  plan.set("notes", std::move(notes));
  json::Value points = json::Value::array();
  for (const AllocationPoint& p : front.points) points.push_back(point_json(front, p));
  plan.set("front", std::move(points));
  plan.set("chosen", chosen ? point_json(front, *chosen) : json::Value());
  io::write_file_atomic(out_path, json::dump(plan) + "\n");

  if (!quiet) print_front(table, front, chosen);
  return 0;
}

}  // namespace qround::cli
