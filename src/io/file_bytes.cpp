#include "file_bytes.hpp"

#include <fmt/format.h>
#include <fstream>

namespace qround::io_detail {

std::vector<unsigned char> read_file_bytes(const std::string& path, const char* what,
                                           std::uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError(fmt::format("cannot open {} '{}'", what, path));
  const std::streamoff size = in.tellg();
  if (size < 0) throw IoError(fmt::format("cannot determine the size of {} '{}'", what, path));
  if (static_cast<std::uint64_t>(size) > max_bytes)
    throw IoError(fmt::format("{} '{}' has {} bytes, more than the limit of {}", what, path, size,
                              max_bytes));
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw IoError(fmt::format("cannot read {} '{}'", what, path));
  return bytes;
}

void ByteCursor::require(std::size_t n, const char* field) const {
  if (n > size_ - offset_)
    throw IoError(fmt::format("{} is truncated: {} needs {} bytes at offset {}, only {} remain",
                              what_, field, n, offset_, size_ - offset_));
}

}  // namespace qround::io_detail
