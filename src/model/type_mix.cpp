#include "qround/model/type_mix.hpp"

#include <fmt/format.h>

#include <utility>

#include "qround/error.hpp"
#include "qround/model/gguf_llama.hpp"

namespace qround::model {
namespace {

using F = LlamaFileType;
using G = GgmlType;

struct Named {
  const char* name;
  F type;
};
constexpr Named kNames[] = {
    {"f32", F::kF32},       {"f16", F::kF16},       {"bf16", F::kBF16},     {"q4_0", F::kQ4_0},
    {"q4_1", F::kQ4_1},     {"q5_0", F::kQ5_0},     {"q5_1", F::kQ5_1},     {"q8_0", F::kQ8_0},
    {"q2_k", F::kQ2_K},     {"q2_k_s", F::kQ2_K_S}, {"q3_k_s", F::kQ3_K_S}, {"q3_k_m", F::kQ3_K_M},
    {"q3_k_l", F::kQ3_K_L}, {"q4_k_s", F::kQ4_K_S}, {"q4_k_m", F::kQ4_K_M}, {"q5_k_s", F::kQ5_K_S},
    {"q5_k_m", F::kQ5_K_M}, {"q6_k", F::kQ6_K},
    // quantize.cpp's aliases
    {"q3_k", F::kQ3_K_M},   {"q4_k", F::kQ4_K_M},   {"q5_k", F::kQ5_K_M},
};

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// llama_tensor_get_type_impl for one linear layer of block i of n (attn_v's counter equals the
// block index with one expert).
std::pair<G, std::string> linear_rule(F ft, G t, BlockLinear which, int i, int n, int gqa,
                                      bool is_70b, bool has_imatrix) {
  const G before = t;
  std::string why;
  switch (which) {
    case BlockLinear::kV:
      if (ft == F::kQ2_K) t = gqa >= 4 ? G::kQ4_K : G::kQ3_K;
      else if (ft == F::kQ2_K_S && gqa >= 4) t = G::kQ4_K;
      else if (ft == F::kQ3_K_M) t = i < 2 ? G::kQ5_K : G::kQ4_K;
      else if (ft == F::kQ3_K_L) t = G::kQ5_K;
      else if ((ft == F::kQ4_K_M || ft == F::kQ5_K_M) && use_more_bits(i, n)) t = G::kQ6_K;
      else if (ft == F::kQ4_K_S && i < 4) t = G::kQ5_K;
      if (is_70b && (t == G::kQ3_K || t == G::kQ4_K)) t = G::kQ5_K;
      why = "attn_v gets more bits";
      break;
    case BlockLinear::kW2:
      if (ft == F::kQ2_K) t = G::kQ3_K;
      else if (ft == F::kQ2_K_S) { if (i < n / 8) t = G::kQ4_K; }
      else if (ft == F::kQ3_K_M) t = i < n / 16 ? G::kQ5_K : G::kQ4_K;
      else if (ft == F::kQ3_K_L) t = G::kQ5_K;
      else if (ft == F::kQ4_K_M) { if (use_more_bits(i, n)) t = G::kQ6_K; }
      else if (ft == F::kQ5_K_M && use_more_bits(i, n)) t = G::kQ6_K;
      else if (ft == F::kQ4_K_S && i < n / 8) t = G::kQ5_K;
      else if ((ft == F::kQ4_0 || ft == F::kQ5_0) && has_imatrix && i < n / 8)
        t = ft == F::kQ4_0 ? G::kQ4_1 : G::kQ5_1;
      why = "ffn_down gets more bits";
      break;
    case BlockLinear::kO:
      if (ft == F::kQ2_K) t = G::kQ3_K;
      else if (ft == F::kQ3_K_M) t = G::kQ4_K;
      else if (ft == F::kQ3_K_L) t = G::kQ5_K;
      why = "attn_output gets more bits";
      break;
    default:
      break;
  }
  if (t == before) return {t, fmt::format("{}'s default type", to_string(ft))};
  return {t, fmt::format("{} in {} (llama.cpp's rule for block {} of {})", why, to_string(ft), i,
                         n)};
}

// tensor_type_fallback: the type when `t`'s block does not divide the row.
std::pair<G, std::string> fit(G t, Index cols) {
  const int block = ggml_traits(t).block;
  if (cols % block == 0) return {t, {}};
  G to = t;
  switch (t) {
    case G::kQ2_K:
    case G::kQ3_K: to = G::kQ4_0; break;
    case G::kQ4_K: to = G::kQ5_0; break;
    case G::kQ5_K: to = G::kQ5_1; break;
    case G::kQ6_K: to = G::kQ8_0; break;
    default: break;
  }
  if (cols % ggml_traits(to).block != 0) to = G::kF16;
  return {to, fmt::format("; {} columns are not a multiple of {}'s {} → {} (llama.cpp's fallback)",
                          cols, to_string(t), block, to_string(to))};
}

}  // namespace

LlamaFileType parse_llama_file_type(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Named& n : kNames)
    if (lower == n.name) return n.type;
  std::string all;
  for (const Named& n : kNames) all += all.empty() ? n.name : std::string(" ") + n.name;
  throw InvalidArgument(fmt::format("unknown llama.cpp file type '{}': expected one of {}", name,
                                    all));
}

const char* to_string(LlamaFileType t) {
  for (const Named& n : kNames)
    if (n.type == t) return n.name;  // the first name of a type is its own (aliases come last)
  return "unknown";
}

GgmlType default_type(LlamaFileType t) {
  switch (t) {
    case F::kF32: return G::kF32;
    case F::kF16: return G::kF16;
    case F::kBF16: return G::kBF16;
    case F::kQ4_0: return G::kQ4_0;
    case F::kQ4_1: return G::kQ4_1;
    case F::kQ5_0: return G::kQ5_0;
    case F::kQ5_1: return G::kQ5_1;
    case F::kQ8_0: return G::kQ8_0;
    case F::kQ2_K:
    case F::kQ2_K_S: return G::kQ2_K;
    case F::kQ3_K_S:
    case F::kQ3_K_M:
    case F::kQ3_K_L: return G::kQ3_K;
    case F::kQ4_K_S:
    case F::kQ4_K_M: return G::kQ4_K;
    case F::kQ5_K_S:
    case F::kQ5_K_M: return G::kQ5_K;
    case F::kQ6_K: return G::kQ6_K;
  }
  throw InvalidArgument("default_type: unknown llama file type");
}

std::vector<TensorTypeChoice> plan_tensor_types(const LlamaModel& model,
                                                const TypeMixOptions& options) {
  return plan_tensor_types(model.config(), options);
}

std::vector<TensorTypeChoice> plan_tensor_types(const LlamaConfig& c,
                                                const TypeMixOptions& options) {
  const F ft = options.file_type;
  const G base = default_type(ft);
  if (options.pure || base == G::kF32 || base == G::kF16 || base == G::kBF16)
    return pure_tensor_types(c, base);
  const int gqa = c.n_heads / c.n_kv_heads;
  const bool is_70b = c.n_layers == 80 && c.n_heads != c.n_kv_heads;  // LLM_TYPE_70B
  std::vector<TensorTypeChoice> out;
  auto add = [&](const std::string& name, Index cols, std::pair<G, std::string> rule) {
    const auto [type, why] = fit(rule.first, cols);
    out.push_back({name, type, rule.second + why});
  };
  auto output_rule = [&](const char* what) -> std::pair<G, std::string> {
    if (c.dim % ggml_traits(base).block != 0)
      return {G::kQ8_0, fmt::format("{}: q8_0, its rows do not fit {} (llama.cpp's output rule)",
                                    what, to_string(base))};
    if (base == G::kQ8_0) return {G::kQ8_0, fmt::format("{}: q8_0 (llama.cpp's output rule)", what)};
    return {G::kQ6_K, fmt::format("{}: q6_k (llama.cpp's output rule)", what)};
  };
  add(kGgufTokenEmbedding, c.dim,
      c.shared_classifier ? output_rule("the tied output")
                          : std::pair<G, std::string>{base, fmt::format("{}'s default type",
                                                                        to_string(ft))});
  for (int i = 0; i < c.n_layers * kLinearsPerBlock; ++i) {
    const int block = i / kLinearsPerBlock;
    const auto which = static_cast<BlockLinear>(i % kLinearsPerBlock);
    add(gguf_linear_name(i), which == BlockLinear::kW2 ? c.hidden_dim : c.dim,
        linear_rule(ft, base, which, block, c.n_layers, gqa, is_70b, options.has_imatrix));
  }
  if (!c.shared_classifier) add(kGgufOutput, c.dim, output_rule("output"));
  return out;
}

std::vector<TensorTypeChoice> pure_tensor_types(const LlamaConfig& c, GgmlType type) {
  std::vector<TensorTypeChoice> out;
  const std::string everywhere = fmt::format("{} everywhere (pure)", to_string(type));
  auto add = [&](const std::string& name, Index cols) {
    const auto [fitted, why] = fit(type, cols);
    out.push_back({name, fitted, everywhere + why});
  };
  add(kGgufTokenEmbedding, c.dim);
  for (int i = 0; i < c.n_layers * kLinearsPerBlock; ++i)
    add(gguf_linear_name(i),
        static_cast<BlockLinear>(i % kLinearsPerBlock) == BlockLinear::kW2 ? c.hidden_dim : c.dim);
  if (!c.shared_classifier) add(kGgufOutput, c.dim);
  return out;
}

}  // namespace qround::model
