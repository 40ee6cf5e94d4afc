#include "qround/memory_limit.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>

#include "qround/error.hpp"

namespace qround {
namespace {

constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

std::atomic<std::uint64_t> g_override{0};
std::mutex g_source_mutex;
std::string g_source;  // guarded by g_source_mutex

// The memory this process can have: physical memory, address-space / data rlimits, cgroup v2
// memory.max; the smallest one known (kUnlimited when none is).
std::uint64_t available_memory() {
  std::uint64_t m = kUnlimited;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0)
    m = std::min(m, static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page));
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit rl{};
    if (getrlimit(resource, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      m = std::min(m, static_cast<std::uint64_t>(rl.rlim_cur));
  }
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  std::string text;
  if (cgroup >> text && text != "max") {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (errno == 0 && *end == '\0' && v > 0) m = std::min<std::uint64_t>(m, v);
  }
  return m;
}

std::string human(std::uint64_t bytes) {
  if (bytes == kUnlimited) return "unlimited";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

struct Limit {
  std::uint64_t bytes;
  std::string source;
};

Limit effective_limit() {
  if (const std::uint64_t o = g_override.load()) {
    std::lock_guard<std::mutex> lock(g_source_mutex);
    return {o, g_source};
  }
  if (const char* env = std::getenv("QROUND_MAX_MEMORY"); env != nullptr && *env != '\0') {
    try {
      return {parse_memory_size(env), fmt::format("QROUND_MAX_MEMORY={}", env)};
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("QROUND_MAX_MEMORY: {}", e.what()));
    }
  }
  const std::uint64_t base = available_memory();
  if (base == kUnlimited) return {kUnlimited, "no limit (the machine's memory is unknown)"};
  return {static_cast<std::uint64_t>(static_cast<double>(base) * kDefaultMemoryFraction),
          fmt::format("the default: {:.0f}% of the {} this process can have",
                      100 * kDefaultMemoryFraction, human(base))};
}

}  // namespace

std::uint64_t memory_limit() { return effective_limit().bytes; }
std::string memory_limit_source() { return effective_limit().source; }

void set_memory_limit(std::uint64_t bytes, const std::string& source) {
  std::lock_guard<std::mutex> lock(g_source_mutex);
  g_source = source;
  g_override.store(bytes);
}

std::uint64_t parse_memory_size(const std::string& text) {
  const auto bad = [&](const char* why) {
    return InvalidArgument(fmt::format(
        "memory size '{}' {}: expected bytes with an optional K, M, G or T suffix (powers of "
        "1024), e.g. 4G, or a percentage of this process's memory, e.g. 50%",
        text, why));
  };
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || errno != 0 || !std::isfinite(v) || v < 0)
    throw bad("is not a number");
  std::string suffix(end);
  double bytes = v;
  if (suffix == "%") {
    if (v > 100) throw bad("is over 100%");
    const std::uint64_t base = available_memory();
    if (base == kUnlimited) throw bad("is a percentage, but this machine's memory is unknown");
    bytes = static_cast<double>(base) * v / 100.0;
  } else {
    for (const char* tail : {"iB", "B"})
      if (suffix.size() > std::char_traits<char>::length(tail) &&
          suffix.compare(suffix.size() - std::char_traits<char>::length(tail), std::string::npos,
                         tail) == 0) {
        suffix.resize(suffix.size() - std::char_traits<char>::length(tail));
        break;
      }
    if (suffix == "B") suffix.clear();
    static const std::string kUnits = "KMGT";
    if (suffix.size() > 1) throw bad("has an unknown unit");
    if (suffix.size() == 1) {
      const auto u = kUnits.find(static_cast<char>(std::toupper(suffix[0])));
      if (u == std::string::npos) throw bad("has an unknown unit");
      bytes *= std::pow(1024.0, static_cast<double>(u + 1));
    }
  }
  if (bytes >= 18446744073709551615.0) return kUnlimited;
  const auto out = static_cast<std::uint64_t>(bytes);
  if (out == 0) throw bad("is zero");
  return out;
}

std::uint64_t bytes_for(std::uint64_t rows, std::uint64_t cols, std::uint64_t item) {
  if (rows == 0 || cols == 0 || item == 0) return 0;
  if (rows > kUnlimited / cols || rows * cols > kUnlimited / item) return kUnlimited;
  return rows * cols * item;
}

void require_memory(std::uint64_t bytes, const std::string& what) {
  const Limit limit = effective_limit();
  if (bytes <= limit.bytes) return;
  throw MemoryLimitError(
      fmt::format("{} needs {} bytes ({}), over the memory limit of {} bytes ({}, from {}); "
                  "raise it with --max-memory or QROUND_MAX_MEMORY if the machine has the memory",
                  what, bytes == kUnlimited ? std::string("more than 2^64") : std::to_string(bytes),
                  human(bytes), limit.bytes, human(limit.bytes), limit.source));
}

}  // namespace qround
