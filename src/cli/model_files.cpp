#include "model_files.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "qround/error.hpp"

namespace qround::cli {

LoadedModel load_model_files(const std::string& model_path, const std::string& tokenizer_path) {
  model::Llama2cModel m = model::Llama2cModel::load(model_path);
  model::Tokenizer t = model::Tokenizer::load(tokenizer_path, m.config().vocab_size);
  return {std::move(m), std::move(t)};
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot open text file '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("cannot read text file '{}'", path));
  return ss.str();
}

}  // namespace qround::cli
