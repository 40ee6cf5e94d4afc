#include "grid_args.hpp"

#include <fmt/format.h>

namespace qround::cli {

GridSpec take_grid_spec(Args& args, int default_bits, int default_group_size) {
  const std::optional<std::string> bits_text = args.take("bits");
  const std::optional<std::string> group_text = args.take("group-size");
  const bool symmetric = args.take_flag("symmetric");
  const std::optional<std::string> search_text = args.take("scale-search");
  const std::optional<std::string> format_text = args.take("format");
  auto to_int = [](const std::string& option, const std::string& text, int lo, int hi) {
    std::size_t used = 0;
    long v = 0;
    try {
      v = std::stol(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size() || text.empty() || v < lo || v > hi)
      throw UsageError(fmt::format("--{} {}: expected an integer in [{}, {}]", option, text, lo, hi));
    return static_cast<int>(v);
  };
  const int bits = bits_text ? to_int("bits", *bits_text, 2, 8) : default_bits;
  const int group = group_text ? to_int("group-size", *group_text, 0, 1 << 30) : default_group_size;
  ScaleSearch search = ScaleSearch::kMinMax;
  if (search_text) {
    try {
      search = parse_scale_search(*search_text);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }
  if (!format_text) {
    GridSpec spec;
    try {
      spec = GridSpec::with_group_size(bits, group, symmetric);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
    spec.search = search;
    return spec;
  }
  GgmlType type;
  try {
    type = parse_ggml_type(*format_text);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  const GgmlTypeTraits& t = ggml_traits(type);
  if (!t.quantized())
    throw UsageError(fmt::format("--format {}: a float type has no grid to round onto; expected "
                                 "a quantized type (q4_0, q4_k, …)",
                                 t.name));
  if (bits_text && bits != t.bits)
    throw UsageError(fmt::format("--bits {} disagrees with --format {}, which stores {}-bit codes",
                                 bits, t.name, t.bits));
  if (group_text && group != t.sub_block)
    throw UsageError(fmt::format(
        "--group-size {} disagrees with --format {}, whose scales cover {} inputs", group, t.name,
        t.sub_block));
  if (symmetric && t.levels)
    throw UsageError(fmt::format(
        "--symmetric does not apply to --format {}: its levels are a fixed table (d·T[n])",
        t.name));
  if (symmetric && t.has_offset)
    throw UsageError(fmt::format(
        "--symmetric disagrees with --format {}, whose levels carry an offset (d·q + m)", t.name));
  if (search_text && search == ScaleSearch::kMse)
    throw UsageError(fmt::format(
        "--scale-search mse does not apply to --format {}: use minmax or hessian", t.name));
  return GridSpec::for_format(type, search_text ? search : ScaleSearch::kHessian);
}

}  // namespace qround::cli
