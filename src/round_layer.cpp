#include "qround/round_layer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "qround/gptq.hpp"
#include "qround/nearest.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace qround {

const char* to_string(Method m) {
  switch (m) {
    case Method::kNearest:
      return "nearest";
    case Method::kAdaRound:
      return "adaround";
    case Method::kFlexRound:
      return "flexround";
    case Method::kNupes:
      return "nupes";
    case Method::kGptq:
      return "gptq";
  }
  return "?";
}

std::vector<Method> available_methods() {
  // Methods are listed here once they are implemented and registered in round_layer() below.
  return {Method::kNearest, Method::kGptq};
}

Method parse_method(const std::string& name) {
  std::string known;
  for (Method m : available_methods()) {
    if (name == to_string(m)) return m;
    known += known.empty() ? "" : ", ";
    known += to_string(m);
  }
  throw InvalidArgument(fmt::format("unknown method '{}': expected one of {}", name, known));
}

namespace detail {

bool ParamReader::has(const std::string& key) {
  known_.push_back(key);
  return params_.count(key) != 0;
}

double ParamReader::get_double(const std::string& key, double fallback) {
  if (!has(key)) return fallback;
  const std::string& text = params_.at(key);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v))
    throw InvalidArgument(fmt::format("{}: '{}' for {} is not a number", method_, text, key));
  return v;
}

int ParamReader::get_int(const std::string& key, int fallback) {
  if (!has(key)) return fallback;
  const std::string& text = params_.at(key);
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < -2147483647L || v > 2147483647L)
    throw InvalidArgument(fmt::format("{}: '{}' for {} is not an integer", method_, text, key));
  return static_cast<int>(v);
}

bool ParamReader::get_bool(const std::string& key, bool fallback) {
  if (!has(key)) return fallback;
  const std::string& text = params_.at(key);
  if (text == "1" || text == "true" || text.empty()) return true;
  if (text == "0" || text == "false") return false;
  throw InvalidArgument(fmt::format("{}: '{}' for {} is not a boolean", method_, text, key));
}

std::string ParamReader::get_string(const std::string& key, const std::string& fallback) {
  if (!has(key)) return fallback;
  return params_.at(key);
}

void ParamReader::finish() const {
  for (const auto& [key, value] : params_) {
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    std::string accepted;
    for (const auto& k : known_) accepted += (accepted.empty() ? "" : ", ") + k;
    throw InvalidArgument(fmt::format("method {} does not take the setting '{}' (accepted: {})",
                                      method_, key, accepted.empty() ? "none" : accepted));
  }
}

}  // namespace detail

QuantizedLayer round_layer(const LayerProblem& problem, const RoundLayerOptions& options,
                           const ProgressFn& progress) {
  options.grid.validate();
  if (options.threads < 0)
    throw InvalidArgument(fmt::format("threads = {} must be >= 0", options.threads));
#ifdef _OPENMP
  const int saved_threads = omp_get_max_threads();
  if (options.threads > 0) omp_set_num_threads(options.threads);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{saved_threads};
#endif
  (void)progress;
  detail::ParamReader params(options.params, to_string(options.method));
  switch (options.method) {
    case Method::kNearest: {
      params.finish();
      return round_to_nearest(problem, options.grid);
    }
    case Method::kGptq: {
      GptqOptions gptq_options;
      gptq_options.threads = options.threads;
      gptq_options.act_order = params.get_bool("act-order", gptq_options.act_order);
      gptq_options.static_groups = params.get_bool("static-groups", gptq_options.static_groups);
      gptq_options.damp = params.get_double("damp", gptq_options.damp);
      gptq_options.block = params.get_int("block", static_cast<int>(gptq_options.block));
      params.finish();
      return gptq(problem, options.grid, gptq_options, progress);
    }
    default:
      break;
  }
  throw InvalidArgument(
      fmt::format("method {} is not available in this build", to_string(options.method)));
}

}  // namespace qround
