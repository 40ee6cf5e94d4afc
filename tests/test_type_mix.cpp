// llama-quantize's type mixes: the tables llama.cpp's rules give (src/llama-quant.cpp), written
// out plainly for stories260K's shapes and for Llama-2-7B / 70B shapes.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "qround/error.hpp"
#include "qround/model/type_mix.hpp"

namespace qround::model {
namespace {

LlamaConfig config(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, bool tied) {
  LlamaConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.seq_len = 512;
  c.shared_classifier = tied;
  return c;
}

std::map<std::string, GgmlType> plan(const LlamaConfig& c, LlamaFileType t, bool pure = false,
                                     bool imatrix = false) {
  std::map<std::string, GgmlType> out;
  for (const auto& choice : plan_tensor_types(c, {t, pure, imatrix})) {
    EXPECT_FALSE(choice.reason.empty()) << choice.name;
    EXPECT_TRUE(out.emplace(choice.name, choice.type).second) << choice.name;
  }
  return out;
}

std::string name(int block, const char* what) {
  return "blk." + std::to_string(block) + "." + what + ".weight";
}

bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

TEST(TypeMix, Stories260KFallsBackLikeLlamaQuantize) {
  const LlamaConfig c = config(64, 172, 5, 8, 4, 512, true);
  const auto q40 = plan(c, LlamaFileType::kQ4_0);
  EXPECT_EQ(q40.size(), 36u);
  EXPECT_EQ(q40.at("token_embd.weight"), GgmlType::kQ8_0);  // tied output: q6_k → 64 columns → q8_0
  for (int b = 0; b < 5; ++b) {
    for (const char* t : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"})
      EXPECT_EQ(q40.at(name(b, t)), GgmlType::kQ4_0) << b << t;
    EXPECT_EQ(q40.at(name(b, "ffn_down")), GgmlType::kF16);  // 172 columns fit no block
  }
  // q4_k_m: every 64-column q4_k → q5_0; attn_v's extra bits (q6_k) → q8_0 in blocks 2 and 4.
  const auto q4km = plan(c, LlamaFileType::kQ4_K_M);
  EXPECT_EQ(q4km.at("token_embd.weight"), GgmlType::kQ8_0);
  for (int b = 0; b < 5; ++b) {
    EXPECT_EQ(q4km.at(name(b, "attn_q")), GgmlType::kQ5_0);
    EXPECT_EQ(q4km.at(name(b, "attn_v")), more_bits(b, 5) ? GgmlType::kQ8_0 : GgmlType::kQ5_0) << b;
    EXPECT_EQ(q4km.at(name(b, "ffn_down")), GgmlType::kF16);
  }
  EXPECT_TRUE(more_bits(2, 5) && more_bits(4, 5) && !more_bits(0, 5));
  // --pure: the type everywhere, with the fallback.
  const auto pure = plan(c, LlamaFileType::kQ4_0, true);
  EXPECT_EQ(pure.at("token_embd.weight"), GgmlType::kQ4_0);
  EXPECT_EQ(pure.at(name(0, "ffn_down")), GgmlType::kF16);
  const auto f16 = plan(c, LlamaFileType::kF16);
  for (const auto& [n, t] : f16) EXPECT_EQ(t, GgmlType::kF16) << n;
}

TEST(TypeMix, Llama7BShapes) {
  const LlamaConfig c = config(4096, 11008, 32, 32, 32, 32000, false);
  const auto q4km = plan(c, LlamaFileType::kQ4_K_M);
  EXPECT_EQ(q4km.size(), 2u + 32u * 7u);
  EXPECT_EQ(q4km.at("token_embd.weight"), GgmlType::kQ4_K);  // untied: the default
  EXPECT_EQ(q4km.at("output.weight"), GgmlType::kQ6_K);
  for (int b = 0; b < 32; ++b) {
    const GgmlType more = more_bits(b, 32) ? GgmlType::kQ6_K : GgmlType::kQ4_K;
    EXPECT_EQ(q4km.at(name(b, "attn_v")), more) << b;
    EXPECT_EQ(q4km.at(name(b, "ffn_down")), more) << b;
    EXPECT_EQ(q4km.at(name(b, "attn_q")), GgmlType::kQ4_K);
    EXPECT_EQ(q4km.at(name(b, "attn_output")), GgmlType::kQ4_K);
  }
  const auto q3km = plan(c, LlamaFileType::kQ3_K_M);
  for (int b = 0; b < 32; ++b) {
    EXPECT_EQ(q3km.at(name(b, "attn_v")), b < 2 ? GgmlType::kQ5_K : GgmlType::kQ4_K) << b;
    EXPECT_EQ(q3km.at(name(b, "ffn_down")), b < 2 ? GgmlType::kQ5_K : GgmlType::kQ4_K) << b;
    EXPECT_EQ(q3km.at(name(b, "attn_output")), GgmlType::kQ4_K);
    EXPECT_EQ(q3km.at(name(b, "ffn_up")), GgmlType::kQ3_K);
  }
  const auto q2k = plan(c, LlamaFileType::kQ2_K);
  EXPECT_EQ(q2k.at(name(7, "attn_v")), GgmlType::kQ3_K);  // n_gqa 1 < 4
  EXPECT_EQ(q2k.at(name(7, "ffn_down")), GgmlType::kQ3_K);
  EXPECT_EQ(q2k.at(name(7, "attn_output")), GgmlType::kQ3_K);
  EXPECT_EQ(q2k.at(name(7, "attn_q")), GgmlType::kQ2_K);
  const auto q4ks = plan(c, LlamaFileType::kQ4_K_S);
  EXPECT_EQ(q4ks.at(name(3, "attn_v")), GgmlType::kQ5_K);
  EXPECT_EQ(q4ks.at(name(4, "attn_v")), GgmlType::kQ4_K);
  EXPECT_EQ(q4ks.at(name(3, "ffn_down")), GgmlType::kQ5_K);
  EXPECT_EQ(q4ks.at(name(4, "ffn_down")), GgmlType::kQ4_K);
  // q4_0 with an importance matrix: the first n/8 ffn_down get q4_1.
  const auto q40i = plan(c, LlamaFileType::kQ4_0, false, true);
  EXPECT_EQ(q40i.at(name(3, "ffn_down")), GgmlType::kQ4_1);
  EXPECT_EQ(q40i.at(name(4, "ffn_down")), GgmlType::kQ4_0);
  EXPECT_EQ(plan(c, LlamaFileType::kQ4_0).at(name(3, "ffn_down")), GgmlType::kQ4_0);
  EXPECT_EQ(plan(c, LlamaFileType::kQ8_0).at("output.weight"), GgmlType::kQ8_0);
}

TEST(TypeMix, Llama70BGivesAttnVFiveBits) {
  const LlamaConfig c = config(8192, 28672, 80, 64, 8, 32000, false);
  const auto q4km = plan(c, LlamaFileType::kQ4_K_M);
  EXPECT_EQ(q4km.at(name(20, "attn_v")), GgmlType::kQ5_K);  // not a more-bits layer: q4_k → q5_k
  EXPECT_EQ(q4km.at(name(0, "attn_v")), GgmlType::kQ6_K);
}

TEST(TypeMix, NamesAndAliases) {
  EXPECT_EQ(parse_llama_file_type("q4_k"), LlamaFileType::kQ4_K_M);
  EXPECT_EQ(parse_llama_file_type("Q3_K"), LlamaFileType::kQ3_K_M);
  EXPECT_EQ(parse_llama_file_type("q5_k_s"), LlamaFileType::kQ5_K_S);
  EXPECT_STREQ(to_string(LlamaFileType::kQ4_K_M), "q4_k_m");
  EXPECT_EQ(static_cast<int>(LlamaFileType::kQ4_K_M), 15);
  EXPECT_EQ(default_type(LlamaFileType::kQ2_K_S), GgmlType::kQ2_K);
  try {
    parse_llama_file_type("q4_k_x");
    ADD_FAILURE() << "accepted q4_k_x";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("q4_k_m"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qround::model
