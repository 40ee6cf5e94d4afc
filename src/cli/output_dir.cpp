#include "output_dir.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "qround/error.hpp"

namespace fs = std::filesystem;

namespace qround::cli {

OutputDir::OutputDir(std::string destination) : destination_(std::move(destination)) {
  while (!destination_.empty() && destination_.size() > 1 && destination_.back() == '/')
    destination_.pop_back();
  if (destination_.empty()) throw InvalidArgument("output directory name is empty");
  std::error_code ec;
  if (fs::exists(destination_, ec) && !fs::is_directory(destination_, ec))
    throw IoError(fmt::format("{} exists and is not a directory", destination_));
  temp_ = fmt::format("{}.qround-tmp-{}", destination_, getpid());
  fs::remove_all(temp_, ec);
  if (!fs::create_directories(temp_, ec) || ec)
    throw IoError(fmt::format("cannot create the directory {}: {}", temp_,
                              ec ? ec.message() : "unknown error"));
}

OutputDir::~OutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(temp_, ec);
  }
}

std::string OutputDir::path(const std::string& name) const { return temp_ + "/" + name; }

void OutputDir::write_text(const std::string& name, std::string_view text) const {
  const std::string p = path(name);
  std::ofstream out(p, std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) throw IoError(fmt::format("cannot write {}", p));
}

void OutputDir::commit() {
  std::error_code ec;
  std::string old;
  if (fs::exists(destination_, ec)) {
    old = fmt::format("{}.qround-old-{}", destination_, getpid());
    fs::remove_all(old, ec);
    fs::rename(destination_, old, ec);
    if (ec)
      throw IoError(fmt::format("cannot replace {}: {}", destination_, ec.message()));
  }
  fs::rename(temp_, destination_, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, destination_, ec);  // put the previous result back
    throw IoError(fmt::format("cannot move the results into {}", destination_));
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace qround::cli
