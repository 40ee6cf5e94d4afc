#include "qround/round_layer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "qround/adaround.hpp"
#include "qround/flexround.hpp"
#include "qround/gptq.hpp"
#include "qround/nearest.hpp"
#include "qround/nupes.hpp"
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
  return {Method::kNearest, Method::kGptq, Method::kAdaRound, Method::kFlexRound, Method::kNupes};
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

namespace {

// FlexRound and NUPES optimise the Hessian-form loss only (no minibatch mode yet).
void require_hessian_mode(detail::ParamReader& params, const char* method) {
  const std::string mode = params.get_string("mode", "hessian");
  if (mode != "hessian")
    throw InvalidArgument(fmt::format("{}: mode '{}' is not supported: expected hessian", method,
                                      mode));
}

// RoundLayerOptions turned into the chosen method's typed options, parsed and validated: every
// mistake in the settings surfaces here, before any work is done.
struct PreparedCall {
  Method method = Method::kNearest;
  GridSpec grid;
  AdaRoundOptions adaround;
  FlexRoundOptions flexround;
  NupesOptions nupes;
  GptqOptions gptq;
};

PreparedCall prepare(const RoundLayerOptions& options) {
  options.grid.validate();
  if (options.threads < 0)
    throw InvalidArgument(fmt::format("threads = {} must be >= 0", options.threads));
  if (options.method == Method::kNupes && options.grid.format)
    throw InvalidArgument(fmt::format(
        "nupes cannot round onto format {}: its power-function levels are not among the levels "
        "a {} block can store; use nearest, gptq, adaround or flexround",
        to_string(*options.grid.format), to_string(*options.grid.format)));
  if (options.method == Method::kGptq && options.grid.format &&
      options.params.count("act-order") && !options.params.count("static-groups"))
    throw InvalidArgument(fmt::format(
        "gptq --act-order on format {} needs --static-groups: a GGUF block is a run of "
        "consecutive inputs, so act-order's dynamic groups cannot be stored",
        to_string(*options.grid.format)));
  PreparedCall call;
  call.method = options.method;
  call.grid = options.grid;
  detail::ParamReader params(options.params, to_string(options.method));
  switch (options.method) {
    case Method::kNearest:
      break;
    case Method::kGptq: {
      GptqOptions& o = call.gptq;
      o.threads = options.threads;
      o.act_order = params.get_bool("act-order", o.act_order);
      o.static_groups = params.get_bool("static-groups", o.static_groups);
      o.damp = params.get_double("damp", o.damp);
      o.block = params.get_int("block", static_cast<int>(o.block));
      o.validate();
      break;
    }
    case Method::kAdaRound: {
      AdaRoundOptions& o = call.adaround;
      if (options.iterations >= 0) o.iterations = options.iterations;
      o.seed = options.seed;
      o.threads = options.threads;
      o.lambda = params.get_double("lambda", o.lambda);
      o.lr = params.get_double("lr", o.lr);
      o.batch = params.get_int("batch", o.batch);
      o.mode = parse_adaround_mode(params.get_string("mode", to_string(o.mode)));
      o.relu = params.get_bool("relu", o.relu);
      o.rtn_guard = params.get_bool("rtn-guard", o.rtn_guard);
      o.beta_schedule =
          parse_beta_schedule(params.get_string("beta-schedule", to_string(o.beta_schedule)));
      o.beta_start = params.get_double("beta-start", o.beta_start);
      o.beta_end = params.get_double("beta-end", o.beta_end);
      o.warm_start = params.get_double("warm-start", o.warm_start);
      o.loss_interval = params.get_int("loss-interval", o.loss_interval);
      o.validate();
      break;
    }
    case Method::kFlexRound: {
      FlexRoundOptions& o = call.flexround;
      if (options.iterations >= 0) o.iterations = options.iterations;
      o.threads = options.threads;
      o.lr = params.get_double("lr", o.lr);
      o.final_lr_fraction = params.get_double("final-lr-fraction", o.final_lr_fraction);
      o.learn_s1 = params.get_bool("learn-s1", o.learn_s1);
      o.keep_best = params.get_bool("keep-best", o.keep_best);
      require_hessian_mode(params, "flexround");
      o.validate();
      break;
    }
    case Method::kNupes: {
      NupesOptions& o = call.nupes;
      if (options.iterations >= 0) o.iterations = options.iterations;
      o.threads = options.threads;
      o.per_row_exponent = params.get_bool("per-row-exponent", o.per_row_exponent);
      o.exponent_min = static_cast<float>(params.get_double("exponent-min", o.exponent_min));
      o.exponent_max = static_cast<float>(params.get_double("exponent-max", o.exponent_max));
      o.exponent_steps = params.get_int("exponent-steps", o.exponent_steps);
      o.fixed_exponent = static_cast<float>(params.get_double("exponent", o.fixed_exponent));
      o.lr = params.get_double("lr", o.lr);
      o.exponent_lr = params.get_double("exponent-lr", o.exponent_lr);
      o.learn_exponent = params.get_bool("learn-exponent", o.learn_exponent);
      o.learn_scale = params.get_bool("learn-scale", o.learn_scale);
      o.eps = params.get_double("eps", o.eps);
      o.exponent_clip = params.get_double("exponent-clip", o.exponent_clip);
      o.keep_best = params.get_bool("keep-best", o.keep_best);
      require_hessian_mode(params, "nupes");
      o.validate();
      // NUPES grids are symmetric (the power function is odd): an asymmetric request (the CLI's
      // default) gets the symmetric grid of the same bits and granularity, said in the report.
      call.grid.symmetric = true;
      call.grid.validate();
      break;
    }
  }
  params.finish();
  return call;
}

}  // namespace

void validate(const RoundLayerOptions& options) { prepare(options); }

QuantizedLayer round_layer(const LayerProblem& problem, const RoundLayerOptions& options,
                           const ProgressFn& progress) {
  const PreparedCall call = prepare(options);
#ifdef _OPENMP
  const int saved_threads = omp_get_max_threads();
  if (options.threads > 0) omp_set_num_threads(options.threads);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{saved_threads};
#endif
  switch (call.method) {
    case Method::kNearest:
      return round_to_nearest(problem, call.grid);
    case Method::kGptq:
      return gptq(problem, call.grid, call.gptq, progress);
    case Method::kAdaRound:
      return adaround(problem, call.grid, call.adaround, progress);
    case Method::kFlexRound:
      return flexround(problem, call.grid, call.flexround, progress);
    case Method::kNupes: {
      QuantizedLayer q = nupes(problem, call.grid, call.nupes, progress);
      if (!options.grid.symmetric)
        q.report.notes.push_back("nupes grids are symmetric: the asymmetric grid request was "
                                 "replaced by the symmetric grid of the same bits and groups");
      return q;
    }
  }
  throw InvalidArgument(fmt::format("method {} is not available in this build",
                                    to_string(options.method)));
}

}  // namespace qround
