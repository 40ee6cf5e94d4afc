// Scale search for ggml storage formats (see scale_search.hpp).
#include <fmt/format.h>

#include "qround/scale_search.hpp"

namespace qround {

Grid make_format_grid(const MatrixFRef&, const GridSpec& spec, const VectorD*) {
  throw InvalidArgument(fmt::format("the scale search for format {} is not built yet",
                                    spec.format ? to_string(*spec.format) : "?"));
}

}  // namespace qround
