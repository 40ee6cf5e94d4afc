// Shared by `qround model` and `qround generate`: the llama2.c model, its tokenizer and texts.
#pragma once

#include <string>

#include "qround/model/llama2c.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround::cli {

struct LoadedModel {
  model::Llama2cModel model;
  model::Tokenizer tokenizer;
};

// --model / --tokenizer paths → model + tokenizer (vocabulary size from the model header).
LoadedModel load_model_files(const std::string& model_path, const std::string& tokenizer_path);
// A whole text file (IoError if unreadable).
std::string read_text_file(const std::string& path);

}  // namespace qround::cli
