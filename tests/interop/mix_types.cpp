// The qround side of interop.sh's check_mixes: llama.cpp's quantizer (llama_model_quantize) is the
// judge of qround's type mixes (model/type_mix.hpp). This tool writes a synthetic llama GGUF with
// shapes the K types fit, prints qround's plan for a file type, and prints the stored types of any
// GGUF, in one format so the two lists diff.
//
//   mix_types write OUT.gguf [--dim D] [--hidden H] [--layers L] [--heads N] [--kv-heads K]
//                            [--vocab V] [--untied] [--seed S]
//       a llama-architecture F32 GGUF (qround's writer) with random finite weights; defaults
//       dim 256, hidden 768, 16 layers, 8 heads, 2 KV heads, vocab 512, tied output, seed 1
//   mix_types plan IN.gguf FTYPE [pure] [imatrix]
//       qround's plan_tensor_types for llama-quantize's FTYPE (q4_k_m, ...); the tensors that are
//       not matrices (norm gains) keep the type they have in IN.gguf, as llama.cpp keeps them
//   mix_types types FILE.gguf
//       the stored type of every tensor of FILE.gguf (qround's GGUF reader)
//   mix_types imatrix IN.gguf OUT.dat
//       an importance matrix (llama.cpp's legacy .dat form, io/imatrix.hpp) with an entry of
//       positive values for every matrix of IN.gguf, for file types llama-quantize refuses
//       without one (q2_k_s)
//   mix_types ftype NAME
//       the llama_ftype number of a file type name (what llama_model_quantize takes)
//
// plan and types print one line "TENSOR_NAME TYPE" per tensor, sorted by name.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/format.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/model/type_mix.hpp"

namespace {

using qround::InvalidArgument;
using qround::MatrixF;
using qround::VectorF;
namespace model = qround::model;

int parse_int(const std::string& flag, const char* value) {
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  if (end == value || *end != '\0' || v <= 0 || v > (1 << 24))
    throw InvalidArgument(flag + " '" + value + "': expected a positive integer");
  return static_cast<int>(v);
}

MatrixF random_matrix(qround::detail::Rng& rng, long rows, long cols, double scale) {
  MatrixF m(rows, cols);
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols; ++c) m(r, c) = static_cast<float>(scale * rng.normal());
  return m;
}

// <unk> <s> </s>, the 256 byte tokens, then distinct word pieces: the layout qround's Tokenizer
// (and gguf_llama's writer) expects.
model::Tokenizer synthetic_tokenizer(int vocab) {
  if (vocab < 259) throw InvalidArgument("--vocab " + std::to_string(vocab) + ": expected >= 259");
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  char buf[16];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.emplace_back(buf);
  }
  for (int i = static_cast<int>(pieces.size()); i < vocab; ++i)
    pieces.push_back("\xe2\x96\x81w" + std::to_string(i));
  std::vector<float> scores(pieces.size());
  for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  return model::Tokenizer(std::move(pieces), std::move(scores));
}

int write_model(int argc, char** argv) {
  model::LlamaConfig c;
  c.dim = 256;
  c.hidden_dim = 768;
  c.n_layers = 16;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.vocab_size = 512;
  c.seq_len = 64;
  c.shared_classifier = true;
  unsigned long long seed = 1;
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--untied") {
      c.shared_classifier = false;
      continue;
    }
    if (i + 1 >= argc) throw InvalidArgument("option " + flag + " needs a value");
    const char* v = argv[++i];
    if (flag == "--dim")
      c.dim = parse_int(flag, v);
    else if (flag == "--hidden")
      c.hidden_dim = parse_int(flag, v);
    else if (flag == "--layers")
      c.n_layers = parse_int(flag, v);
    else if (flag == "--heads")
      c.n_heads = parse_int(flag, v);
    else if (flag == "--kv-heads")
      c.n_kv_heads = parse_int(flag, v);
    else if (flag == "--vocab")
      c.vocab_size = parse_int(flag, v);
    else if (flag == "--seed")
      seed = static_cast<unsigned long long>(parse_int(flag, v));
    else
      throw InvalidArgument("unknown option '" + flag +
                            "': expected --dim --hidden --layers --heads --kv-heads --vocab "
                            "--untied --seed");
  }
  c.validate("mix_types write");
  qround::detail::Rng rng(seed);
  model::LlamaWeights w;
  const double s = 0.02;
  w.token_embedding = random_matrix(rng, c.vocab_size, c.dim, 1.0);
  const long dim = c.dim, kv = c.kv_dim(), hidden = c.hidden_dim;
  for (int b = 0; b < c.n_layers; ++b) {
    model::LlamaBlock blk;
    blk.rms_att = VectorF::Constant(dim, 1.0f);
    blk.rms_ffn = VectorF::Constant(dim, 1.0f);
    using L = model::BlockLinear;
    auto& lin = blk.linear;
    lin[static_cast<int>(L::kQ)] = random_matrix(rng, dim, dim, s);
    lin[static_cast<int>(L::kK)] = random_matrix(rng, kv, dim, s);
    lin[static_cast<int>(L::kV)] = random_matrix(rng, kv, dim, s);
    lin[static_cast<int>(L::kO)] = random_matrix(rng, dim, dim, s);
    lin[static_cast<int>(L::kW1)] = random_matrix(rng, hidden, dim, s);
    lin[static_cast<int>(L::kW3)] = random_matrix(rng, hidden, dim, s);
    lin[static_cast<int>(L::kW2)] = random_matrix(rng, dim, hidden, s);
    w.blocks.push_back(std::move(blk));
  }
  w.rms_final = VectorF::Constant(dim, 1.0f);
  if (!c.shared_classifier) w.classifier = random_matrix(rng, c.vocab_size, dim, s);
  const model::LlamaModel m(c, std::move(w));
  model::LlamaGgufOptions options;
  options.name = "qround-mix-check";
  options.file_type = static_cast<std::uint32_t>(model::LlamaFileType::kF32);
  model::write_gguf_llama(argv[2], m, synthetic_tokenizer(c.vocab_size), options);
  std::printf("%s: dim %d hidden %d layers %d heads %d/%d vocab %d %s\n", argv[2], c.dim,
              c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
              c.shared_classifier ? "tied" : "untied");
  return 0;
}

void print_sorted(const std::map<std::string, qround::GgmlType>& types) {
  for (const auto& [name, type] : types)
    std::printf("%s %s\n", name.c_str(), qround::to_string(type));
}

int plan(int argc, char** argv) {
  model::TypeMixOptions options;
  options.file_type = model::parse_llama_file_type(argv[3]);
  for (int i = 4; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "pure")
      options.pure = true;
    else if (flag == "imatrix")
      options.has_imatrix = true;
    else
      throw InvalidArgument("plan: unknown flag '" + flag + "': expected pure or imatrix");
  }
  const model::GgufLlama g = model::load_gguf_llama(argv[2]);
  std::map<std::string, qround::GgmlType> types;
  for (const auto& [name, type] : g.tensor_types) types[name] = type;
  for (const auto& choice : model::plan_tensor_types(g.model, options)) {
    if (!types.count(choice.name))
      throw InvalidArgument("plan names tensor '" + choice.name + "' that " + argv[2] +
                            " does not hold");
    types[choice.name] = choice.type;
  }
  print_sorted(types);
  return 0;
}

int types(char** argv) {
  const qround::io::GgufFile f = qround::io::read_gguf(argv[2]);
  std::map<std::string, qround::GgmlType> types;
  for (const auto& t : f.tensors()) types[t.name] = t.type;
  print_sorted(types);
  return 0;
}

int imatrix(char** argv) {
  const model::GgufLlama g = model::load_gguf_llama(argv[2]);
  std::set<std::string> names;  // sorted, as the file wants them
  for (const auto& n : model::gguf_matrix_names(g.model)) names.insert(n);
  const qround::io::GgufFile f = qround::io::read_gguf(argv[2]);
  qround::detail::Rng rng(7);
  std::vector<std::string> ordered;
  std::vector<qround::VectorD> diagonals;
  std::vector<std::int64_t> tokens;
  for (const std::string& n : names) {
    const auto cols = f.tensor(n).cols();
    qround::VectorD d(cols);
    for (long j = 0; j < cols; ++j) d(j) = 512.0 * (0.1 + rng.uniform());  // positive sums of x²
    ordered.push_back(n);
    diagonals.push_back(std::move(d));
    tokens.push_back(512);
  }
  qround::io::ImatrixFromStatisticsOptions options;
  options.datasets = {"synthetic"};
  const qround::io::Imatrix im =
      qround::io::imatrix_from_statistics(ordered, diagonals, tokens, options);
  qround::io::write_imatrix(argv[3], im, qround::io::ImatrixForm::kLegacy);
  std::printf("%s: %zu entries\n", argv[3], im.entries.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "write" && argc >= 3) return write_model(argc, argv);
    if (cmd == "plan" && argc >= 4 && argc <= 6) return plan(argc, argv);
    if (cmd == "types" && argc == 3) return types(argv);
    if (cmd == "imatrix" && argc == 4) return imatrix(argv);
    if (cmd == "ftype" && argc == 3) {
      std::printf("%u\n", static_cast<unsigned>(model::parse_llama_file_type(argv[2])));
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mix_types: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr,
               "usage: mix_types write OUT.gguf [--dim D] [--hidden H] [--layers L] [--heads N]\n"
               "                  [--kv-heads K] [--vocab V] [--untied] [--seed S]\n"
               "       mix_types plan IN.gguf FTYPE [pure] [imatrix]\n"
               "       mix_types types FILE.gguf\n"
               "       mix_types imatrix IN.gguf OUT.dat\n"
               "       mix_types ftype NAME\n");
  return 2;
}
