// The library version, as the build configured it.
#pragma once

namespace qround {
const char* version();
}  // namespace qround
