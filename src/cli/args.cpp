#include "args.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "qround/error.hpp"
#include "qround/memory_limit.hpp"

namespace qround::cli {

Args::Args(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string token = argv[i];
    if (token.size() < 3 || token.compare(0, 2, "--") != 0)
      throw UsageError(fmt::format("unexpected argument '{}': options look like --name value",
                                   token));
    Option opt;
    const auto eq = token.find('=');
    if (eq != std::string::npos) {
      opt.name = token.substr(2, eq - 2);
      opt.value = token.substr(eq + 1);
    } else {
      opt.name = token.substr(2);
      if (i + 1 < argc && std::string(argv[i + 1]).compare(0, 2, "--") != 0)
        opt.value = argv[++i];
    }
    options_.push_back(std::move(opt));
  }
}

std::optional<std::string> Args::take(const std::string& name) {
  std::optional<std::string> result;
  for (auto& opt : options_)
    if (opt.name == name) {
      if (!opt.value) throw UsageError(fmt::format("--{} needs a value", name));
      result = opt.value;
      opt.taken = true;
    }
  return result;
}

std::vector<std::string> Args::take_all(const std::string& name) {
  std::vector<std::string> result;
  for (auto& opt : options_)
    if (opt.name == name) {
      if (!opt.value) throw UsageError(fmt::format("--{} needs a value", name));
      result.push_back(*opt.value);
      opt.taken = true;
    }
  return result;
}

bool Args::has(const std::string& name) const {
  for (const auto& opt : options_)
    if (opt.name == name) return true;
  return false;
}

bool Args::take_flag(const std::string& name) {
  bool found = false;
  for (auto& opt : options_)
    if (opt.name == name) {
      if (opt.value)
        throw UsageError(fmt::format("--{} is a flag and takes no value (got '{}')", name,
                                     *opt.value));
      opt.taken = true;
      found = true;
    }
  return found;
}

std::string Args::take_required(const std::string& name) {
  auto v = take(name);
  if (!v) throw UsageError(fmt::format("missing required option --{}", name));
  if (v->empty()) throw UsageError(fmt::format("--{} is empty: expected a value", name));
  return *v;
}

int Args::take_int(const std::string& name, int fallback, int lo, int hi) {
  auto v = take(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0 || x < lo || x > hi)
    throw UsageError(fmt::format("--{} '{}' is not an integer in [{}, {}]", name, *v, lo, hi));
  return static_cast<int>(x);
}

double Args::take_double(const std::string& name, double fallback) {
  auto v = take(name);
  if (!v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || !std::isfinite(x))
    throw UsageError(fmt::format("--{} '{}' is not a finite number", name, *v));
  return x;
}

std::map<std::string, std::string> Args::take_rest() {
  std::map<std::string, std::string> rest;
  for (auto& opt : options_)
    if (!opt.taken) {
      rest[opt.name] = opt.value.value_or("");
      opt.taken = true;
    }
  return rest;
}

void Args::finish() const {
  for (const auto& opt : options_)
    if (!opt.taken) throw UsageError(fmt::format("unknown option --{}", opt.name));
}

}  // namespace qround::cli

namespace qround::cli {
bool wants_help(int argc, char** argv) {
  for (int i = 0; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
  return false;
}
int take_threads(Args& args) {
  const int threads = args.take_int("threads", 0, 0, kMaxThreads);
#ifdef _OPENMP
  const int processors = omp_get_num_procs();
#else
  const int processors = static_cast<int>(std::thread::hardware_concurrency());
#endif
  if (processors > 0 && threads > processors) {
    fmt::print(stderr, "qround: --threads {} is more than the {} processors here; using {}\n",
               threads, processors, processors);
    return processors;
  }
  return threads;
}

void take_max_memory(Args& args) {
  const auto text = args.take("max-memory");
  if (!text) return;
  try {
    set_memory_limit(parse_memory_size(*text), "--max-memory " + *text);
  } catch (const InvalidArgument& e) {
    throw UsageError(fmt::format("--max-memory: {}", e.what()));
  }
}

std::vector<int> parse_bit_widths(const std::string& option, const std::string& text) {
  std::vector<int> bits;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long b = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || b < 2 || b > 8)
      throw UsageError(fmt::format("--{}: '{}' is not a bit width 2..8 (expected e.g. 2,3,4,8)",
                                   option, item));
    bits.push_back(static_cast<int>(b));
  }
  if (bits.empty())
    throw UsageError(fmt::format("--{}: no bit widths given (expected e.g. 2,3,4,8)", option));
  return bits;
}

}  // namespace qround::cli
