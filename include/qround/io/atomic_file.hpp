// Atomic file writes: the bytes go to a temporary file in the destination's directory, which is
// renamed over the destination only once everything was written. A reader never sees a half-written
// file, and a failed or abandoned write leaves the destination as it was and no temporary behind.
#pragma once

#include <fstream>
#include <string>
#include <string_view>

namespace qround::io {

// A file being written under a temporary name. Write through stream(), then commit(); destroying
// the object without commit() removes the temporary. Errors raise IoError naming the path.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::ostream& stream() { return out_; }
  void write(const void* data, std::size_t bytes);
  // Flushes, closes and renames the temporary over the destination.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_, temp_path_;
  std::ofstream out_;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace qround::io
