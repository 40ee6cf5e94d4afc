// `qround model`: quantize a whole model (llama2.c checkpoint or llama GGUF) with the sequential
// driver, report float and quantized NLL / perplexity / KL and the wall time per stage, and write
// either a GGUF of llama.cpp's types (--format) or qround's packed layers as safetensors (and
// optionally every layer's dequantized weights as .npy).
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "model_files.hpp"
#include "output_dir.hpp"
#include "progress.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/io/report.hpp"
#include "qround/io/safetensors.hpp"
#include "qround/mixed_precision.hpp"
#include "qround/model/block_reconstruction.hpp"
#include "qround/model/calibration_imatrix.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/model/type_allocation.hpp"
#include "qround/model/type_mix.hpp"
#include "qround/packed.hpp"
#include "qround/pipeline.hpp"
#include "qround/scale_search.hpp"

namespace qround::cli {
namespace {

constexpr const char* kHelp =
    R"(usage: qround model --model M.bin|M.gguf [--tokenizer T.bin] --calib TEXT [--calib-tokens N]
                    --eval TEXT [--eval-tokens N] [--method M] [--bits B] [--group-size G]
                    [--symmetric] [--scale-search S] [--iterations N] [--seed S] [--threads T]
                    [--max-memory SIZE]
                    [--one-shot] [--asymmetric-target] [--float-activations]
                    [--mixed-budget BPW [--mixed-bits 2,3,4,8]]
                    [--eval-skip N] [--imatrix-out FILE [--imatrix-process-output]]
                    [--report FILE.json] [--dump-dequant DIR] [--out model.safetensors]
                    [--quiet] [method options]
       qround model --model M.bin|M.gguf ... --format TYPE [--pure] [--imatrix FILE]
                    [--mixed-budget BPW [--mixed-candidates q4_0,q5_0,...]] --out OUT.gguf

  --model              llama2.c checkpoint (legacy float32 format) or llama GGUF
  --tokenizer          llama2.c tokenizer (tok512.bin style); required with a checkpoint
  --calib              calibration text; its first --calib-tokens tokens (default 4088)
                       are cut into windows of seq_len positions starting with BOS
                       (a file named *.tokens holds token ids instead of text)
  --format TYPE        write a GGUF with llama-quantize's tensor types for file type TYPE (q4_0
                       q4_1 q5_0 q5_1 q8_0 q2_k q2_k_s q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s
                       q5_k_m q6_k; q3_k/q4_k/q5_k = the _m mixes; f16 f32 bf16): every linear
                       layer is optimised on exactly its type's grid, and llama.cpp computes with
                       exactly the weights qround evaluates; the token embedding is rounded to
                       nearest. The report lists every tensor's type and why
  --pure               (with --format) one ggml type for every matrix; a row that does not fit
                       the type's blocks falls back as llama.cpp does (K → 32-blocks → f16)
  --imatrix FILE       (with --format) a llama.cpp importance matrix (imatrix.gguf or legacy
                       .dat): every matrix it has an entry for weighs its scale search by it, as
                       llama-quantize does, instead of the calibration's diag(X^T X); the methods'
                       losses still come from the calibration
  --eval               evaluation text (windows as above; --eval-tokens N keeps the first N,
                       default all): mean NLL, perplexity, KL(float || quantized)
  --eval-skip N        drop the first N tokens of the evaluation text first (e.g. the calibration
                       part when both are one file: --calib T --eval T --eval-skip 4088)
  --imatrix-out FILE   also write the float model's importance matrix over the calibration
                       windows for llama-quantize (FILE.dat: the legacy form; else GGUF), the
                       blk.N matrices as llama-imatrix does; --imatrix-process-output adds the
                       classifier's input (llama-imatrix --process-output)
  --report FILE.json   write a JSON report: options, every layer's (or tensor's) outcome, bits per
                       weight, NLL / perplexity / KL and the timings
  --method             rounding method (default nearest; `qround info` lists them), or block:
                       block-wise reconstruction after a per-layer method (--block-init, default
                       gptq): each block's seven linears re-rounded jointly on their grids to
                       match the float model's block output (--block-target float, default; local:
                       the float block on the quantized input), keeping per layer whichever codes
                       give the lower block loss. --block-iterations N (700) Adam steps per block
                       on --block-batch W (1) windows each, --block-lr (0.01) on the rounding
                       variables, --block-scale-lr (0.001; 0 freezes) on the log group scales of
                       float grids (a ggml type's stored scales stay frozen), --block-lambda (0.01)
  --bits               2..8 (default 4); --group-size 0 = per row (default 32)
  --one-shot           calibrate every layer on the float model (default: sequential)
  --asymmetric-target  sequential calibration targeting the float model's inputs
  --float-activations  run packed layers with float activations (default: int8 activations,
                       integer kernels — what integer inference computes)
  --mixed-budget BPW   with --format: every linear layer the mix gives a quantized type is
                       measured at every --mixed-candidates type (default: all of them) and gets
                       the type of the least-loss allocation whose file (all matrices as stored)
                       fits BPW bits per weight. Without --format:
                       mixed precision instead of --bits: measure each layer's sensitivity at
                       every --mixed-bits width (default 2,3,4,8) with the method, on the float
                       model's calibration statistics; give each layer the width of the
                       least-loss allocation whose storage (codes, scales, zero points) fits BPW
                       bits per weight; then quantize sequentially with those widths
  --dump-dequant DIR   write DIR/NAME.npy with each layer's dequantized weights
  --max-memory SIZE    refuse, before allocating, a layer whose Hessian (in² doubles) needs
                       more than SIZE bytes (e.g. 4G, 50%; default 80% of this process's memory)
  --out                with --format: the GGUF file; else packed layers, scales, zero points and
                       grid metadata (safetensors)

Other --key value options are method settings. Exit codes: 0 ok, 1 runtime error, 2 usage error.
)";

// --method block [--block-init M] [--block-iterations N] ...: the per-layer method to start from
// (the returned method name) and the block reconstruction options; no options for another method.
struct MethodChoice {
  std::string per_layer;
  std::optional<model::BlockReconstructionOptions> block;
};

MethodChoice take_method(Args& args) {
  MethodChoice m;
  m.per_layer = args.take("method").value_or("nearest");
  const bool block = m.per_layer == "block";
  for (const char* key : {"block-init", "block-iterations", "block-lr", "block-scale-lr",
                          "block-lambda", "block-batch", "block-target"})
    if (!block && args.has(key)) throw UsageError(fmt::format("--{} needs --method block", key));
  if (!block) return m;
  m.per_layer = args.take("block-init").value_or("gptq");
  if (m.per_layer == "block") throw UsageError("--block-init block: give a per-layer method");
  model::BlockReconstructionOptions o;
  o.iterations = args.take_int("block-iterations", o.iterations, 0, 1 << 24);
  o.lr = args.take_double("block-lr", o.lr);
  o.scale_lr = args.take_double("block-scale-lr", o.scale_lr);
  o.lambda = args.take_double("block-lambda", o.lambda);
  o.batch_windows = args.take_int("block-batch", o.batch_windows, 1, 1 << 20);
  const std::string target = args.take("block-target").value_or("float");
  if (target != "float" && target != "local")
    throw UsageError(
        fmt::format("--block-target {}: expected float (the float model's block "
                    "output) or local (the float block on the quantized input)",
                    target));
  o.asymmetric_target = target == "float";
  try {
    o.validate();
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  m.block = o;
  return m;
}

void print_blocks(const model::BlockReconstruction& r) {
  if (r.blocks.empty()) return;
  fmt::print("{:<8} {:>14} {:>14} {:>14} {:>9}  {}\n", "block", "per-layer loss", "learned loss",
             "final loss", "seconds", "kept per-layer codes");
  for (const auto& b : r.blocks) {
    std::string kept;
    for (const auto& k : b.kept_per_layer) kept += (kept.empty() ? "" : ",") + k;
    fmt::print("{:<8} {:>14.6g} {:>14.6g} {:>14.6g} {:>9.2f}  {}\n", b.block, b.initial_loss,
               b.learned_loss, b.final_loss, b.seconds, kept.empty() ? "-" : kept);
    for (const auto& f : b.frozen) fmt::print("  frozen: {}\n", f);
    for (const auto& n : b.notes) fmt::print("  note: {}\n", n);
  }
  fmt::print("block reconstruction {:.1f} s\n", r.seconds);
}

json::Value string_array(const std::vector<std::string>& items) {
  json::Value a = json::Value::array();
  for (const auto& item : items) a.push_back(item);
  return a;
}

json::Value blocks_json(const model::BlockReconstruction& r,
                        const model::BlockReconstructionOptions& o) {
  json::Value v = json::Value::object();
  v.set("iterations", o.iterations);
  v.set("lr", o.lr);
  v.set("lambda", o.lambda);
  v.set("batch_windows", o.batch_windows);
  v.set("target", o.asymmetric_target ? "float" : "local");
  v.set("seconds", r.seconds);
  json::Value blocks = json::Value::array();
  for (const auto& b : r.blocks) {
    json::Value j = json::Value::object();
    j.set("block", b.block);
    j.set("per_layer_loss", b.initial_loss);
    j.set("learned_loss", b.learned_loss);
    j.set("final_loss", b.final_loss);
    j.set("seconds", b.seconds);
    j.set("kept_per_layer_codes", string_array(b.kept_per_layer));
    j.set("frozen", string_array(b.frozen));
    j.set("notes", string_array(b.notes));
    json::Value curve = json::Value::array();
    for (const auto& [it, loss] : b.loss_curve) curve.push_back(json::Value::Array{it, loss});
    j.set("loss_curve", std::move(curve));
    blocks.push_back(std::move(j));
  }
  v.set("blocks", std::move(blocks));
  return v;
}

std::string grid_label(int bits, int group_size) {
  return group_size == 0 ? fmt::format("{}-bit per row", bits)
                         : fmt::format("{}-bit group {}", bits, group_size);
}

std::string stage_label(const std::vector<Index>& stage, const std::vector<LinearLayerInfo>& info) {
  std::string names;
  for (Index l : stage) {  // "layers.0.wq,wk,wv"
    const std::string& name = info[l].name;
    names += names.empty() ? name : "," + name.substr(name.rfind('.') + 1);
  }
  return names;
}

// The evaluation windows: the text's tokens after the first `skip`, at most `max_tokens` of them.
std::vector<std::vector<int>> eval_windows(const LoadedModel& files, const std::string& path,
                                           Index skip, Index max_tokens) {
  std::vector<int> tokens = read_tokens(files, path);
  if (skip >= static_cast<Index>(tokens.size()))
    throw UsageError(
        fmt::format("--eval-skip {}: '{}' has only {} tokens", skip, path, tokens.size()));
  tokens.erase(tokens.begin(), tokens.begin() + skip);
  return model::make_eval_windows(tokens, files.model.config().seq_len, max_tokens);
}

Index count_predicted(const std::vector<std::vector<int>>& windows) {
  Index n = 0;
  for (const auto& w : windows) n += static_cast<Index>(w.size()) - 1;
  return n;
}

// --imatrix-out: what llama-imatrix would write for the calibration windows on the float model.
struct ImatrixOut {
  std::optional<std::string> path;
  bool process_output = false;

  static ImatrixOut take(Args& args) {
    ImatrixOut o;
    o.path = args.take("imatrix-out");
    o.process_output = args.take_flag("imatrix-process-output");
    if (o.process_output && !o.path)
      throw UsageError("--imatrix-process-output needs --imatrix-out FILE");
    return o;
  }
  void write(const model::LlamaModel& float_model, const std::vector<std::vector<int>>& calib,
             const std::string& calib_path, ProgressBar& bar) const {
    if (!path) return;
    model::CollectImatrixOptions o;
    o.process_output = process_output;
    o.datasets = {calib_path};
    const io::Imatrix m = model::collect_imatrix(float_model, calib, o, bar.callback());
    bar.finish();
    const bool legacy = path->size() >= 4 && path->compare(path->size() - 4, 4, ".dat") == 0;
    io::write_imatrix(*path, m, legacy ? io::ImatrixForm::kLegacy : io::ImatrixForm::kGguf);
    fmt::print("wrote {} ({} entries, {} form)\n", *path, m.entries.size(),
               legacy ? "legacy" : "gguf");
  }
};

json::Value eval_json(const model::EvalResult& e) {
  json::Value v = json::Value::object();
  v.set("tokens", static_cast<long long>(e.predicted_tokens));
  v.set("nll", e.nll);
  v.set("perplexity", e.perplexity);
  v.set("kl", e.kl);
  v.set("seconds", e.seconds);
  return v;
}

json::Value evaluation_json(Index skip, const model::EvalResult& float_eval,
                            const model::EvalResult& q_eval) {
  json::Value ev = json::Value::object();
  ev.set("skip_tokens", static_cast<long long>(skip));
  ev.set("float", eval_json(float_eval));
  ev.set("quantized", eval_json(q_eval));
  ev.set("nll_increase", q_eval.nll - float_eval.nll);
  return ev;
}

json::Value stages_json(const ModelQuantization& result) {
  std::map<Index, std::string> name_of;
  for (const auto& l : result.layers) name_of[l.layer] = l.name;
  json::Value stages = json::Value::array();
  for (const auto& st : result.stages) {
    json::Value s = json::Value::object();
    json::Value names = json::Value::array();
    for (Index l : st.layers) names.push_back(name_of[l]);
    s.set("layers", std::move(names));
    s.set("calibration_seconds", st.calibration_seconds);
    s.set("rounding_seconds", st.rounding_seconds);
    stages.push_back(std::move(s));
  }
  return stages;
}

// The packed containers take only group sizes that are a multiple of their step (and other
// limits): tried on a one-row probe, so that a bad --group-size is a usage error found before any
// model work instead of an error at the first packed layer, after the float pass.
void require_packable(const GridSpec& spec, const std::vector<int>& bits, bool mixed) {
  if (spec.granularity != Granularity::kPerGroup || spec.group_size > (1 << 16)) return;
  for (int b : bits) {
    GridSpec s = spec;
    if (mixed) {
      s = mixed_precision_grid(spec, b);
    } else {
      s.bits = b;
    }
    const MatrixF w = MatrixF::Ones(1, 2 * static_cast<Index>(s.group_size));
    try {
      const Grid g = make_grid(w, s);
      const PackedMatrix probe(quantize(w, g), g);
    } catch (const InvalidArgument& e) {
      throw UsageError(
          fmt::format("--group-size {} with {} bits: {}", spec.group_size, b, e.what()));
    }
  }
}

// --format: the model's matrices in llama.cpp's types, written as a GGUF llama.cpp runs.
int run_model_gguf(Args& args, const ModelPaths& paths, const std::string& format) {
  const std::string calib_path = args.take_required("calib");
  const std::string eval_path = args.take_required("eval");
  const int calib_tokens = args.take_int("calib-tokens", 4088, 1, 1 << 30);
  const int eval_tokens = args.take_int("eval-tokens", 0, 0, 1 << 30);
  const int eval_skip = args.take_int("eval-skip", 0, 0, 1 << 30);
  const std::string out_path = args.take_required("out");
  const bool pure = args.take_flag("pure");
  const std::optional<std::string> imatrix_path = args.take("imatrix");
  const ImatrixOut imatrix_out = ImatrixOut::take(args);
  const std::optional<std::string> report_path = args.take("report");
  const double mixed_budget =
      args.take_double("mixed-budget", std::numeric_limits<double>::quiet_NaN());
  const bool mixed = !std::isnan(mixed_budget);
  const std::optional<std::string> mixed_candidates = args.take("mixed-candidates");
  if (mixed_candidates && !mixed) throw UsageError("--mixed-candidates needs --mixed-budget");
  for (const char* key :
       {"bits", "group-size", "symmetric", "mixed-bits", "float-activations", "dump-dequant"})
    if (args.has(key))
      throw UsageError(
          fmt::format("--{} does not apply to --format (the type fixes the grid; "
                      "llama.cpp computes with float activations)",
                      key));
  const MethodChoice choice = take_method(args);
  model::GgufQuantizeOptions options;
  model::TypeMixOptions mix;
  mix.pure = pure;
  GgmlType type;  // the default type of the mix
  std::optional<model::LlamaFileType> file_type;
  try {
    // --pure takes any ggml type; a mix is one of llama-quantize's file types.
    if (pure && format != "q3_k" && format != "q4_k" && format != "q5_k") {
      type = parse_ggml_type(format);
      if (type != GgmlType::kF32) try {
          file_type = model::parse_llama_file_type(format);
        } catch (const InvalidArgument&) {
        }
    } else {
      file_type = model::parse_llama_file_type(format);
      type = model::default_type(*file_type);
    }
    if (file_type) mix.file_type = *file_type;
    if (pure && (format == "q3_k" || format == "q4_k" || format == "q5_k"))
      type = parse_ggml_type(format);  // --pure q4_k: q4_k everywhere
    if (auto s = args.take("scale-search"))
      options.sequential.round.grid.search = parse_scale_search(*s);
    else
      options.sequential.round.grid.search = ScaleSearch::kHessian;
    options.sequential.round.method = parse_method(choice.per_layer);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  options.sequential.round.iterations = args.take_int("iterations", -1, -1, 1 << 30);
  options.sequential.round.seed =
      static_cast<std::uint64_t>(args.take_int("seed", 0, 0, 2147483647));
  options.sequential.round.threads = take_threads(args);
  if (choice.block) {
    options.block = choice.block;
    options.block->seed = options.sequential.round.seed;
    options.block->threads = options.sequential.round.threads;
  }
  options.sequential.sequential = !args.take_flag("one-shot");
  options.sequential.asymmetric_target = args.take_flag("asymmetric-target");
  const bool quiet = args.take_flag("quiet");
  options.sequential.round.params = args.take_rest();
  options.sequential.round.grid.format = std::nullopt;
  try {
    options.sequential.validate();
    RoundLayerOptions probe = options.sequential.round;
    if (ggml_traits(type).block > 1) probe.grid = GridSpec::for_format(type, probe.grid.search);
    validate(probe);  // method settings too: an unknown one is a usage error
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  if (imatrix_path && options.sequential.round.grid.search != ScaleSearch::kHessian)
    throw UsageError(
        fmt::format("--imatrix weighs the hessian scale search, but the search is "
                    "{}: drop --scale-search or give --scale-search hessian",
                    to_string(options.sequential.round.grid.search)));

  model::TypeAllocationOptions allocation;
  if (mixed) {
    try {
      allocation.bits_per_weight = mixed_budget;
      allocation.rounding = options.sequential.round;
      if (mixed_candidates) {
        std::string list = *mixed_candidates;
        for (std::size_t at = 0; at <= list.size();) {
          const std::size_t comma = std::min(list.find(',', at), list.size());
          allocation.candidates.push_back(parse_ggml_type(list.substr(at, comma - at)));
          at = comma + 1;
        }
      } else {  // every type the method can round onto
        for (GgmlType t : ggml_quantized_types()) {
          if (ggml_traits(t).levels != nullptr &&
              options.sequential.round.method != Method::kNearest &&
              options.sequential.round.method != Method::kGptq)
            continue;  // table formats: only nearest and GPTQ choose their codes
          allocation.candidates.push_back(t);
        }
      }
      allocation.validate();
    } catch (const InvalidArgument& e) {
      throw UsageError(fmt::format("--mixed-budget / --mixed-candidates: {}", e.what()));
    }
  }
  mix.has_imatrix = imatrix_path.has_value();  // llama-quantize's imatrix rules
  if (imatrix_path) options.imatrix = io::read_imatrix(*imatrix_path);
  auto files = load_model_files(paths);
  // A vocabulary qround cannot run still quantizes from token ids (*.tokens), and the output
  // carries the input's tokenizer.* keys on.
  const model::Tokenizer* tokenizer = files.tokenizer ? &*files.tokenizer : nullptr;
  const int seq_len = files.model.config().seq_len;
  const auto calib =
      model::make_eval_windows(read_tokens(files, calib_path), seq_len, calib_tokens);
  const auto eval = eval_windows(files, eval_path, eval_skip, eval_tokens);
  options.types = pure ? model::pure_tensor_types(files.model, type)
                       : model::plan_tensor_types(files.model, mix);

  ProgressBar bar(quiet);
  imatrix_out.write(files.model, calib, calib_path, bar);
  std::optional<model::TypeAllocation> allocated;
  if (mixed) {
    try {
      allocated = model::allocate_tensor_types(files.model, calib, options.types, allocation,
                                               bar.callback());
    } catch (const InvalidArgument& e) {
      bar.finish();
      throw UsageError(fmt::format("--mixed-budget: {}", e.what()));
    }
    bar.finish();
    options.types = allocated->types;
    fmt::print(
        "mixed precision over {} candidate types: {} front points; chosen {:.4f} bits per "
        "weight (file), predicted loss {:.6g}\n",
        allocation.candidates.size(), allocated->front.points.size(), allocated->bits_per_weight,
        allocated->chosen.loss);
    for (const auto& note : allocated->table.notes) fmt::print("  note: {}\n", note);
  }
  const auto start = std::chrono::steady_clock::now();
  model::LlamaModel quantized = files.model;
  model::GgufQuantization result =
      model::quantize_to_gguf(quantized, calib, options, bar.callback());
  bar.finish();
  model::LlamaGgufOptions& gguf = result.tensors;
  gguf.name =
      files.name.empty() ? paths.model.substr(paths.model.find_last_of('/') + 1) : files.name;
  gguf.metadata.emplace_back("qround.method",
                             io::GgufValue::string(to_string(options.sequential.round.method)));
  if (file_type) gguf.file_type = static_cast<std::uint32_t>(*file_type);
  gguf.metadata.emplace_back("qround.type", io::GgufValue::string(format));
  if (!tokenizer) gguf.tokenizer_metadata = files.tokenizer_metadata;
  model::write_gguf_llama(out_path, quantized, tokenizer, gguf);
  const double write_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const model::EvalResult float_eval = model::evaluate(files.model, eval, nullptr, bar.callback());
  bar.finish();
  const model::EvalResult q_eval = model::evaluate(quantized, eval, &files.model, bar.callback());
  bar.finish();

  fmt::print("{} on {}{}, {} calibration, {} layers by the method\n",
             to_string(options.sequential.round.method), format, pure ? " (pure)" : "",
             options.sequential.sequential ? "sequential" : "one-shot",
             result.layers.layers.size());
  fmt::print("{:<26} {:>6} {:>12}  {}\n", "tensor", "type", "shape", "why");
  json::Value tensors = json::Value::array();
  std::map<std::string, const LayerOutcome*> outcome_of;  // by GGUF name
  for (int i = 0; i < quantized.num_linear(); ++i)
    for (const auto& l : result.layers.layers)
      if (l.name == quantized.linear_name(i)) outcome_of[model::gguf_linear_name(i)] = &l;
  for (const auto& t : result.types) {
    int rows = 0, cols = 0;
    if (t.name == model::kGgufTokenEmbedding || t.name == model::kGgufOutput) {
      rows = quantized.config().vocab_size;
      cols = quantized.config().dim;
    } else {
      for (int i = 0; i < quantized.num_linear(); ++i)
        if (model::gguf_linear_name(i) == t.name) {
          rows = static_cast<int>(quantized.linear(i).rows());
          cols = static_cast<int>(quantized.linear(i).cols());
        }
    }
    fmt::print("{:<26} {:>6} {:>12}  {}\n", t.name, to_string(t.type),
               fmt::format("{}x{}", rows, cols), t.reason);
    json::Value tj = json::Value::object();
    tj.set("name", t.name);
    tj.set("type", to_string(t.type));
    tj.set("rows", rows);
    tj.set("cols", cols);
    tj.set("reason", t.reason);
    tj.set("bytes", static_cast<long long>(gguf.tensors.at(t.name).bytes.size()));
    const auto imp = result.scale_importance.find(t.name);
    if (imp != result.scale_importance.end()) tj.set("scale_importance", imp->second);
    const auto oc = outcome_of.find(t.name);
    if (oc != outcome_of.end()) tj.set("rounding", io::to_json(oc->second->quantized.report));
    tensors.push_back(std::move(tj));
  }
  print_blocks(result.blocks);
  fmt::print("{:<10} {:>10} {:>10} {:>10}\n", "model", "NLL", "PPL", "KL");
  fmt::print("{:<10} {:>10.4f} {:>10.3f} {:>10}\n", "float", float_eval.nll, float_eval.perplexity,
             "-");
  fmt::print("{:<10} {:>10.4f} {:>10.3f} {:>10.4f}\n", "quantized", q_eval.nll, q_eval.perplexity,
             q_eval.kl);
  fmt::print("bits per weight {:.4f} (all matrices as stored)\n", result.bits_per_weight);
  fmt::print("quantization and writing {:.2f} s, wrote {}\n", write_seconds, out_path);
  if (report_path) {
    json::Value r = json::Value::object();
    r.set("command", "model");
    r.set("model", paths.model);
    r.set("out", out_path);
    r.set("format", format);
    r.set("pure", pure);
    r.set("method", to_string(options.sequential.round.method));
    r.set("scale_search", to_string(options.sequential.round.grid.search));
    r.set("calibration", options.sequential.sequential ? (options.sequential.asymmetric_target
                                                              ? "sequential (asymmetric target)"
                                                              : "sequential")
                                                       : "one-shot");
    r.set("calibration_tokens", static_cast<long long>(count_predicted(calib)));
    if (imatrix_path) r.set("imatrix", *imatrix_path);
    if (imatrix_out.path) r.set("imatrix_out", *imatrix_out.path);
    r.set("bits_per_weight", result.bits_per_weight);
    if (allocated) {
      json::Value m = json::Value::object();
      m.set("budget_bits_per_weight", mixed_budget);
      json::Value cands = json::Value::array();
      for (GgmlType t : allocation.candidates) cands.push_back(to_string(t));
      m.set("candidates", std::move(cands));
      m.set("predicted_loss", allocated->chosen.loss);
      json::Value front = json::Value::array();
      for (const auto& pt : allocated->front.points) {
        json::Value p = json::Value::object();
        p.set("bits_per_weight", allocated->file_bits_per_weight(pt));
        p.set("loss", pt.loss);
        front.push_back(std::move(p));
      }
      m.set("front", std::move(front));
      r.set("mixed_precision", std::move(m));
    }
    r.set("tensors", std::move(tensors));
    r.set("stages", stages_json(result.layers));
    if (options.block) r.set("block_reconstruction", blocks_json(result.blocks, *options.block));
    r.set("evaluation", evaluation_json(eval_skip, float_eval, q_eval));
    r.set("quantization_and_writing_seconds", write_seconds);
    io::write_file_atomic(*report_path, json::dump(r) + "\n");
  }
  return 0;
}

}  // namespace

int run_model(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  take_max_memory(args);
  const ModelPaths paths = take_model_paths(args);
  if (auto format = args.take("format")) return run_model_gguf(args, paths, *format);
  if (args.take_flag("pure")) throw UsageError("--pure needs --format");
  if (args.has("imatrix"))
    throw UsageError("--imatrix needs --format (it weighs the ggml types' scale searches)");
  const std::string calib_path = args.take_required("calib");
  const std::string eval_path = args.take_required("eval");
  const int calib_tokens = args.take_int("calib-tokens", 4088, 1, 1 << 30);
  const int eval_tokens = args.take_int("eval-tokens", 0, 0, 1 << 30);
  const int eval_skip = args.take_int("eval-skip", 0, 0, 1 << 30);
  const ImatrixOut imatrix_out = ImatrixOut::take(args);
  const std::optional<std::string> report_path = args.take("report");
  SequentialOptions options;
  const double mixed_budget =
      args.take_double("mixed-budget", std::numeric_limits<double>::quiet_NaN());
  const bool mixed = !std::isnan(mixed_budget);
  const auto mixed_bits = args.take("mixed-bits");
  if (mixed_bits && !mixed) throw UsageError("--mixed-bits needs --mixed-budget");
  if (mixed && args.take("bits"))
    throw UsageError("--bits and --mixed-budget exclude each other (use --mixed-bits)");
  const int bits = mixed ? 4 : args.take_int("bits", 4, 2, 8);
  const int group_size = args.take_int("group-size", 32, 0, 1 << 30);
  options.round.grid = GridSpec::with_group_size(bits, group_size, args.take_flag("symmetric"));
  const MethodChoice choice = take_method(args);
  try {
    if (auto s = args.take("scale-search")) options.round.grid.search = parse_scale_search(*s);
    options.round.method = parse_method(choice.per_layer);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  options.round.iterations = args.take_int("iterations", -1, -1, 1 << 30);
  options.round.seed = static_cast<std::uint64_t>(args.take_int("seed", 0, 0, 2147483647));
  options.round.threads = take_threads(args);
  std::optional<model::BlockReconstructionOptions> block = choice.block;
  if (block) {
    block->seed = options.round.seed;
    block->threads = options.round.threads;
  }
  options.sequential = !args.take_flag("one-shot");
  options.asymmetric_target = args.take_flag("asymmetric-target");
  model::LlamaAdapterOptions adapter_options;
  if (args.take_flag("float-activations"))
    adapter_options.compute = model::PackedCompute::kFloatActivations;
  const auto dump_dir = args.take("dump-dequant");
  const auto out_path = args.take("out");
  for (const auto& [name, value] :
       {std::pair{"dump-dequant", &dump_dir}, std::pair{"out", &out_path}})
    if (*value && (*value)->empty())
      throw UsageError(fmt::format("--{} is empty: expected a path", name));
  const bool quiet = args.take_flag("quiet");
  options.round.params = args.take_rest();
  SensitivityOptions sensitivity;
  sensitivity.rounding = options.round;
  if (mixed) sensitivity.bits = parse_bit_widths("mixed-bits", mixed_bits.value_or("2,3,4,8"));
  try {
    options.validate();
    validate(options.round);  // method settings too: an unknown one is a usage error
    if (mixed) sensitivity.validate();
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  require_packable(options.round.grid, mixed ? sensitivity.bits : std::vector<int>{bits}, mixed);

  auto files = load_model_files(paths);
  const int seq_len = files.model.config().seq_len;
  const auto calib =
      model::make_eval_windows(read_tokens(files, calib_path), seq_len, calib_tokens);
  const auto eval = eval_windows(files, eval_path, eval_skip, eval_tokens);

  ProgressBar bar(quiet);
  imatrix_out.write(files.model, calib, calib_path, bar);
  model::LlamaModel quantized = files.model;
  model::LlamaQuantizable adapter(quantized, calib, adapter_options);
  if (mixed) {
    const SensitivityTable table = measure_model_sensitivity(adapter, sensitivity, bar.callback());
    bar.finish();
    const ParetoFront front = pareto_front(table);
    const AllocationPoint* chosen = nullptr;
    try {
      chosen = &choose(front, Budget::bits_per_weight(mixed_budget));
    } catch (const InvalidArgument& e) {
      throw UsageError(fmt::format("--mixed-budget: {}", e.what()));
    }
    options.per_layer = per_layer_bits(front.names, chosen->bits);
    fmt::print(
        "mixed precision: {} front points; chosen {:.4f} bits/weight, predicted loss {:.6g}\n",
        front.points.size(), chosen->bits_per_weight, chosen->loss);
    for (std::size_t i = 0; i < front.names.size(); ++i)
      fmt::print("  {:<20} {} bits\n", front.names[i], chosen->bits[i]);
  }
  const model::EvalResult float_eval = model::evaluate(files.model, eval, nullptr, bar.callback());
  bar.finish();
  ModelQuantization result = quantize_model(adapter, options, bar.callback());
  bar.finish();
  model::BlockReconstruction blocks;
  if (block) {
    std::vector<QuantizedLayer*> results(static_cast<std::size_t>(quantized.num_linear()), nullptr);
    for (LayerOutcome& l : result.layers) results[static_cast<std::size_t>(l.layer)] = &l.quantized;
    blocks = model::reconstruct_blocks(
        quantized, adapter.float_model(), calib, results, *block, bar.callback(),
        [&adapter](int linear, const QuantizedLayer& q) { adapter.replace(linear, q); });
    bar.finish();
  }
  const model::EvalResult q_eval =
      model::evaluate(quantized, eval, &adapter.float_model(), bar.callback());
  bar.finish();

  std::vector<io::NamedPackedLayer> packed;
  for (const auto& l : result.layers)
    packed.push_back(
        {l.name, *quantized.packed_linear(static_cast<int>(l.layer)), l.quantized.report.method});
  if (out_path)
    io::save_quantized(*out_path, packed,
                       {{"method", to_string(options.round.method)},
                        {"bits", mixed ? std::string("mixed") : std::to_string(bits)},
                        {"group_size", std::to_string(group_size)},
                        {"source_model", paths.model}});
  if (dump_dir) {
    OutputDir dir(*dump_dir);
    for (const auto& l : result.layers)
      io::save_npy(dir.path(l.name + ".npy"), l.quantized.dequantized());
    dir.commit();
  }

  std::size_t calib_token_count = 0;
  for (const auto& w : calib) calib_token_count += w.size() - 1;
  fmt::print("{} {}, {} calibration, {} layers, {} calibration tokens, {} eval tokens\n",
             to_string(options.round.method),
             mixed ? fmt::format("mixed ≤ {} bits/weight group {}", mixed_budget, group_size)
                   : grid_label(bits, group_size),
             options.sequential
                 ? (options.asymmetric_target ? "sequential (asymmetric target)" : "sequential")
                 : "one-shot",
             result.layers.size(), calib_token_count, q_eval.predicted_tokens);
  fmt::print("{:<22} {:>10} {:>10}\n", "stage", "calib s", "round s");
  const auto layer_info = adapter.layers();
  for (const auto& s : result.stages)
    fmt::print("{:<22} {:>10.3f} {:>10.3f}\n", stage_label(s.layers, layer_info),
               s.calibration_seconds, s.rounding_seconds);
  print_blocks(blocks);
  fmt::print("{:<10} {:>10} {:>10} {:>10}\n", "model", "NLL", "PPL", "KL");
  fmt::print("{:<10} {:>10.4f} {:>10.3f} {:>10}\n", "float", float_eval.nll, float_eval.perplexity,
             "-");
  fmt::print("{:<10} {:>10.4f} {:>10.3f} {:>10.4f}\n", "quantized", q_eval.nll, q_eval.perplexity,
             q_eval.kl);
  fmt::print("bits per weight {:.4f} (codes, scales and zero points)\n", bits_per_weight(result));
  fmt::print("quantization {:.2f} s, evaluation {:.2f} s{}\n", result.seconds, q_eval.seconds,
             out_path ? fmt::format(", wrote {}", *out_path) : std::string());
  if (report_path) {
    json::Value r = json::Value::object();
    r.set("command", "model");
    r.set("model", paths.model);
    if (out_path) r.set("out", *out_path);
    r.set("method", to_string(options.round.method));
    r.set("grid", mixed ? fmt::format("mixed <= {} bits/weight group {}", mixed_budget, group_size)
                        : grid_label(bits, group_size));
    r.set("symmetric", options.round.grid.symmetric);
    r.set("scale_search", to_string(options.round.grid.search));
    r.set("calibration",
          options.sequential
              ? (options.asymmetric_target ? "sequential (asymmetric target)" : "sequential")
              : "one-shot");
    r.set("calibration_tokens", static_cast<long long>(calib_token_count));
    if (imatrix_out.path) r.set("imatrix_out", *imatrix_out.path);
    r.set("bits_per_weight", bits_per_weight(result));
    json::Value layers = json::Value::array();
    for (const auto& l : result.layers) {
      json::Value lj = io::to_json(l.quantized.report);
      lj.set("name", l.name);
      lj.set("bits", l.quantized.grid.bits);
      lj.set("rows", static_cast<long long>(l.quantized.grid.rows));
      lj.set("cols", static_cast<long long>(l.quantized.grid.cols));
      lj.set("tokens", static_cast<long long>(l.tokens));
      layers.push_back(std::move(lj));
    }
    r.set("layers", std::move(layers));
    r.set("stages", stages_json(result));
    if (block) r.set("block_reconstruction", blocks_json(blocks, *block));
    r.set("evaluation", evaluation_json(eval_skip, float_eval, q_eval));
    r.set("quantization_seconds", result.seconds);
    io::write_file_atomic(*report_path, json::dump(r) + "\n");
  }
  return 0;
}

}  // namespace qround::cli
