// Locating the real model data for the model tests: $QROUND_DATA_DIR, else the compile-time
// default (<repo>/../shared/data), else the same one level further up (a worktree in <root>/wt/X).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace qround::test {

inline std::string model_data_dir() {
  auto has_model = [](const std::string& dir) {
    return std::ifstream(dir + "/stories260K.bin").good() && std::ifstream(dir + "/tok512.bin").good();
  };
  if (const char* env = std::getenv("QROUND_DATA_DIR"); env && has_model(env)) return env;
  const std::string base = QROUND_DEFAULT_DATA_DIR;
  if (has_model(base)) return base;
  const std::string up = base + "/../../../shared/data";
  if (has_model(up)) return up;
  return {};
}

#define QROUND_REQUIRE_MODEL_DATA(dir)                                                        \
  const std::string dir = ::qround::test::model_data_dir();                                   \
  if (dir.empty())                                                                            \
  GTEST_SKIP() << "stories260K.bin / tok512.bin not found: set QROUND_DATA_DIR to the shared " \
                  "data folder (see data/SOURCES.md)"

}  // namespace qround::test
