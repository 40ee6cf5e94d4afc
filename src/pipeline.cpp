#include "qround/pipeline.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>

#include "qround/problem.hpp"

namespace qround {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Checks the adapter's description: every layer in exactly one stage, sane shapes.
void validate_structure(const std::vector<LinearLayerInfo>& layers,
                        const std::vector<std::vector<Index>>& stages) {
  if (layers.empty()) throw InvalidArgument("the model reports no quantizable layer");
  std::set<std::string> names;
  for (const auto& l : layers) {
    if (l.rows <= 0 || l.cols <= 0)
      throw InvalidArgument(fmt::format("layer '{}' is {}×{}: expected a non-empty out × in",
                                        l.name, l.rows, l.cols));
    if (!names.insert(l.name).second)
      throw InvalidArgument(fmt::format("two layers are named '{}'", l.name));
  }
  std::vector<int> seen(layers.size(), 0);
  for (const auto& stage : stages) {
    if (stage.empty()) throw InvalidArgument("the model reports an empty stage");
    for (Index i : stage) {
      if (i < 0 || i >= static_cast<Index>(layers.size()))
        throw InvalidArgument(
            fmt::format("a stage names layer {} but there are {} layers", i, layers.size()));
      if (layers[i].cols != layers[stage.front()].cols)
        throw InvalidArgument(fmt::format("stage mixes '{}' ({} inputs) and '{}' ({} inputs)",
                                          layers[stage.front()].name, layers[stage.front()].cols,
                                          layers[i].name, layers[i].cols));
      ++seen[i];
    }
  }
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (seen[i] != 1)
      throw InvalidArgument(fmt::format("layer '{}' appears in {} stages, expected exactly 1",
                                        layers[i].name, seen[i]));
}

std::unique_ptr<LayerProblem> new_layer_problem(const QuantizableModel& model,
                                                const std::vector<LinearLayerInfo>& layers,
                                                Index layer) {
  const MatrixF w = model.float_weights(layer);
  const auto& info = layers[layer];
  if (w.rows() != info.rows || w.cols() != info.cols)
    throw InvalidArgument(fmt::format("float_weights('{}') is {}×{}, layers() says {}×{}",
                                      info.name, w.rows(), w.cols(), info.rows, info.cols));
  return std::make_unique<LayerProblem>(w);
}

// One pass of the float model gathers every layer's statistics (progress 0..1 over the batches;
// a false return cancels).
std::map<Index, std::unique_ptr<LayerProblem>> calibrate_on_float(
    QuantizableModel& model, const std::vector<LinearLayerInfo>& layers,
    const ProgressFn& progress) {
  std::map<Index, std::unique_ptr<LayerProblem>> problems;
  for (Index l = 0; l < static_cast<Index>(layers.size()); ++l)
    problems[l] = new_layer_problem(model, layers, l);
  const Index batches = model.calibration_batches();
  if (batches <= 0)
    throw InvalidArgument(fmt::format("the model offers {} calibration batches", batches));
  for (Index b = 0; b < batches; ++b) {
    model.run(b, ModelWeights::kFloat, [&](Index layer, const MatrixFRef& x) {
      const auto it = problems.find(layer);
      if (it != problems.end()) it->second->add_batch(x);
      return true;
    });
    if (progress && !progress(static_cast<double>(b + 1) / static_cast<double>(batches),
                              fmt::format("float calibration: batch {}/{}", b + 1, batches)))
      throw Cancelled();
  }
  return problems;
}

class Driver {
 public:
  Driver(QuantizableModel& model, const SequentialOptions& options, const ProgressFn& progress)
      : model_(model), options_(options), progress_(progress) {
    layers_ = model.layers();
    stages_ = model.stages();
    validate_structure(layers_, stages_);
    batches_ = model.calibration_batches();
    if (batches_ <= 0)
      throw InvalidArgument(fmt::format("the model offers {} calibration batches", batches_));
  }

  ModelQuantization run() {
    const auto start = Clock::now();
    try {
      if (!options_.sequential) calibrate_one_shot();
      for (std::size_t s = 0; s < stages_.size(); ++s) run_stage(s);
    } catch (...) {
      for (Index layer : replaced_) model_.restore(layer);
      throw;
    }
    ModelQuantization out;
    out.stages = std::move(stage_outcomes_);
    for (const auto& stage : stages_)
      for (Index layer : stage) out.layers.push_back(std::move(outcomes_.at(layer)));
    std::sort(out.layers.begin(), out.layers.end(),
              [](const LayerOutcome& a, const LayerOutcome& b) { return a.layer < b.layer; });
    out.seconds = seconds_since(start);
    return out;
  }

 private:
  // Progress units: per layer one unit of calibration and one of rounding.
  void report(double units_done, const std::string& message) {
    if (!progress_) return;
    const double total = 2.0 * static_cast<double>(layers_.size());
    if (!progress_(std::min(1.0, units_done / total), message)) throw Cancelled();
  }

  std::unique_ptr<LayerProblem> new_problem(Index layer) {
    return new_layer_problem(model_, layers_, layer);
  }

  void calibrate_one_shot() {
    const auto start = Clock::now();
    problems_ = calibrate_on_float(model_, layers_, [&](double f, std::string_view message) {
      report(f * static_cast<double>(layers_.size()), std::string(message));
      return true;
    });
    one_shot_seconds_ = seconds_since(start);
  }

  // Runs batch b until every layer of the stage has reported, calling f(layer, x) for them.
  template <typename F>
  void stream_stage(Index b, ModelWeights weights, const std::vector<Index>& stage, F&& f) {
    std::set<Index> pending(stage.begin(), stage.end());
    model_.run(b, weights, [&](Index layer, const MatrixFRef& x) {
      if (pending.erase(layer) == 0) return true;
      f(layer, x);
      return !pending.empty();
    });
    if (!pending.empty())
      throw InvalidArgument(fmt::format("calibration batch {} never reached layer '{}'", b,
                                        layers_[*pending.begin()].name));
  }

  void calibrate_stage(const std::vector<Index>& stage, double units_before) {
    for (Index layer : stage) problems_[layer] = new_problem(layer);
    const std::string& first = layers_[stage.front()].name;
    for (Index b = 0; b < batches_; ++b) {
      std::map<Index, MatrixF> float_inputs;
      if (options_.asymmetric_target)
        stream_stage(b, ModelWeights::kFloat, stage,
                     [&](Index layer, const MatrixFRef& x) { float_inputs[layer] = x; });
      stream_stage(b, ModelWeights::kCurrent, stage, [&](Index layer, const MatrixFRef& x) {
        if (options_.asymmetric_target) {
          const MatrixF& xf = float_inputs.at(layer);
          if (xf.rows() != x.rows())
            throw InvalidArgument(fmt::format(
                "batch {}: '{}' saw {} tokens in the float run but {} in the quantized run", b,
                layers_[layer].name, xf.rows(), x.rows()));
          problems_.at(layer)->add_batch(x, xf);
        } else {
          problems_.at(layer)->add_batch(x);
        }
      });
      report(units_before + static_cast<double>(stage.size()) * static_cast<double>(b + 1) /
                                static_cast<double>(batches_),
             fmt::format("{}: calibration batch {}/{}", first, b + 1, batches_));
    }
  }

  void run_stage(std::size_t s) {
    const auto& stage = stages_[s];
    StageOutcome outcome;
    outcome.layers = stage;
    const double units_before = 2.0 * static_cast<double>(done_layers_);
    auto start = Clock::now();
    if (options_.sequential) {
      calibrate_stage(stage, units_before);
      outcome.calibration_seconds = seconds_since(start);
    } else {
      // Attribute the single pass's time to the stages in proportion to their layers.
      outcome.calibration_seconds = one_shot_seconds_ * static_cast<double>(stage.size()) /
                                    static_cast<double>(layers_.size());
    }
    start = Clock::now();
    for (std::size_t i = 0; i < stage.size(); ++i) {
      const Index layer = stage[i];
      const auto& info = layers_[layer];
      const RoundLayerOptions opts =
          options_.per_layer ? options_.per_layer(info, options_.round) : options_.round;
      const double base =
          2.0 * static_cast<double>(done_layers_) + static_cast<double>(stage.size());
      report(base,
             fmt::format("{}: {} {} bits", info.name, to_string(opts.method), opts.grid.bits));
      std::unique_ptr<LayerProblem> problem = std::move(problems_.at(layer));
      problems_.erase(layer);
      const ProgressFn nested = [&](double f, std::string_view message) {
        if (!progress_) return true;
        const double total = 2.0 * static_cast<double>(layers_.size());
        return progress_(std::min(1.0, (base + f) / total),
                         fmt::format("{}: {}", info.name, message));
      };
      LayerOutcome result;
      result.layer = layer;
      result.name = info.name;
      result.tokens = problem->tokens();
      if (options_.prepare_problem) options_.prepare_problem(info, *problem);
      result.quantized = round_layer(*problem, opts, nested);
      problem.reset();  // free the Hessian before the next layer
      model_.replace(layer, result.quantized);
      replaced_.push_back(layer);
      outcomes_[layer] = std::move(result);
      ++done_layers_;
    }
    outcome.rounding_seconds = seconds_since(start);
    stage_outcomes_.push_back(std::move(outcome));
    report(2.0 * static_cast<double>(done_layers_),
           fmt::format("stage {}/{} done", s + 1, stages_.size()));
  }

  QuantizableModel& model_;
  const SequentialOptions& options_;
  const ProgressFn& progress_;
  std::vector<LinearLayerInfo> layers_;
  std::vector<std::vector<Index>> stages_;
  Index batches_ = 0;
  std::map<Index, std::unique_ptr<LayerProblem>> problems_;
  std::map<Index, LayerOutcome> outcomes_;
  std::vector<StageOutcome> stage_outcomes_;
  std::vector<Index> replaced_;
  Index done_layers_ = 0;
  double one_shot_seconds_ = 0.0;
};

}  // namespace

void SequentialOptions::validate() const {
  round.grid.validate();
  if (round.threads < 0)
    throw InvalidArgument(fmt::format("threads = {} must be >= 0", round.threads));
  if (asymmetric_target && !sequential)
    throw InvalidArgument(
        "an asymmetric target needs sequential calibration (the one-shot "
        "inputs are the float inputs already)");
}

ModelQuantization quantize_model(QuantizableModel& model, const SequentialOptions& options,
                                 const ProgressFn& progress) {
  options.validate();
  return Driver(model, options, progress).run();
}

SensitivityTable measure_model_sensitivity(QuantizableModel& model,
                                           const SensitivityOptions& options,
                                           const ProgressFn& progress) {
  options.validate();
  const std::vector<LinearLayerInfo> layers = model.layers();
  validate_structure(layers, model.stages());
  // Half the progress for the calibration pass, half for the measurements.
  const auto half = [&](double offset) -> ProgressFn {
    if (!progress) return {};
    return
        [&progress, offset](double f, std::string_view m) { return progress(offset + 0.5 * f, m); };
  };
  auto problems = calibrate_on_float(model, layers, half(0.0));
  std::vector<LayerSource> sources;
  for (Index l = 0; l < static_cast<Index>(layers.size()); ++l) {
    // Each source is asked once: it hands its problem over, so it is freed once measured.
    std::shared_ptr<LayerProblem> problem = std::move(problems.at(l));
    sources.push_back({layers[l].name, [problem] { return std::move(*problem); }});
  }
  return measure_sensitivity(sources, options, half(0.5));
}

std::function<RoundLayerOptions(const LinearLayerInfo&, const RoundLayerOptions&)> per_layer_bits(
    const std::vector<std::string>& names, const std::vector<int>& bits) {
  if (names.size() != bits.size())
    throw InvalidArgument(
        fmt::format("per_layer_bits: {} names but {} bit widths", names.size(), bits.size()));
  std::map<std::string, int> by_name;
  for (std::size_t i = 0; i < names.size(); ++i) by_name[names[i]] = bits[i];
  return [by_name](const LinearLayerInfo& layer, const RoundLayerOptions& base) {
    const auto it = by_name.find(layer.name);
    if (it == by_name.end())
      throw InvalidArgument(fmt::format("no bit width allocated to layer '{}'", layer.name));
    RoundLayerOptions options = base;
    options.grid = mixed_precision_grid(base.grid, it->second);
    return options;
  };
}

double bits_per_weight(const ModelQuantization& result) {
  double bits = 0.0, weights = 0.0;
  for (const auto& l : result.layers) {
    const Grid& grid = l.quantized.grid;
    const double n = static_cast<double>(grid.rows) * static_cast<double>(grid.cols);
    bits += n * (grid.bits + grid.overhead_bits_per_weight());
    weights += n;
  }
  return weights > 0.0 ? bits / weights : 0.0;
}

}  // namespace qround
