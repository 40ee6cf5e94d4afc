#include "qround/model/gguf_llama.hpp"

#include <fmt/format.h>

#include <cmath>
#include <set>

#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"

namespace qround::model {
namespace {

constexpr const char* kArch = "llama";
constexpr int kMaxDim = 1 << 20;
constexpr int kMaxLayers = 4096;
constexpr int kByteTokens = 256;
// tokenizer.ggml.token_type values (llama.cpp's llama_token_type / gguf-py TokenType).
constexpr std::int32_t kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenByte = 6;
constexpr const char* kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// The per-block tensors in the order BlockLinear numbers them, as GGUF names them.
constexpr const char* kLinearGgufNames[kLinearsPerBlock] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

std::string byte_piece(int b) { return fmt::format("<0x{:02X}>", b); }

class Reader {
 public:
  Reader(const io::GgufFile& file, std::string what) : file_(file), what_(std::move(what)) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw IoError(fmt::format("{}: {}", what_, message));
  }

  // An integer key of any integer type, in [lo, hi]; `fallback` when absent (or an error when
  // there is none).
  std::int64_t integer(const std::string& key, std::int64_t lo, std::int64_t hi,
                       std::optional<std::int64_t> fallback = std::nullopt) const {
    const io::GgufValue* v = file_.find(key);
    if (!v) {
      if (fallback) return *fallback;
      fail(fmt::format("the key {} is missing (a llama model needs it)", key));
    }
    std::optional<std::int64_t> x;
    if (!v->is_array())
      std::visit(
          [&](const auto& values) {
            using T = typename std::decay_t<decltype(values)>::value_type;
            if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
              if constexpr (std::is_same_v<T, std::uint64_t>) {
                if (values.front() <= static_cast<std::uint64_t>(INT64_MAX))
                  x = static_cast<std::int64_t>(values.front());
              } else {
                x = static_cast<std::int64_t>(values.front());
              }
            }
          },
          v->storage());
    if (!x) fail(fmt::format("the key {} holds {}, expected an integer", key, v->describe()));
    if (*x < lo || *x > hi)
      fail(fmt::format("the key {} = {} is outside [{}, {}]", key, *x, lo, hi));
    return *x;
  }

  float real(const std::string& key, std::optional<float> fallback = std::nullopt) const {
    const io::GgufValue* v = file_.find(key);
    if (!v) {
      if (fallback) return *fallback;
      fail(fmt::format("the key {} is missing (a llama model needs it)", key));
    }
    double x = NAN;
    if (!v->is_array() && v->element_type() == io::GgufType::kFloat32)
      x = v->get<float>();
    else if (!v->is_array() && v->element_type() == io::GgufType::kFloat64)
      x = v->get<double>();
    else
      fail(fmt::format("the key {} holds {}, expected a float32", key, v->describe()));
    if (!std::isfinite(x)) fail(fmt::format("the key {} = {} is not finite", key, x));
    return static_cast<float>(x);
  }

  const io::GgufTensor& tensor(const std::string& name, std::vector<std::int64_t> shape) const {
    if (!file_.has_tensor(name)) fail(fmt::format("the tensor {} is missing", name));
    const io::GgufTensor& t = file_.tensor(name);
    if (t.shape != shape)
      fail(fmt::format("the tensor {} has shape [{}], expected [{}] (ggml order)", name,
                       fmt::join(t.shape, ", "), fmt::join(shape, ", ")));
    return t;
  }

  MatrixF matrix(const std::string& name, Index rows, Index cols) const {
    const io::GgufTensor& t = tensor(name, {cols, rows});
    return finite(name, dequantize_ggml(t.type, t.data(), t.bytes(), rows, cols));
  }

  VectorF vector(const std::string& name, Index n) const {
    const io::GgufTensor& t = tensor(name, {n});
    if (t.type != GgmlType::kF32 && t.type != GgmlType::kF16 && t.type != GgmlType::kBF16)
      fail(fmt::format("the norm tensor {} is {}, expected f32, f16 or bf16", name,
                       to_string(t.type)));
    const MatrixF m = finite(name, dequantize_ggml(t.type, t.data(), t.bytes(), 1, n));
    return m.row(0).transpose();
  }

 private:
  MatrixF finite(const std::string& name, MatrixF m) const {
    for (Index i = 0; i < m.size(); ++i)
      if (!std::isfinite(m.data()[i]))
        fail(fmt::format("the tensor {} has a non-finite value at flat index {}", name, i));
    return m;
  }

  const io::GgufFile& file_;
  std::string what_;
};

// The tokenizer from tokenizer.ggml.*, or why not.
std::optional<Tokenizer> read_tokenizer(const io::GgufFile& file, int vocab, std::string& why) {
  const io::GgufValue* model = file.find("tokenizer.ggml.model");
  if (!model || model->is_array() || model->element_type() != io::GgufType::kString) {
    why = "the file has no tokenizer.ggml.model string";
    return std::nullopt;
  }
  if (model->get<std::string>() != "llama") {
    why = fmt::format(
        "tokenizer.ggml.model is '{}'; qround runs only the SentencePiece-style "
        "'llama' tokenizer",
        model->get<std::string>());
    return std::nullopt;
  }
  const io::GgufValue* tokens = file.find("tokenizer.ggml.tokens");
  const io::GgufValue* scores = file.find("tokenizer.ggml.scores");
  if (!tokens || !tokens->is_array() || tokens->element_type() != io::GgufType::kString ||
      !scores || !scores->is_array() || scores->element_type() != io::GgufType::kFloat32) {
    why = "tokenizer.ggml.tokens (strings) and tokenizer.ggml.scores (float32) are required";
    return std::nullopt;
  }
  const auto& pieces = tokens->get_array<std::string>();
  const auto& score = scores->get_array<float>();
  if (static_cast<int>(pieces.size()) != vocab || static_cast<int>(score.size()) != vocab) {
    why = fmt::format("the tokenizer has {} tokens and {} scores, the embedding {} rows",
                      pieces.size(), score.size(), vocab);
    return std::nullopt;
  }
  const io::GgufValue* types = file.find("tokenizer.ggml.token_type");
  const std::vector<std::int32_t>* type =
      types && types->is_array() && types->element_type() == io::GgufType::kInt32
          ? &types->get_array<std::int32_t>()
          : nullptr;
  if (type && static_cast<int>(type->size()) != vocab) type = nullptr;
  auto special = [&](const char* key, int expected) {
    const io::GgufValue* v = file.find(key);
    if (!v || v->is_array()) return true;
    std::int64_t id = -1;
    if (v->element_type() == io::GgufType::kUint32)
      id = v->get<std::uint32_t>();
    else if (v->element_type() == io::GgufType::kInt32)
      id = v->get<std::int32_t>();
    return id == expected;
  };
  if (vocab < Tokenizer::kByteFallbackBase + kByteTokens ||
      !special("tokenizer.ggml.bos_token_id", 1) || !special("tokenizer.ggml.eos_token_id", 2) ||
      !special("tokenizer.ggml.unknown_token_id", 0)) {
    why = "the vocabulary does not have <unk> 0, <s> 1, </s> 2 and the byte tokens at 3..258";
    return std::nullopt;
  }
  std::vector<std::string> out(vocab);
  for (int i = 0; i < vocab; ++i) {
    const bool is_byte =
        i >= Tokenizer::kByteFallbackBase && i < Tokenizer::kByteFallbackBase + kByteTokens;
    if (is_byte && pieces[i] != byte_piece(i - Tokenizer::kByteFallbackBase)) {
      why = fmt::format("token {} is '{}', expected the byte token {}", i, pieces[i],
                        byte_piece(i - Tokenizer::kByteFallbackBase));
      return std::nullopt;
    }
    if (!std::isfinite(score[i])) {
      why = fmt::format("token {} has a non-finite score", i);
      return std::nullopt;
    }
    const bool control = (type && ((*type)[i] == kTokenControl || (*type)[i] == kTokenUnknown)) ||
                         i < Tokenizer::kByteFallbackBase;
    // Control pieces wrapped in newlines as llama2.c stores them, so ordinary text never merges
    // into them; spaces are plain spaces as the Tokenizer expects.
    out[i] = control && i != Tokenizer::kUnk ? "\n" + pieces[i] + "\n"
                                             : replace_all(pieces[i], kSpaceMarker, " ");
  }
  return Tokenizer(std::move(out), score);
}

}  // namespace

std::string gguf_linear_name(int linear_index) {
  if (linear_index < 0)
    throw InvalidArgument(fmt::format("linear layer {} is negative", linear_index));
  return fmt::format("blk.{}.{}.weight", linear_index / kLinearsPerBlock,
                     kLinearGgufNames[linear_index % kLinearsPerBlock]);
}

GgufLlama gguf_llama_from(const io::GgufFile& file, const std::string& what) {
  const Reader in(file, what);
  const io::GgufValue* arch = file.find(io::kGgufKeyArchitecture);
  if (!arch || arch->is_array() || arch->element_type() != io::GgufType::kString)
    in.fail("general.architecture is missing or not a string");
  if (arch->get<std::string>() != kArch)
    in.fail(fmt::format("architecture '{}' is not supported: qround runs the 'llama' architecture",
                        arch->get<std::string>()));
  if (in.integer("llama.expert_count", 0, kMaxLayers, 0) > 0)
    in.fail("llama.expert_count > 0: mixture-of-experts models are not supported");
  if (const io::GgufValue* scaling = file.find("llama.rope.scaling.type")) {
    if (scaling->is_array() || scaling->element_type() != io::GgufType::kString ||
        scaling->get<std::string>() != "none")
      in.fail(fmt::format("llama.rope.scaling.type is {}: RoPE scaling is not supported",
                          scaling->describe()));
  }

  LlamaConfig c;
  c.seq_len = static_cast<int>(in.integer("llama.context_length", 1, kMaxDim));
  c.dim = static_cast<int>(in.integer("llama.embedding_length", 1, kMaxDim));
  c.n_layers = static_cast<int>(in.integer("llama.block_count", 1, kMaxLayers));
  c.hidden_dim = static_cast<int>(in.integer("llama.feed_forward_length", 1, kMaxDim));
  c.n_heads = static_cast<int>(in.integer("llama.attention.head_count", 1, c.dim));
  c.n_kv_heads =
      static_cast<int>(in.integer("llama.attention.head_count_kv", 1, c.n_heads, c.n_heads));
  c.rms_eps = in.real("llama.attention.layer_norm_rms_epsilon");
  c.rope_theta = in.real("llama.rope.freq_base", 10000.0f);
  if (c.dim % c.n_heads != 0)
    in.fail(
        fmt::format("llama.embedding_length {} is not a multiple of "
                    "llama.attention.head_count {}",
                    c.dim, c.n_heads));
  const int head = c.dim / c.n_heads;
  for (const char* key :
       {"llama.rope.dimension_count", "llama.attention.key_length", "llama.attention.value_length"})
    if (in.integer(key, 1, kMaxDim, head) != head)
      in.fail(fmt::format("{} = {} differs from the head size {}: not supported", key,
                          in.integer(key, 1, kMaxDim), head));
  if (!file.has_tensor(kGgufTokenEmbedding))
    in.fail(fmt::format("the tensor {} is missing", kGgufTokenEmbedding));
  const auto& embd_shape = file.tensor(kGgufTokenEmbedding).shape;
  if (embd_shape.size() != 2 || embd_shape[0] != c.dim || embd_shape[1] < 1 ||
      embd_shape[1] > 16 * kMaxDim)
    in.fail(fmt::format("the tensor {} has shape [{}], expected [{}, vocab]", kGgufTokenEmbedding,
                        fmt::join(embd_shape, ", "), c.dim));
  c.vocab_size = static_cast<int>(embd_shape[1]);
  if (in.integer("llama.vocab_size", 1, 16 * kMaxDim, c.vocab_size) != c.vocab_size)
    in.fail(fmt::format("llama.vocab_size differs from the {} rows of {}", c.vocab_size,
                        kGgufTokenEmbedding));
  c.shared_classifier = !file.has_tensor(kGgufOutput);
  try {
    c.validate("llama config");
  } catch (const IoError& e) {
    in.fail(e.what());
  }

  // Every tensor must be one the model uses.
  std::set<std::string> expected = {kGgufTokenEmbedding, kGgufOutputNorm};
  if (!c.shared_classifier) expected.insert(kGgufOutput);
  for (int b = 0; b < c.n_layers; ++b) {
    expected.insert(fmt::format("blk.{}.attn_norm.weight", b));
    expected.insert(fmt::format("blk.{}.ffn_norm.weight", b));
    for (int l = 0; l < kLinearsPerBlock; ++l)
      expected.insert(gguf_linear_name(b * kLinearsPerBlock + l));
  }
  for (const auto& t : file.tensors())
    if (!expected.count(t.name))
      in.fail(
          fmt::format("unexpected tensor '{}' ({}): a llama model of {} blocks has "
                      "token_embd, blk.N.{{attn_norm, attn_q, attn_k, attn_v, attn_output, "
                      "ffn_norm, ffn_gate, ffn_up, ffn_down}}, output_norm and output",
                      t.name,
                      t.name == "rope_freqs.weight" ? "RoPE frequency factors are "
                                                      "not supported"
                                                    : "not part of the model",
                      c.n_layers));

  LlamaWeights w;
  w.token_embedding = in.matrix(kGgufTokenEmbedding, c.vocab_size, c.dim);
  w.blocks.resize(c.n_layers);
  for (int b = 0; b < c.n_layers; ++b) {
    LlamaBlock& blk = w.blocks[b];
    blk.rms_att = in.vector(fmt::format("blk.{}.attn_norm.weight", b), c.dim);
    blk.rms_ffn = in.vector(fmt::format("blk.{}.ffn_norm.weight", b), c.dim);
    for (int l = 0; l < kLinearsPerBlock; ++l) {
      const auto which = static_cast<BlockLinear>(l);
      const Index rows = which == BlockLinear::kK || which == BlockLinear::kV     ? c.kv_dim()
                         : which == BlockLinear::kW1 || which == BlockLinear::kW3 ? c.hidden_dim
                                                                                  : c.dim;
      const Index cols = which == BlockLinear::kW2 ? c.hidden_dim : c.dim;
      blk.linear[l] = in.matrix(gguf_linear_name(b * kLinearsPerBlock + l), rows, cols);
    }
  }
  w.rms_final = in.vector(kGgufOutputNorm, c.dim);
  if (!c.shared_classifier) w.classifier = in.matrix(kGgufOutput, c.vocab_size, c.dim);

  GgufLlama out{LlamaModel(c, std::move(w)), std::nullopt, {}, {}, {}, {}};
  out.tokenizer = read_tokenizer(file, c.vocab_size, out.tokenizer_error);
  for (const auto& [key, value] : file.metadata())
    if (key.rfind("tokenizer.", 0) == 0) out.tokenizer_metadata.emplace_back(key, value);
  if (const io::GgufValue* name = file.find("general.name"))
    if (!name->is_array() && name->element_type() == io::GgufType::kString)
      out.name = name->get<std::string>();
  for (const auto& t : file.tensors()) out.tensor_types.emplace_back(t.name, t.type);
  return out;
}

GgufLlama load_gguf_llama(const std::string& path) {
  return gguf_llama_from(io::read_gguf(path), fmt::format("GGUF '{}'", path));
}

namespace {

// The tokenizer in llama.cpp's vocabulary form (llama-vocab.cpp, LLAMA_VOCAB_TYPE_SPM).
void write_tokenizer(io::GgufFile& f, const Tokenizer& tokenizer, int vocab) {
  auto u32 = [&](const char* key, int v) {
    f.set(key, io::GgufValue::scalar(static_cast<std::uint32_t>(v)));
  };
  std::vector<std::string> pieces(vocab);
  std::vector<float> scores(vocab);
  std::vector<std::int32_t> types(vocab, kTokenNormal);
  for (int i = 0; i < vocab; ++i) {
    std::string p = tokenizer.piece(i);
    scores[i] = tokenizer.score(i);
    if (i == Tokenizer::kUnk) {
      types[i] = kTokenUnknown;
    } else if (i == Tokenizer::kBos || i == Tokenizer::kEos) {
      types[i] = kTokenControl;  // stored as "\n<s>\n" by llama2.c
      if (p.size() >= 2 && p.front() == '\n' && p.back() == '\n') p = p.substr(1, p.size() - 2);
    } else if (i < Tokenizer::kByteFallbackBase + kByteTokens) {
      types[i] = kTokenByte;
      if (p != byte_piece(i - Tokenizer::kByteFallbackBase))
        throw InvalidArgument(
            fmt::format("llama_to_gguf: token {} is '{}', expected the byte token {}", i, p,
                        byte_piece(i - Tokenizer::kByteFallbackBase)));
    } else {
      p = replace_all(p, " ", kSpaceMarker);
    }
    pieces[i] = std::move(p);
  }
  f.set("tokenizer.ggml.model", io::GgufValue::string("llama"));
  f.set("tokenizer.ggml.tokens", io::GgufValue::array(std::move(pieces)));
  f.set("tokenizer.ggml.scores", io::GgufValue::array(std::move(scores)));
  f.set("tokenizer.ggml.token_type", io::GgufValue::array(std::move(types)));
  u32("tokenizer.ggml.bos_token_id", Tokenizer::kBos);
  u32("tokenizer.ggml.eos_token_id", Tokenizer::kEos);
  u32("tokenizer.ggml.unknown_token_id", Tokenizer::kUnk);
  f.set("tokenizer.ggml.add_bos_token", io::GgufValue::scalar(true));
  f.set("tokenizer.ggml.add_eos_token", io::GgufValue::scalar(false));
}

}  // namespace

io::GgufFile llama_to_gguf(const LlamaModel& model, const Tokenizer& tokenizer,
                           const LlamaGgufOptions& options) {
  return llama_to_gguf(model, &tokenizer, options);
}

io::GgufFile llama_to_gguf(const LlamaModel& model, const Tokenizer* tokenizer,
                           const LlamaGgufOptions& options) {
  const LlamaConfig& c = model.config();
  const GgmlType ft = options.float_type;
  if (ft != GgmlType::kF32 && ft != GgmlType::kF16 && ft != GgmlType::kBF16)
    throw InvalidArgument(
        fmt::format("llama_to_gguf: float type {} is not f32, f16 or bf16", to_string(ft)));
  if (tokenizer && tokenizer->vocab_size() != c.vocab_size)
    throw InvalidArgument(fmt::format("llama_to_gguf: the tokenizer has {} tokens, the model {}",
                                      tokenizer->vocab_size(), c.vocab_size));
  if (tokenizer && c.vocab_size < Tokenizer::kByteFallbackBase + kByteTokens)
    throw InvalidArgument("llama_to_gguf: the vocabulary has no room for the 256 byte tokens");

  io::GgufFile f;
  io::set_standard_metadata(f, kArch);
  if (!options.name.empty()) f.set("general.name", io::GgufValue::string(options.name));
  if (options.file_type) f.set("general.file_type", io::GgufValue::scalar(*options.file_type));
  auto u32 = [&](const char* key, int v) {
    f.set(key, io::GgufValue::scalar(static_cast<std::uint32_t>(v)));
  };
  u32("llama.context_length", c.seq_len);
  u32("llama.embedding_length", c.dim);
  u32("llama.block_count", c.n_layers);
  u32("llama.feed_forward_length", c.hidden_dim);
  u32("llama.attention.head_count", c.n_heads);
  u32("llama.attention.head_count_kv", c.n_kv_heads);
  u32("llama.rope.dimension_count", c.head_size());
  u32("llama.vocab_size", c.vocab_size);
  f.set("llama.attention.layer_norm_rms_epsilon", io::GgufValue::scalar(c.rms_eps));
  f.set("llama.rope.freq_base", io::GgufValue::scalar(c.rope_theta));

  if (tokenizer) {
    write_tokenizer(f, *tokenizer, c.vocab_size);
  } else {
    bool has_model = false;
    for (const auto& [key, value] : options.tokenizer_metadata) {
      if (key.rfind("tokenizer.", 0) != 0)
        throw InvalidArgument(fmt::format(
            "llama_to_gguf: tokenizer metadata key '{}' is not a tokenizer.* key", key));
      has_model = has_model || key == "tokenizer.ggml.model";
      f.set(key, value);
    }
    if (!has_model)
      throw InvalidArgument(
          "llama_to_gguf: no tokenizer: give a Tokenizer or tokenizer metadata with "
          "tokenizer.ggml.model (llama.cpp cannot load a model without a vocabulary)");
  }
  for (const auto& [key, value] : options.metadata) f.set(key, value);

  std::set<std::string> used;
  auto add = [&](const std::string& name, const MatrixFRef& w, bool is_norm) {
    std::vector<std::int64_t> shape = is_norm ? std::vector<std::int64_t>{w.size()}
                                              : std::vector<std::int64_t>{w.cols(), w.rows()};
    const auto given = options.tensors.find(name);
    if (given != options.tensors.end()) {
      const GgufTensorBytes& t = given->second;
      f.add_tensor(name, t.type, std::move(shape), t.bytes.data(), t.bytes.size());
      used.insert(name);
      return;
    }
    const std::vector<std::uint8_t> bytes = encode_ggml_float(is_norm ? GgmlType::kF32 : ft, w);
    f.add_tensor(name, is_norm ? GgmlType::kF32 : ft, std::move(shape), bytes.data(), bytes.size());
  };
  const LlamaWeights& w = model.weights();
  add(kGgufTokenEmbedding, w.token_embedding, false);
  for (int b = 0; b < c.n_layers; ++b) {
    add(fmt::format("blk.{}.attn_norm.weight", b), w.blocks[b].rms_att.transpose(), true);
    for (int l = 0; l < kLinearsPerBlock; ++l) {
      const int i = b * kLinearsPerBlock + l;
      add(gguf_linear_name(i), model.linear(i), false);
    }
    add(fmt::format("blk.{}.ffn_norm.weight", b), w.blocks[b].rms_ffn.transpose(), true);
  }
  add(kGgufOutputNorm, w.rms_final.transpose(), true);
  if (!c.shared_classifier) add(kGgufOutput, w.classifier, false);
  for (const auto& [name, t] : options.tensors)
    if (!used.count(name))
      throw InvalidArgument(fmt::format("llama_to_gguf: the model has no tensor '{}'", name));
  return f;
}

void write_gguf_llama(const std::string& path, const LlamaModel& model, const Tokenizer& tokenizer,
                      const LlamaGgufOptions& options) {
  io::write_gguf(path, llama_to_gguf(model, &tokenizer, options));
}

void write_gguf_llama(const std::string& path, const LlamaModel& model, const Tokenizer* tokenizer,
                      const LlamaGgufOptions& options) {
  io::write_gguf(path, llama_to_gguf(model, tokenizer, options));
}

}  // namespace qround::model
