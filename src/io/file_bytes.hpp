// Internal helpers for the binary parsers: read a whole file with a size cap and read typed values
// from it with bounds checks.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qround/error.hpp"

namespace qround::io_detail {

// The whole file; IoError names `what` and the path if it cannot be opened or read, or if it is
// larger than `max_bytes`.
std::vector<unsigned char> read_file_bytes(const std::string& path, const char* what,
                                           std::uint64_t max_bytes);

// Sequential little-endian reader over a byte buffer; every read is bounds-checked.
class ByteCursor {
 public:
  ByteCursor(const unsigned char* data, std::size_t size, std::string what)
      : data_(data), size_(size), what_(std::move(what)) {}

  std::size_t offset() const { return offset_; }
  std::size_t remaining() const { return size_ - offset_; }

  template <typename T>
  T read(const char* field) {
    require(sizeof(T), field);
    T v;
    std::memcpy(&v, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return v;
  }
  // Pointer to `n` bytes at the cursor, then advances.
  const unsigned char* take(std::size_t n, const char* field) {
    require(n, field);
    const unsigned char* p = data_ + offset_;
    offset_ += n;
    return p;
  }
  void require(std::size_t n, const char* field) const;

 private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
  std::string what_;
};

}  // namespace qround::io_detail
