// llama GGUF models: the converted stories260K computes exactly what the llama2.c checkpoint does,
// its tokenizer tokenizes alike, float types round as ggml does, and malformed files are refused
// by name. quantize_to_gguf: every tensor dequantizes (in ggml's formulas) to the weights the
// quantized model simulates, and the written file reproduces that model bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "model_test_data.hpp"
#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/type_mix.hpp"

namespace qround::model {
namespace {

bool same_bits(const MatrixF& a, const MatrixF& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

struct Stories {
  LlamaModel model;
  Tokenizer tokenizer;
};

Stories load_stories(const std::string& dir) {
  LlamaModel m = load_llama2c(dir + "/stories260K.bin");
  Tokenizer t = Tokenizer::load(dir + "/tok512.bin", m.config().vocab_size);
  return {std::move(m), std::move(t)};
}

// Through the bytes, as a reader of the written file sees it.
GgufLlama round_trip(const io::GgufFile& f) {
  return gguf_llama_from(io::parse_gguf(io::serialize_gguf(f), "test image"), "test image");
}

std::vector<int> window(const Tokenizer& tok, const std::string& text, int seq_len) {
  std::vector<int> w = {Tokenizer::kBos};
  for (int id : tok.encode(text)) {
    if (static_cast<int>(w.size()) == seq_len) break;
    w.push_back(id);
  }
  return w;
}

TEST(GgufLlama, ConvertedStoriesComputesExactlyTheCheckpoint) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  const GgufLlama g = round_trip(llama_to_gguf(s.model, s.tokenizer));
  const auto& a = s.model.config();
  const auto& b = g.model.config();
  EXPECT_EQ(std::make_tuple(a.dim, a.hidden_dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size,
                            a.seq_len, a.shared_classifier),
            std::make_tuple(b.dim, b.hidden_dim, b.n_layers, b.n_heads, b.n_kv_heads, b.vocab_size,
                            b.seq_len, b.shared_classifier));
  EXPECT_EQ(b.rms_eps, 1e-5f);
  EXPECT_EQ(b.rope_theta, 10000.0f);
  ASSERT_TRUE(g.tokenizer.has_value()) << g.tokenizer_error;
  const std::string text = ::qround::testing::slurp(dir + "/tinystories_train_head.txt");
  // Identical logits on full-length windows from three places in the text (so the NLL of the
  // whole file, 1.8987, is the checkpoint's; the CLI test of `qround convert` measures it).
  for (std::size_t at : {std::size_t{0}, std::size_t{50000}, std::size_t{150000}}) {
    const auto w = window(s.tokenizer, text.substr(at, 4000), a.seq_len);
    EXPECT_TRUE(same_bits(s.model.forward(w), g.model.forward(w))) << "window at char " << at;
  }
  for (int i = 0; i < s.model.num_linear(); ++i)
    EXPECT_TRUE(same_bits(s.model.linear(i), g.model.linear(i))) << gguf_linear_name(i);
  EXPECT_EQ(g.tensor_types.size(), 2u + 9u * static_cast<std::size_t>(a.n_layers));
}

TEST(GgufLlama, TokenizerFromMetadataTokenizesLikeTheLlama2cFile) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  const GgufLlama g = round_trip(llama_to_gguf(s.model, s.tokenizer));
  ASSERT_TRUE(g.tokenizer.has_value()) << g.tokenizer_error;
  for (const char* file : {"/tinystories_train_head.txt", "/aesop_fables.txt"}) {
    const std::string text = ::qround::testing::slurp(dir + file).substr(0, 30000);
    const auto ids = s.tokenizer.encode(text);
    EXPECT_EQ(g.tokenizer->encode(text), ids) << file;
    EXPECT_EQ(g.tokenizer->decode(ids), s.tokenizer.decode(ids)) << file;
  }
  // The vocabulary as llama.cpp reads it: "▁" for spaces, control and byte token types.
  const io::GgufFile f = llama_to_gguf(s.model, s.tokenizer);
  const auto& tokens = f.get("tokenizer.ggml.tokens").get_array<std::string>();
  const auto& types = f.get("tokenizer.ggml.token_type").get_array<std::int32_t>();
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[259], "\xE2\x96\x81t");  // " t"
  EXPECT_EQ(types[0], 2);
  EXPECT_EQ(types[1], 3);
  EXPECT_EQ(types[3], 6);
  EXPECT_EQ(types[259], 1);
  EXPECT_EQ(f.get("general.architecture").get<std::string>(), "llama");
  EXPECT_EQ(f.get("llama.rope.dimension_count").get<std::uint32_t>(), 8u);
}

TEST(GgufLlama, FloatTypesStoreTheWeightsRoundedAsGgmlDoes) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  for (GgmlType t : {GgmlType::kF16, GgmlType::kBF16}) {
    LlamaGgufOptions o;
    o.float_type = t;
    const io::GgufFile f = llama_to_gguf(s.model, s.tokenizer, o);
    EXPECT_EQ(f.tensor("blk.0.attn_q.weight").type, t);
    EXPECT_EQ(f.tensor("blk.0.attn_norm.weight").type, GgmlType::kF32);  // norms stay f32
    const GgufLlama g = round_trip(f);
    const MatrixF& w = s.model.linear(3);
    const MatrixF& r = g.model.linear(3);
    for (Index i = 0; i < w.size(); ++i) {
      const float expect = t == GgmlType::kF16 ? round_to_fp16(w.data()[i])
                                               : bf16_to_fp32(fp32_to_bf16(w.data()[i]));
      ASSERT_EQ(r.data()[i], expect) << to_string(t) << " at " << i;
    }
  }
}

TEST(GgufLlama, MalformedModelsAreRefusedByName) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  const io::GgufFile good = llama_to_gguf(s.model, s.tokenizer);
  auto expect_error = [&](io::GgufFile f, const std::string& needle) {
    try {
      round_trip(f);
      ADD_FAILURE() << "accepted a file that should fail with '" << needle << "'";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {
    io::GgufFile f = good;
    f.set("general.architecture", io::GgufValue::string("qwen2"));
    expect_error(f, "architecture 'qwen2'");
  }
  {
    io::GgufFile f = good;
    f.erase("llama.block_count");
    expect_error(f, "llama.block_count is missing");
  }
  {
    io::GgufFile f = good;
    f.set("llama.embedding_length", io::GgufValue::string("64"));
    expect_error(f, "llama.embedding_length holds string");
  }
  {
    io::GgufFile f = good;
    f.set("llama.feed_forward_length", io::GgufValue::scalar(std::uint32_t{173}));
    expect_error(f, "blk.0.ffn_gate.weight has shape [64, 172], expected [64, 173]");
  }
  {
    io::GgufFile f = good;
    f.set("llama.attention.head_count", io::GgufValue::scalar(std::uint32_t{7}));
    expect_error(f, "not a multiple of llama.attention.head_count 7");
  }
  {
    io::GgufFile f = good;
    f.set("llama.rope.dimension_count", io::GgufValue::scalar(std::uint32_t{4}));
    expect_error(f, "llama.rope.dimension_count = 4 differs from the head size 8");
  }
  {
    io::GgufFile f = good;
    f.set("llama.expert_count", io::GgufValue::scalar(std::uint32_t{8}));
    expect_error(f, "mixture-of-experts");
  }
  {
    io::GgufFile f = good;
    const float v = 0.0f;
    f.add_tensor("rope_freqs.weight", GgmlType::kF32, {1}, &v, sizeof v);
    expect_error(f, "rope_freqs.weight");
  }
  {
    io::GgufFile f = good;  // a file without blk.4: every key says 5 blocks
    f.set("llama.block_count", io::GgufValue::scalar(std::uint32_t{4}));
    expect_error(f, "unexpected tensor 'blk.4.");
  }
  {
    // A NaN weight.
    LlamaModel m = s.model;
    MatrixF w = m.linear(0);
    w(3, 5) = std::nanf("");
    LlamaGgufOptions o;
    o.tensors["blk.0.attn_q.weight"] = {GgmlType::kF32, encode_ggml_float(GgmlType::kF32, w)};
    expect_error(llama_to_gguf(m, s.tokenizer, o), "blk.0.attn_q.weight has a non-finite value");
  }
  // Truncated images are the container's IoError, whatever the cut.
  const auto bytes = io::serialize_gguf(good);
  for (std::size_t cut : {std::size_t{10}, bytes.size() / 3, bytes.size() - 1}) {
    std::vector<unsigned char> head(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    EXPECT_THROW(gguf_llama_from(io::parse_gguf(head, "cut"), "cut"), IoError) << cut;
  }
}

TEST(GgufLlama, AnotherTokenizerLoadsTheModelAndSaysWhyTextCannotBeTokenized) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  io::GgufFile f = llama_to_gguf(s.model, s.tokenizer);
  f.set("tokenizer.ggml.model", io::GgufValue::string("gpt2"));
  const GgufLlama g = round_trip(f);
  EXPECT_FALSE(g.tokenizer.has_value());
  EXPECT_NE(g.tokenizer_error.find("'gpt2'"), std::string::npos) << g.tokenizer_error;
  f.set("tokenizer.ggml.model", io::GgufValue::string("llama"));
  auto tokens = f.get("tokenizer.ggml.tokens").get_array<std::string>();
  tokens[10] = "x";
  f.set("tokenizer.ggml.tokens", io::GgufValue::array(tokens));
  const GgufLlama h = round_trip(f);
  EXPECT_FALSE(h.tokenizer.has_value());
  EXPECT_NE(h.tokenizer_error.find("token 10"), std::string::npos) << h.tokenizer_error;
}

// A vocabulary qround cannot run (a BPE one here) is carried into the written file verbatim, so
// the engine tokenizes the quantized model as it did the original.
TEST(GgufLlama, AnUnrunnableTokenizerIsWrittenOnUnchanged) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  io::GgufFile f = llama_to_gguf(s.model, s.tokenizer);
  f.set("tokenizer.ggml.model", io::GgufValue::string("gpt2"));
  f.set("tokenizer.ggml.merges", io::GgufValue::array(std::vector<std::string>{"a b", "ab c"}));
  f.set("tokenizer.ggml.pre", io::GgufValue::string("default"));
  const GgufLlama g = round_trip(f);
  ASSERT_FALSE(g.tokenizer.has_value());
  std::vector<std::string> keys;
  for (const auto& [key, value] : f.metadata())
    if (key.rfind("tokenizer.", 0) == 0) keys.push_back(key);
  ASSERT_EQ(g.tokenizer_metadata.size(), keys.size());
  LlamaGgufOptions o;
  o.tokenizer_metadata = g.tokenizer_metadata;
  const io::GgufFile out = llama_to_gguf(g.model, nullptr, o);
  for (const std::string& key : keys) {
    const io::GgufValue* a = f.find(key);
    const io::GgufValue* b = out.find(key);
    ASSERT_NE(b, nullptr) << key;
    EXPECT_TRUE(*a == *b) << key;
  }
  EXPECT_EQ(out.get("tokenizer.ggml.model").get<std::string>(), "gpt2");
  // Neither a tokenizer nor its keys: refused, since llama.cpp cannot load a model without one.
  EXPECT_THROW(llama_to_gguf(g.model, nullptr, LlamaGgufOptions{}), InvalidArgument);
  LlamaGgufOptions bad;
  bad.tokenizer_metadata = {{"general.name", io::GgufValue::string("x")}};
  EXPECT_THROW(llama_to_gguf(g.model, nullptr, bad), InvalidArgument);
}

TEST(GgufQuantize, PureTypesFallBackAsLlamaCppDoes) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  struct Case {
    GgmlType type, wide, down;  // 64-column matrices, ffn_down (172 columns)
  };
  for (const Case& c : {Case{GgmlType::kQ4_0, GgmlType::kQ4_0, GgmlType::kF16},
                        Case{GgmlType::kQ4_K, GgmlType::kQ5_0, GgmlType::kF16},
                        Case{GgmlType::kQ5_K, GgmlType::kQ5_1, GgmlType::kF16},
                        Case{GgmlType::kQ6_K, GgmlType::kQ8_0, GgmlType::kF16},
                        Case{GgmlType::kQ2_K, GgmlType::kQ4_0, GgmlType::kF16},
                        Case{GgmlType::kQ3_K, GgmlType::kQ4_0, GgmlType::kF16},
                        Case{GgmlType::kF16, GgmlType::kF16, GgmlType::kF16}}) {
    const auto plan = pure_tensor_types(s.model, c.type);
    ASSERT_EQ(plan.size(), 1u + 35u);  // token_embd + 5 × 7 (output is tied)
    for (const auto& t : plan) {
      const bool down = t.name.find("ffn_down") != std::string::npos;
      EXPECT_EQ(t.type, down ? c.down : c.wide) << to_string(c.type) << " " << t.name;
      EXPECT_FALSE(t.reason.empty());
    }
  }
}

class GgufQuantizeStories : public ::testing::TestWithParam<Method> {};

TEST_P(GgufQuantizeStories, FileDequantizesToTheSimulatedModel) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  const std::string text = ::qround::testing::slurp(dir + "/tinystories_train_head.txt");
  const auto calib = make_eval_windows(s.tokenizer.encode(text.substr(0, 6000)), 256);
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ6_K}) {
    GgufQuantizeOptions o;
    o.sequential.round.method = GetParam();
    o.sequential.round.iterations = GetParam() == Method::kGptq ? -1 : 40;
    o.sequential.round.grid.search = ScaleSearch::kHessian;
    o.types = pure_tensor_types(s.model, type);
    LlamaModel q = s.model;
    const GgufQuantization r = quantize_to_gguf(q, calib, o);
    EXPECT_EQ(r.layers.layers.size(), 30u);  // every linear but the five f16 ffn_down
    for (const auto& l : r.layers.layers)
      EXPECT_LE(l.quantized.report.loss, l.quantized.report.loss_rtn * (1 + 1e-9) + 1e-12)
          << l.name;
    const GgufLlama back = round_trip(llama_to_gguf(q, s.tokenizer, r.tensors));
    for (int i = 0; i < q.num_linear(); ++i)
      ASSERT_TRUE(same_bits(q.linear(i), back.model.linear(i))) << gguf_linear_name(i);
    EXPECT_TRUE(same_bits(q.weights().token_embedding, back.model.weights().token_embedding));
    const auto w = window(s.tokenizer, text.substr(9000, 3000), 200);
    EXPECT_TRUE(same_bits(q.forward(w), back.model.forward(w)));
    // Stored types as planned; the quantized weights lie on their type's levels, not the float's.
    EXPECT_EQ(back.tensor_types[0].second, type == GgmlType::kQ6_K ? GgmlType::kQ8_0 : type);
    EXPECT_FALSE(same_bits(q.linear(0), s.model.linear(0)));
    // ffn_down is stored as f16, so the model computes with f16-rounded weights.
    const MatrixF& down = q.linear(6);
    for (Index i = 0; i < down.size(); ++i)
      ASSERT_EQ(down.data()[i], round_to_fp16(s.model.linear(6).data()[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, GgufQuantizeStories,
                         ::testing::Values(Method::kNearest, Method::kGptq, Method::kAdaRound),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(GgufQuantize, CancellationLeavesTheModelFloat) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const Stories s = load_stories(dir);
  const auto calib = make_eval_windows(
      s.tokenizer.encode(
          ::qround::testing::slurp(dir + "/tinystories_train_head.txt").substr(0, 3000)),
      256);
  GgufQuantizeOptions o;
  o.sequential.round.grid.search = ScaleSearch::kHessian;
  o.types = pure_tensor_types(s.model, GgmlType::kQ4_0);
  LlamaModel q = s.model;
  int calls = 0;
  EXPECT_THROW(quantize_to_gguf(q, calib, o, [&](const auto&...) { return ++calls < 5; }),
               Cancelled);
  for (int i = 0; i < q.num_linear(); ++i)
    EXPECT_TRUE(same_bits(q.linear(i), s.model.linear(i))) << i;
  EXPECT_TRUE(same_bits(q.weights().token_embedding, s.model.weights().token_embedding));
  // Bad plans are refused before any work.
  o.types.pop_back();
  EXPECT_THROW(quantize_to_gguf(q, calib, o), InvalidArgument);
  o.types = pure_tensor_types(s.model, GgmlType::kQ4_0);
  o.types.back().type = GgmlType::kQ4_0;
  o.types.back().name = "blk.4.ffn_down.weight";  // 172 columns cannot be q4_0
  EXPECT_THROW(quantize_to_gguf(q, calib, o), InvalidArgument);
}

}  // namespace
}  // namespace qround::model
