#include "progress.hpp"

#include <unistd.h>

#include <algorithm>

namespace qround::cli {

ProgressBar::ProgressBar(bool quiet)
    : enabled_(!quiet && isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

ProgressFn ProgressBar::callback() {
  return [this](double fraction, std::string_view message) {
    draw(fraction, message);
    return true;
  };
}

void ProgressBar::draw(double fraction, std::string_view message) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < std::chrono::seconds(1)) return;
  if (drawn_ && now - last_ < std::chrono::milliseconds(100) && fraction < 1.0) return;
  last_ = now;
  constexpr int kWidth = 30;
  const double f = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(f * kWidth + 0.5);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r[%s] %5.1f%% %6.1fs %.*s\x1b[K", bar.c_str(), 100.0 * f, elapsed,
               static_cast<int>(std::min<size_t>(message.size(), 40)), message.data());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

}  // namespace qround::cli
