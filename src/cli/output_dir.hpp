// An output directory written all or nothing: files go into a temporary sibling directory, and
// commit() renames it into place (replacing an existing directory of that name). If commit() is
// never reached (an error was thrown), the temporary directory is removed and the destination is
// untouched.
#pragma once

#include <string>
#include <string_view>

namespace qround::cli {

class OutputDir {
 public:
  explicit OutputDir(std::string destination);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  // Where to write `name` before the commit.
  std::string path(const std::string& name) const;
  void write_text(const std::string& name, std::string_view text) const;
  void commit();

 private:
  std::string destination_, temp_;
  bool committed_ = false;
};

}  // namespace qround::cli
