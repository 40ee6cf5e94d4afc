#include "qround/version.hpp"

namespace qround {
const char* version() { return QROUND_VERSION; }
}  // namespace qround
