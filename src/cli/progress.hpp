// A progress bar on stderr, fed by the library's ProgressFn. Drawn only when stderr is a terminal,
// --quiet was not given and the work has run for over a second (short work stays silent).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "qround/types.hpp"

namespace qround::cli {

class ProgressBar {
 public:
  explicit ProgressBar(bool quiet);
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // The callback to hand to the library (never cancels).
  ProgressFn callback();
  // Clears the bar's line if one was drawn.
  void finish();

 private:
  void draw(double fraction, std::string_view message);

  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace qround::cli
