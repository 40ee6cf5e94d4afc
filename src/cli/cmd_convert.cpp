// `qround convert`: a model (llama2.c checkpoint + tokenizer, or a llama GGUF) as a float llama
// GGUF that llama.cpp runs — so the bundled llama2.c model can be the input of the GGUF path.
#include <fmt/format.h>

#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "model_files.hpp"
#include "qround/error.hpp"
#include "qround/format.hpp"
#include "qround/model/gguf_llama.hpp"

namespace qround::cli {
namespace {

constexpr const char* kHelp = R"(usage: qround convert --model M.bin|M.gguf [--tokenizer T.bin] --out OUT.gguf
                      [--type f32|f16|bf16] [--name NAME]

  --model      llama2.c checkpoint (then --tokenizer is required) or llama GGUF (float or
               quantized: quantized tensors are dequantized)
  --out        the llama-architecture GGUF to write (replaced atomically if it exists)
  --type       type of the weight matrices (default f32); norm gains are always f32
  --name       general.name (default: the input's, else the input file's name)
)";

// llama_ftype values for the float file types (llama.h).
std::uint32_t float_file_type(GgmlType t) {
  return t == GgmlType::kF32 ? 0u : t == GgmlType::kF16 ? 1u : 32u;
}

}  // namespace

int run_convert(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  const ModelPaths paths = take_model_paths(args);
  const std::string out = args.take_required("out");
  const std::string type_name = args.take("type").value_or("f32");
  const auto name = args.take("name");
  args.finish();
  GgmlType type;
  try {
    type = parse_ggml_type(type_name);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  if (type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16)
    throw UsageError(fmt::format("--type {}: expected f32, f16 or bf16 (quantized types come "
                                 "from `qround model --format`)",
                                 type_name));
  const LoadedModel files = load_model_files(paths);
  model::LlamaGgufOptions options;
  options.float_type = type;
  options.file_type = float_file_type(type);
  options.name = name ? *name : !files.name.empty() ? files.name
                                : paths.model.substr(paths.model.find_last_of('/') + 1);
  model::write_gguf_llama(out, files.model, files.require_tokenizer(), options);
  const auto& c = files.model.config();
  fmt::print("wrote {}: llama, {} blocks, dim {}, hidden {}, heads {}/{}, vocab {}, context {}, {}\n",
             out, c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.vocab_size,
             c.seq_len, to_string(type));
  return 0;
}

}  // namespace qround::cli
