// Locating stories260K.bin + tok512.bin for the model tests: the shared data directory
// (test_helpers.hpp), else the same one level further up (a worktree in <root>/wt/NAME).
#pragma once

#include <fstream>
#include <string>

#include "test_helpers.hpp"

namespace qround::test {

inline std::string model_data_dir() {
  auto has_model = [](const std::string& dir) {
    return std::ifstream(dir + "/stories260K.bin").good() &&
           std::ifstream(dir + "/tok512.bin").good();
  };
  const std::string base = ::qround::testing::data_dir().string();
  if (has_model(base)) return base;
  const std::string up = base + "/../../shared/data";
  if (has_model(up)) return up;
  return {};
}

#define QROUND_REQUIRE_MODEL_DATA(dir)                                                        \
  const std::string dir = ::qround::test::model_data_dir();                                   \
  if (dir.empty())                                                                            \
  GTEST_SKIP() << "stories260K.bin / tok512.bin not found: set QROUND_DATA_DIR to the shared " \
                  "data folder (see data/SOURCES.md)"

}  // namespace qround::test
