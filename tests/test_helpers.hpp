// Shared helpers for the unit tests: real-data lookup, temporary directories, random matrices.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qround/detail/rng.hpp"
#include "qround/types.hpp"

namespace qround::testing {

// The shared data directory: $QROUND_DATA_DIR, else the compile-time default beside the repo.
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("QROUND_DATA_DIR"); env && *env) return env;
  return QROUND_DEFAULT_DATA_DIR;
}

inline std::filesystem::path layers_dir() { return data_dir() / "layers"; }

// The whole file as bytes (empty when it cannot be read: the caller's checks then fail).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh empty directory, removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir() {
    const auto base = std::filesystem::temp_directory_path();
    detail::Rng rng(
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()),
        reinterpret_cast<std::uintptr_t>(this));
    for (int attempt = 0;; ++attempt) {
      path_ = base / ("qround-test-" + std::to_string(rng.next()));
      if (std::filesystem::create_directory(path_)) break;
      if (attempt > 100) throw std::runtime_error("cannot create a temporary directory");
    }
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Names of the entries in the directory, for "nothing half-written was left" checks.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_))
      out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::filesystem::path path_;
};

// rows × cols of independent N(0, scale²) values from a seeded, portable stream.
inline MatrixF random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0) {
  detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<float>(scale * rng.normal());
  return m;
}

// Activations with correlated inputs and a few outlier channels, like real LLM layers.
inline MatrixF llm_like_activations(Index tokens, Index in, std::uint64_t seed) {
  const MatrixF base = random_matrix(tokens, in, seed);
  const MatrixF mix = random_matrix(in, in, seed + 1, 0.3);
  MatrixF x = base + base * mix;
  for (Index c = 0; c < in; c += 7) x.col(c) *= 8.0f;  // outlier channels
  return x;
}

}  // namespace qround::testing
