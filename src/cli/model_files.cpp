#include "model_files.hpp"

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "qround/error.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/llama2c.hpp"

namespace qround::cli {
namespace {

bool has_gguf_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const model::Tokenizer& LoadedModel::require_tokenizer() const {
  if (!tokenizer)
    throw IoError(
        fmt::format("cannot tokenize text: {}; give token ids instead (a file named "
                    "*.tokens holding whitespace-separated ids)",
                    tokenizer_error));
  return *tokenizer;
}

ModelPaths take_model_paths(Args& args) {
  ModelPaths p;
  p.model = args.take_required("model");
  p.tokenizer = args.take("tokenizer");
  return p;
}

LoadedModel load_model_files(const ModelPaths& paths) {
  if (has_gguf_magic(paths.model)) {
    model::GgufLlama g = model::load_gguf_llama(paths.model);
    LoadedModel out{std::move(g.model),
                    std::move(g.tokenizer),
                    std::move(g.tokenizer_error),
                    std::move(g.tokenizer_metadata),
                    true,
                    std::move(g.name)};
    if (paths.tokenizer)
      out.tokenizer = model::Tokenizer::load(*paths.tokenizer, out.model.config().vocab_size);
    return out;
  }
  if (!paths.tokenizer)
    throw UsageError(
        fmt::format("--tokenizer is required with the llama2.c checkpoint '{}' (a "
                    "GGUF model carries its own)",
                    paths.model));
  model::LlamaModel m = model::load_llama2c(paths.model);
  model::Tokenizer t = model::Tokenizer::load(*paths.tokenizer, m.config().vocab_size);
  return {std::move(m), std::move(t), {}, {}, false, {}};
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("cannot open text file '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("cannot read text file '{}'", path));
  return ss.str();
}

std::vector<int> read_tokens(const LoadedModel& files, const std::string& path) {
  if (!ends_with(path, ".tokens")) return files.require_tokenizer().encode(read_text_file(path));
  std::istringstream in(read_text_file(path));
  std::vector<int> ids;
  std::string word;
  const int vocab = files.model.config().vocab_size;
  while (in >> word) {
    std::size_t used = 0;
    long v = -1;
    try {
      v = std::stol(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v >= vocab)
      throw IoError(fmt::format("token file '{}': '{}' (token {}) is not an id in [0, {})", path,
                                word, ids.size(), vocab));
    ids.push_back(static_cast<int>(v));
  }
  return ids;
}

}  // namespace qround::cli
