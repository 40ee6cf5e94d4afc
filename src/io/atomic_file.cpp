#include "qround/io/atomic_file.hpp"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "qround/error.hpp"

namespace qround::io {
namespace {

// A name no other writer (thread or process) picks: a per-process random tag plus a counter.
std::string temp_name_for(const std::string& path) {
  static const unsigned long long process_tag = [] {
    std::random_device rd;
    return (static_cast<unsigned long long>(rd()) << 32) ^ rd();
  }();
  static std::atomic<unsigned long long> counter{0};
  return fmt::format("{}.tmp-{:016x}-{}", path, process_tag, counter.fetch_add(1));
}

}  // namespace

AtomicFile::AtomicFile(std::string path)
    : path_(std::move(path)), temp_path_(temp_name_for(path_)) {
  out_.open(temp_path_, std::ios::binary | std::ios::trunc);
  if (!out_)
    throw IoError(fmt::format("cannot create '{}' (temporary for '{}'): {}", temp_path_, path_,
                              std::strerror(errno)));
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  out_.close();
  std::remove(temp_path_.c_str());
}

void AtomicFile::write(const void* data, std::size_t bytes) {
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out_)
    throw IoError(fmt::format("write to '{}' failed: {}", temp_path_, std::strerror(errno)));
}

void AtomicFile::commit() {
  if (committed_) return;
  out_.flush();
  out_.close();
  if (out_.fail())
    throw IoError(fmt::format("writing '{}' failed: {}", path_, std::strerror(errno)));
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0)
    throw IoError(
        fmt::format("cannot rename '{}' to '{}': {}", temp_path_, path_, std::strerror(errno)));
  committed_ = true;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

}  // namespace qround::io
