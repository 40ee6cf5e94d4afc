// Shared by `qround model` and `qround generate`: the llama2.c model, its tokenizer and texts.
#pragma once

#include <string>

#include "qround/model/llama2c.hpp"
#include "args.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround::cli {

struct LoadedModel {
  model::Llama2cModel model;
  model::Tokenizer tokenizer;
};

struct ModelPaths {
  std::string model, tokenizer;
};
// Takes the required --model and --tokenizer options.
ModelPaths take_model_paths(Args& args);
// Model + tokenizer (vocabulary size from the model header).
LoadedModel load_model_files(const ModelPaths& paths);
// A whole text file (IoError if unreadable).
std::string read_text_file(const std::string& path);

}  // namespace qround::cli
