// One entry point over every rounding method, for the CLI and for code that picks the method at
// run time. Library users who know their method call its function directly (adaround(), gptq(), …)
// with the typed options struct; here method-specific settings arrive by name, as the CLI has them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround {

enum class Method { kNearest, kAdaRound, kFlexRound, kNupes, kGptq };

const char* to_string(Method m);
Method parse_method(const std::string& name);  // "nearest" | "adaround" | …; throws InvalidArgument
// Every method this build provides, in the order the demo and docs list them.
std::vector<Method> available_methods();

struct RoundLayerOptions {
  Method method = Method::kNearest;
  GridSpec grid;
  int iterations = -1;      // -1: the method's default
  std::uint64_t seed = 0;
  int threads = 0;          // 0: OpenMP's default
  // Method-specific settings by their CLI name without dashes, e.g. {"lambda", "0.01"}. A key the
  // method does not know raises InvalidArgument listing the keys it accepts.
  std::map<std::string, std::string> params;
};

QuantizedLayer round_layer(const LayerProblem& problem, const RoundLayerOptions& options,
                           const ProgressFn& progress = {});
// Parses and validates the options (grid, threads, the method's settings) without running
// anything; throws InvalidArgument exactly as round_layer() would.
void validate(const RoundLayerOptions& options);

namespace detail {
// Typed access to RoundLayerOptions::params for the methods' option adapters.
class ParamReader {
 public:
  ParamReader(const std::map<std::string, std::string>& params, const char* method)
      : params_(params), method_(method) {}
  bool has(const std::string& key);
  double get_double(const std::string& key, double fallback);
  int get_int(const std::string& key, int fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  // Throws InvalidArgument if a key was never asked for (a typo, or another method's flag).
  void finish() const;

 private:
  const std::map<std::string, std::string>& params_;
  const char* method_;
  std::vector<std::string> known_;
};
}  // namespace detail

}  // namespace qround
