// `qround generate`: sample text from a model — a llama2.c checkpoint or a llama GGUF, float or
// quantized (a GGUF's quantized tensors compute with their dequantized weights) — or, with
// --quantized, from the model whose linear layers are the packed ones of a `qround model --out`
// safetensors file.
#include <fmt/format.h>

#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "model_files.hpp"
#include "qround/error.hpp"
#include "qround/io/safetensors.hpp"
#include "qround/model/evaluation.hpp"

namespace qround::cli {
namespace {

constexpr const char* kHelp = R"(usage: qround generate --model M.bin|M.gguf [--tokenizer T.bin] [--quantized Q.safetensors]
                       [--prompt TEXT] [--steps N] [--temperature T] [--seed S]
                       [--float-activations]

  --model              llama2.c checkpoint (then --tokenizer is required) or llama GGUF
  --quantized          packed layers written by `qround model --out` replace the float ones
  --prompt             text to continue (default: start from BOS alone)
  --steps              new tokens at most (default 256; also bounded by seq_len)
  --temperature        0 = greedy (default), else sampling at that temperature
  --float-activations  run packed layers with float activations (default: int8, integer kernels)
)";

}  // namespace

int run_generate(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    fmt::print("{}", kHelp);
    return 0;
  }
  Args args(argc, argv);
  const ModelPaths paths = take_model_paths(args);
  const auto quantized_path = args.take("quantized");
  const std::string prompt = args.take("prompt").value_or("");
  model::SampleOptions options;
  options.steps = args.take_int("steps", 256, 0, 1 << 20);
  options.temperature = static_cast<float>(args.take_double("temperature", 0.0));
  options.seed = static_cast<std::uint64_t>(args.take_int("seed", 0, 0, 2147483647));
  const auto compute = args.take_flag("float-activations") ? model::PackedCompute::kFloatActivations
                                                           : model::PackedCompute::kInteger;
  args.finish();
  try {
    options.validate();
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }

  auto files = load_model_files(paths);
  if (quantized_path) {
    auto layers = io::load_quantized(*quantized_path);
    for (auto& l : layers) {
      int index = -1;
      for (int i = 0; i < files.model.num_linear(); ++i)
        if (files.model.linear_name(i) == l.name) index = i;
      if (index < 0)
        throw IoError(fmt::format("'{}' holds layer '{}', which {} does not have",
                                  *quantized_path, l.name, paths.model));
      const MatrixF& w = files.model.linear(index);
      if (l.packed.rows() != w.rows() || l.packed.cols() != w.cols())
        throw IoError(fmt::format("'{}': layer '{}' is {}×{}, the model's is {}×{}",
                                  *quantized_path, l.name, l.packed.rows(), l.packed.cols(),
                                  w.rows(), w.cols()));
      files.model.set_linear_packed(
          index, std::make_shared<const PackedMatrix>(std::move(l.packed)), compute);
    }
  }
  std::vector<int> context{model::Tokenizer::kBos};
  const std::vector<int> prompt_tokens = files.require_tokenizer().encode(prompt);
  context.insert(context.end(), prompt_tokens.begin(), prompt_tokens.end());
  if (static_cast<int>(context.size()) >= files.model.config().seq_len)
    throw InvalidArgument(fmt::format("the prompt has {} tokens; the model's window is {}",
                                      context.size(), files.model.config().seq_len));
  const std::vector<int> out = model::generate(files.model, context, options);
  std::string text;
  int previous = context.back();
  for (int t : out) {
    text += files.tokenizer->decode_token(previous, t);
    previous = t;
  }
  fmt::print("{}{}\n", files.tokenizer->decode(prompt_tokens), text);
  return 0;
}

}  // namespace qround::cli
