#include "model_files.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "qround/error.hpp"

namespace qround::cli {

ModelPaths take_model_paths(Args& args) {
  ModelPaths p;
  p.model = args.take_required("model");
  p.tokenizer = args.take_required("tokenizer");
  return p;
}

LoadedModel load_model_files(const ModelPaths& paths) {
  model::Llama2cModel m = model::Llama2cModel::load(paths.model);
  model::Tokenizer t = model::Tokenizer::load(paths.tokenizer, m.config().vocab_size);
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
