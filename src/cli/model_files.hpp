// Shared by `qround model`, `qround generate` and `qround convert`: the model (a llama2.c
// checkpoint with its tokenizer file, or a llama GGUF carrying its tokenizer), and its texts.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "qround/io/gguf.hpp"
#include "qround/model/llama.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround::cli {

struct LoadedModel {
  model::LlamaModel model;
  std::optional<model::Tokenizer> tokenizer;
  std::string tokenizer_error;  // why `tokenizer` is empty
  // A GGUF's tokenizer.* keys, written on into a quantized GGUF when qround cannot run them.
  std::vector<std::pair<std::string, io::GgufValue>> tokenizer_metadata;
  bool gguf = false;  // read from a GGUF file
  std::string name;   // general.name of a GGUF, else empty

  // The tokenizer; IoError saying why there is none and that token ids work instead.
  const model::Tokenizer& require_tokenizer() const;
};

struct ModelPaths {
  std::string model;
  std::optional<std::string> tokenizer;
};
// Takes --model (required) and --tokenizer (required for a llama2.c checkpoint; for a GGUF it
// replaces the file's own tokenizer).
ModelPaths take_model_paths(Args& args);
// Reads the model (GGUF recognised by its magic, else a llama2.c checkpoint) and its tokenizer.
LoadedModel load_model_files(const ModelPaths& paths);
// A whole text file (IoError if unreadable).
std::string read_text_file(const std::string& path);
// The tokens of an input: a file whose name ends in ".tokens" holds whitespace-separated token
// ids (no tokenizer needed; each must be inside the vocabulary), anything else is text for the
// tokenizer.
std::vector<int> read_tokens(const LoadedModel& files, const std::string& path);

}  // namespace qround::cli
