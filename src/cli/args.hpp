// A small command-line parser for the qround tool: `--key value`, `--key=value` and bare
// `--flag`s. A command takes the options it knows; whatever is left can be handed on (method
// settings) or rejected as a usage error.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace qround::cli {

// Wrong usage: unknown option, missing or malformed value. Exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  Args(int argc, char** argv);

  // The value of --name (the last one if repeated), or nullopt if absent.
  std::optional<std::string> take(const std::string& name);
  // Every value of a repeatable --name, in order.
  std::vector<std::string> take_all(const std::string& name);
  // Whether the bare --name was given (a value after it is a usage error).
  bool take_flag(const std::string& name);
  // Whether --name was given (flag or value), without taking it.
  bool has(const std::string& name) const;
  // The value of --name; UsageError when absent or empty (`--out=`).
  std::string take_required(const std::string& name);
  int take_int(const std::string& name, int fallback, int lo, int hi);
  double take_double(const std::string& name, double fallback);
  // Options nobody took yet, by name (a bare flag maps to ""), and forget them.
  std::map<std::string, std::string> take_rest();
  // Throws UsageError naming the first option nobody took.
  void finish() const;

 private:
  struct Option {
    std::string name;
    std::optional<std::string> value;
    bool taken = false;
  };
  std::vector<Option> options_;
};

}  // namespace qround::cli

namespace qround::cli {
// A comma-separated list of bit widths 2..8 given to --option (e.g. "2,3,4,8"); UsageError if
// malformed.
std::vector<int> parse_bit_widths(const std::string& option, const std::string& text);
// True when the arguments ask for help (--help or -h anywhere).
bool wants_help(int argc, char** argv);
// --threads T (0 = all processors, the default). UsageError unless 0..kMaxThreads; more threads
// than this machine's processors are clamped to that number, with a note on stderr (the results
// do not depend on the thread count; asking OpenMP for thousands ends in "Thread creation failed").
constexpr int kMaxThreads = 4096;
int take_threads(Args& args);
// --max-memory SIZE (e.g. 4G, 50%): sets the memory limit every entry point checks its
// allocations against (qround/memory_limit.hpp); UsageError if malformed.
void take_max_memory(Args& args);
}  // namespace qround::cli
