#include "qround/format.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "qround/error.hpp"

namespace qround {
namespace {

// Block geometry from ggml-common.h (sizeof(block_*)); code ranges from the dequantization
// formulas in ggml-quants.c (n as the level formula sees it, see format.hpp).
constexpr GgmlTypeTraits kTraits[] = {
    // type            name    block bytes sub bits  qmin qmax  offset super scale_bits
    {GgmlType::kF32, "f32", 1, 4, 1, 0, 0, 0, false, false, 0},
    {GgmlType::kF16, "f16", 1, 2, 1, 0, 0, 0, false, false, 0},
    {GgmlType::kBF16, "bf16", 1, 2, 1, 0, 0, 0, false, false, 0},
    {GgmlType::kQ8_0, "q8_0", 32, 34, 32, 8, -128, 127, false, false, 0},
    {GgmlType::kQ4_0, "q4_0", 32, 18, 32, 4, -8, 7, false, false, 0},
    {GgmlType::kQ4_1, "q4_1", 32, 20, 32, 4, 0, 15, true, false, 0},
    {GgmlType::kQ5_0, "q5_0", 32, 22, 32, 5, -16, 15, false, false, 0},
    {GgmlType::kQ5_1, "q5_1", 32, 24, 32, 5, 0, 31, true, false, 0},
    {GgmlType::kQ2_K, "q2_k", 256, 84, 16, 2, 0, 3, true, true, 4},
    {GgmlType::kQ3_K, "q3_k", 256, 110, 16, 3, -4, 3, false, true, 6},
    {GgmlType::kQ4_K, "q4_k", 256, 144, 32, 4, 0, 15, true, true, 6},
    {GgmlType::kQ5_K, "q5_k", 256, 176, 32, 5, 0, 31, true, true, 6},
    {GgmlType::kQ6_K, "q6_k", 256, 210, 16, 6, -32, 31, false, true, 8},
    // Table format (format.hpp): code n ∈ [0, 15] indexes kvalues_iq4nl.
    {GgmlType::kIQ4_NL, "iq4_nl", 32, 18, 32, 4, 0, 15, false, false, 0, kIq4NlValues},
};

std::string known_names() {
  std::string out;
  for (const auto& t : kTraits) {
    if (!out.empty()) out += ", ";
    out += t.name;
  }
  return out;
}

}  // namespace

const GgmlTypeTraits& ggml_traits(GgmlType type) {
  for (const auto& t : kTraits)
    if (t.type == type) return t;
  throw InvalidArgument(fmt::format("ggml type id {} is not supported: expected one of {}",
                                    static_cast<std::uint32_t>(type), known_names()));
}

const std::vector<GgmlType>& ggml_types() {
  static const std::vector<GgmlType> all = [] {
    std::vector<GgmlType> v;
    for (const auto& t : kTraits) v.push_back(t.type);
    return v;
  }();
  return all;
}

const std::vector<GgmlType>& ggml_quantized_types() {
  static const std::vector<GgmlType> all = [] {
    std::vector<GgmlType> v;
    for (const auto& t : kTraits)
      if (t.quantized()) v.push_back(t.type);
    return v;
  }();
  return all;
}

const char* to_string(GgmlType type) {
  for (const auto& t : kTraits)
    if (t.type == type) return t.name;
  return "?";
}

GgmlType parse_ggml_type(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& t : kTraits)
    if (lower == t.name) return t.type;
  throw InvalidArgument(
      fmt::format("unknown format '{}': expected one of {}", std::string(name), known_names()));
}

bool is_known_ggml_type(std::uint32_t id) {
  for (const auto& t : kTraits)
    if (static_cast<std::uint32_t>(t.type) == id) return true;
  return false;
}

std::uint64_t ggml_row_bytes(GgmlType type, std::uint64_t n) {
  const GgmlTypeTraits& t = ggml_traits(type);
  if (n % static_cast<std::uint64_t>(t.block) != 0)
    throw InvalidArgument(fmt::format("{} inputs are not a whole number of {} blocks of {}", n,
                                      t.name, t.block));
  return n / static_cast<std::uint64_t>(t.block) * static_cast<std::uint64_t>(t.block_bytes);
}

}  // namespace qround
