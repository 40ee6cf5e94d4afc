#include "qround/model/block_reconstruction.hpp"

#include <fmt/format.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "qround/detail/adam.hpp"
#include "qround/detail/rectified_sigmoid.hpp"
#include "qround/detail/rng.hpp"
#include "qround/detail/schedule.hpp"
#include "qround/detail/threads.hpp"
#include "qround/error.hpp"
#include "qround/model/llama_block.hpp"

namespace qround::model {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Eigen's own threading off for the guard's lifetime: the parallelism is over windows, and a
// product's result must not depend on how many threads computed it.
class EigenSerial {
 public:
  EigenSerial() : saved_(Eigen::nbThreads()) { Eigen::setNbThreads(1); }
  ~EigenSerial() { Eigen::setNbThreads(saved_); }

 private:
  int saved_;
};

BlockParams<float> params_of(const LlamaBlock& b,
                             const std::array<const MatrixF*, kLinearsPerBlock>& weights) {
  BlockParams<float> p;
  p.rms_att = &b.rms_att;
  p.rms_ffn = &b.rms_ffn;
  p.linear = weights;
  return p;
}

// One layer's variables: code = base + [h(α) ≥ ½], soft weight s·(base + h(α) − z), and on a grid
// whose scales are free floats (not a storage format's) the scale s = s₀·exp(σ) per group.
struct LayerVariables {
  int linear = -1;
  QuantizedLayer* layer = nullptr;
  bool trainable = false;
  bool learn_scale = false;
  MatrixF base;              // integer codes held as float
  MatrixF alpha;             // rounding variables
  MatrixF soft;              // soft weights of the current α
  MatrixF chain;             // s·dh/dα per weight
  MatrixF h, dh;             // h(α), dh/dα
  MatrixF log_scale, scale;  // σ and s₀·exp(σ), rows × groups (learn_scale only)
  MatrixF scale_grad;
  detail::Adam adam, scale_adam;

  float scale_at(Index r, Index g) const {
    return learn_scale ? scale(r, g) : layer->grid.scales(r, g);
  }

  // Soft weights and the chain factors for the current α (and σ).
  void update_soft(const detail::RectifiedSigmoid& sigmoid) {
    const Grid& g = layer->grid;
    if (learn_scale) scale = g.scales.array() * log_scale.array().exp();
    for (Index r = 0; r < soft.rows(); ++r)
      for (Index c = 0; c < soft.cols(); ++c) {
        const Index gi = g.group_of(c);
        const float s = scale_at(r, gi), z = g.zero_point(r, gi);
        float hv, dhv;
        sigmoid.eval(alpha(r, c), hv, dhv);
        h(r, c) = hv;
        dh(r, c) = dhv;
        soft(r, c) = s * (base(r, c) + hv - z);
        chain(r, c) = s * dhv;
      }
  }

  // ∂L/∂σ from ∂L/∂Ŵ: Σ over the group of ∂L/∂ŵ · ŵ (ŵ is proportional to s).
  void scale_gradient(const MatrixF& grad_w) {
    const Grid& g = layer->grid;
    scale_grad.setZero(g.rows, g.groups());
    for (Index r = 0; r < grad_w.rows(); ++r)
      for (Index c = 0; c < grad_w.cols(); ++c)
        scale_grad(r, g.group_of(c)) += grad_w(r, c) * soft(r, c);
  }

  // The hard result of the current variables: codes, and the grid with the learned scales.
  QuantizedLayer hard() const {
    QuantizedLayer q = *layer;
    const float lo = static_cast<float>(layer->grid.qmin()),
                hi = static_cast<float>(layer->grid.qmax());
    for (Index i = 0; i < base.size(); ++i) {
      const float v = base.data()[i] + (h.data()[i] >= 0.5f ? 1.0f : 0.0f);
      q.codes.data()[i] = static_cast<std::int8_t>(std::clamp(v, lo, hi));
    }
    if (learn_scale) q.grid.scales = scale;
    return q;
  }
};

// Why a grid cannot take one-step rounding variables (empty when it can).
std::string frozen_reason(const Grid& g) {
  if (g.has_level_table())
    return fmt::format("{} is a table format (its levels are not one uniform step apart)",
                       to_string(*g.format));
  if (!g.is_uniform()) return "a NUPES power grid (its levels are not one uniform step apart)";
  return {};
}

void init_variables(LayerVariables& v, const MatrixF& w_float,
                    const detail::RectifiedSigmoid& sigmoid, const detail::AdamConfig& adam,
                    double scale_lr) {
  const Grid& g = v.layer->grid;
  const Index rows = w_float.rows(), cols = w_float.cols();
  v.base.resize(rows, cols);
  v.alpha.resize(rows, cols);
  v.soft.resize(rows, cols);
  v.chain.resize(rows, cols);
  v.h.resize(rows, cols);
  v.dh.resize(rows, cols);
  const int lo = g.qmin(), hi = g.qmax();
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const Index gi = g.group_of(c);
      // The float weight in code units; the pair {base, base + 1} holds the per-layer code and
      // its neighbour toward the float weight.
      const double t = static_cast<double>(w_float(r, c)) / g.scales(r, gi) + g.zero_point(r, gi);
      const int code = v.layer->codes(r, c);
      int base = t >= code ? code : code - 1;
      base = std::clamp(base, lo, std::max(lo, hi - 1));
      v.base(r, c) = static_cast<float>(base);
      v.alpha(r, c) = sigmoid.inverse(static_cast<float>(std::clamp(t - base, 0.0, 1.0)), 1e-2f);
    }
  v.adam = detail::Adam(static_cast<std::size_t>(rows * cols), adam);
  if (v.learn_scale) {
    v.log_scale.setZero(g.rows, g.groups());
    detail::AdamConfig sa = adam;
    sa.lr = scale_lr;
    v.scale_adam = detail::Adam(static_cast<std::size_t>(v.log_scale.size()), sa);
  }
  v.update_soft(sigmoid);
}

}  // namespace

void BlockReconstructionOptions::validate() const {
  auto bad = [](const std::string& m) { throw InvalidArgument("block reconstruction: " + m); };
  if (iterations < 0 || iterations > (1 << 24))
    bad(fmt::format("iterations = {} must be in [0, 2^24]", iterations));
  if (!(lr > 0.0 && std::isfinite(lr))) bad(fmt::format("lr = {} must be > 0", lr));
  if (!(scale_lr >= 0.0 && std::isfinite(scale_lr)))
    bad(fmt::format("scale_lr = {} must be ≥ 0 (0 freezes the scales)", scale_lr));
  if (!(adam_beta1 >= 0.0 && adam_beta1 < 1.0) || !(adam_beta2 >= 0.0 && adam_beta2 < 1.0))
    bad(fmt::format("Adam betas {}, {} must be in [0, 1)", adam_beta1, adam_beta2));
  if (!(adam_eps > 0.0)) bad(fmt::format("adam_eps = {} must be > 0", adam_eps));
  if (!(lambda >= 0.0 && std::isfinite(lambda)))
    bad(fmt::format("lambda = {} must be ≥ 0", lambda));
  if (!(warm_start >= 0.0 && warm_start <= 1.0))
    bad(fmt::format("warm_start = {} must be in [0, 1]", warm_start));
  if (!(beta_start >= 1.0 && beta_end >= 1.0 && std::isfinite(beta_start)))
    bad(fmt::format("beta {} → {} must stay ≥ 1", beta_start, beta_end));
  if (!(zeta > 1.0 && gamma < 0.0))
    bad(fmt::format("zeta = {} must be > 1 and gamma = {} < 0", zeta, gamma));
  if (batch_windows < 1) bad(fmt::format("batch_windows = {} must be ≥ 1", batch_windows));
  if (threads < 0) bad(fmt::format("threads = {} must be ≥ 0", threads));
}

double block_loss(const LlamaModel& model, int l, const std::vector<MatrixF>& x,
                  const std::vector<MatrixF>& y,
                  const std::array<const MatrixF*, kLinearsPerBlock>& weights, int threads) {
  if (x.size() != y.size() || x.empty())
    throw InvalidArgument(
        fmt::format("block loss: {} inputs and {} targets (need ≥ 1, equal)", x.size(), y.size()));
  const BlockParams<float> p = params_of(model.weights().blocks.at(l), weights);
  std::vector<double> sums(x.size(), 0.0);
  Index tokens = 0;
  for (const auto& m : x) tokens += m.rows();
  EigenSerial serial;
  const int n = static_cast<int>(x.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(detail::resolve_threads(threads))
  for (int i = 0; i < n; ++i) {
    MatrixF out = x[i];
    block_forward<float>(model.config(), model.rope(), p, out);
    sums[i] = (out - y[i]).cast<double>().squaredNorm();
  }
  return std::accumulate(sums.begin(), sums.end(), 0.0) / static_cast<double>(tokens);
}

BlockReconstruction reconstruct_blocks(LlamaModel& model, const LlamaModel& float_model,
                                       const std::vector<std::vector<int>>& windows,
                                       const std::vector<QuantizedLayer*>& layers,
                                       const BlockReconstructionOptions& options,
                                       const ProgressFn& progress, const ReplaceLinearFn& replace) {
  options.validate();
  const auto start = Clock::now();
  const LlamaConfig& c = model.config();
  if (windows.empty()) throw InvalidArgument("block reconstruction: no calibration windows");
  if (static_cast<int>(layers.size()) != model.num_linear())
    throw InvalidArgument(fmt::format("block reconstruction: {} layer results for a model of {}",
                                      layers.size(), model.num_linear()));
  for (int i = 0; i < model.num_linear(); ++i)
    if (layers[i] && (layers[i]->codes.rows() != model.linear(i).rows() ||
                      layers[i]->codes.cols() != model.linear(i).cols()))
      throw InvalidArgument(fmt::format("block reconstruction: {} codes are {}×{}, expected {}×{}",
                                        model.linear_name(i), layers[i]->codes.rows(),
                                        layers[i]->codes.cols(), model.linear(i).rows(),
                                        model.linear(i).cols()));
  const int threads = detail::resolve_threads(options.threads);
  const detail::RectifiedSigmoid sigmoid{static_cast<float>(options.zeta),
                                         static_cast<float>(options.gamma)};
  const detail::AdamConfig adam{options.lr, options.adam_beta1, options.adam_beta2,
                                options.adam_eps};
  const ReplaceLinearFn set = replace ? replace : [&model](int i, const QuantizedLayer& q) {
    model.set_linear(i, q.dequantized());
  };

  // Hidden states entering block 0: the current model's and the float model's embeddings.
  const int n_windows = static_cast<int>(windows.size());
  std::vector<MatrixF> hidden_q(n_windows), hidden_f(n_windows);
  for (int w = 0; w < n_windows; ++w) {
    hidden_q[w] = model.embed(windows[w]);
    hidden_f[w] = float_model.embed(windows[w]);
  }
  Index tokens = 0;
  for (const auto& h : hidden_q) tokens += h.rows();

  BlockReconstruction result;
  const long total_steps = static_cast<long>(c.n_layers) * std::max(1, options.iterations);
  EigenSerial serial;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto block_start = Clock::now();
    BlockOutcome outcome;
    outcome.block = l;
    const LlamaBlock& fb = float_model.weights().blocks[l];
    // Targets: the float block on the float (asymmetric) or the quantized upstream's input.
    std::vector<MatrixF> target(n_windows);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int w = 0; w < n_windows; ++w) {
      target[w] = options.asymmetric_target ? hidden_f[w] : hidden_q[w];
      float_model.forward_block(l, target[w]);
    }

    std::array<LayerVariables, kLinearsPerBlock> vars;
    std::array<const MatrixF*, kLinearsPerBlock> initial{}, soft{};
    std::array<MatrixF, kLinearsPerBlock> initial_weights;
    bool any = false;
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      const int i = l * kLinearsPerBlock + k;
      LayerVariables& v = vars[k];
      v.linear = i;
      v.layer = layers[i];
      initial_weights[k] = v.layer ? v.layer->dequantized() : model.linear(i);
      initial[k] = &initial_weights[k];
      soft[k] = initial[k];
      if (!v.layer) continue;
      const std::string why = frozen_reason(v.layer->grid);
      if (!why.empty()) {
        outcome.frozen.push_back(fmt::format("{}: {}", model.linear_name(i), why));
        continue;
      }
      v.trainable = true;
      v.learn_scale = options.scale_lr > 0.0 && !v.layer->grid.format;
      any = true;
      init_variables(v, fb.linear[k], sigmoid, adam, options.scale_lr);
      soft[k] = &v.soft;
    }
    outcome.initial_loss = block_loss(model, l, hidden_q, target, initial, threads);
    outcome.learned_loss = outcome.initial_loss;

    if (any && options.iterations > 0) {
      const BlockParams<float> soft_params = params_of(model.weights().blocks[l], soft);
      detail::Rng rng(options.seed, static_cast<std::uint64_t>(l));
      std::vector<int> order(n_windows);
      std::iota(order.begin(), order.end(), 0);
      const int batch = std::min(options.batch_windows, n_windows);
      // Threads over the batch's windows first; those left over split each window's products
      // and heads (a batch smaller than the thread count still uses every core).
      const int window_threads = std::min(threads, batch);
      const int inner_threads = std::max(1, threads / window_threads);
      std::vector<std::array<MatrixF, kLinearsPerBlock>> grads(batch);
      // Per batch slot, reused across steps: a window's tape is megabytes (T² per head), and a
      // fresh allocation each step costs page faults.
      std::vector<BlockTape<float>> tapes(batch);
      std::vector<MatrixF> outs(batch);
      std::vector<double> batch_sums(batch);
      std::vector<Index> batch_tokens(batch);
      std::array<MatrixF, kLinearsPerBlock> total;
      bool diverged = false;
      for (int it = 0; it < options.iterations; ++it) {
        // A uniform subset of windows without replacement (partial Fisher–Yates).
        for (int b = 0; b < batch; ++b) {
          const int j = b + static_cast<int>(rng.below(static_cast<std::uint64_t>(n_windows - b)));
          std::swap(order[b], order[j]);
        }
        Index batch_token_count = 0;
        for (int b = 0; b < batch; ++b) batch_token_count += hidden_q[order[b]].rows();
        const float grad_scale = 2.0f / static_cast<float>(batch_token_count);
        auto run_window = [&](int b) {
          const int w = order[b];
          MatrixF& out = outs[b];
          out = hidden_q[w];
          block_forward<float>(c, model.rope(), soft_params, out, {}, &tapes[b], inner_threads);
          out -= target[w];
          batch_sums[b] = out.cast<double>().squaredNorm();
          out *= grad_scale;
          block_backward<float>(c, model.rope(), soft_params, tapes[b], out, grads[b], nullptr,
                                inner_threads);
        };
        // One level of OpenMP teams only: a second, nested team would spin against the first
        // one's idle threads for the same cores.
        if (window_threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(window_threads)
          for (int b = 0; b < batch; ++b) run_window(b);
        } else {
          for (int b = 0; b < batch; ++b) run_window(b);
        }
        const double rec =
            std::accumulate(batch_sums.begin(), batch_sums.end(), 0.0) / batch_token_count;
        if (!std::isfinite(rec)) {
          outcome.notes.push_back(fmt::format(
              "iteration {}: the block loss became {}; training stopped, the per-layer codes are "
              "kept",
              it, rec));
          diverged = true;
          break;
        }
        if (it % 50 == 0 || it + 1 == options.iterations) outcome.loss_curve.emplace_back(it, rec);
        const bool regularise = static_cast<double>(it) >= options.warm_start * options.iterations;
        const float beta = static_cast<float>(
            detail::anneal(options.beta_start, options.beta_end, it, options.iterations,
                           options.warm_start, detail::AnnealShape::kCosine));
        const float lambda = static_cast<float>(options.lambda);
        // The layers' updates are independent: one layer per thread at a time.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int k = 0; k < kLinearsPerBlock; ++k) {
          LayerVariables& v = vars[k];
          if (!v.trainable) continue;
          // The windows' gradients summed in batch order: the same for any thread count.
          MatrixF& g = total[k];
          g = grads[0][k];
          for (int b = 1; b < batch; ++b) g += grads[b][k];
          if (v.learn_scale) v.scale_gradient(g);  // g becomes ∂/∂α below
          for (Index e = 0; e < g.size(); ++e) {
            float grad = g.data()[e] * v.chain.data()[e];
            if (regularise) {  // λ · d(1 − |2h − 1|^β)/dh · dh/dα
              float value, dvalue;
              detail::rounding_regularizer(v.h.data()[e], beta, value, dvalue);
              grad += lambda * dvalue * v.dh.data()[e];
            }
            g.data()[e] = grad;
          }
          v.adam.step(v.alpha.data(), g.data());
          if (v.learn_scale) v.scale_adam.step(v.log_scale.data(), v.scale_grad.data());
          v.update_soft(sigmoid);
        }
        if (progress) {
          const long step = static_cast<long>(l) * options.iterations + it + 1;
          if (!progress(static_cast<double>(step) / static_cast<double>(total_steps),
                        fmt::format("block {} iteration {}/{} loss {:.4g}", l, it + 1,
                                    options.iterations, rec)))
            throw Cancelled();
        }
      }

      // Keep-best on the hard codes over every window.
      if (!diverged) {
        std::array<QuantizedLayer, kLinearsPerBlock> learned;
        std::array<MatrixF, kLinearsPerBlock> learned_weights;
        std::array<const MatrixF*, kLinearsPerBlock> current = initial;
        for (int k = 0; k < kLinearsPerBlock; ++k) {
          if (!vars[k].trainable) continue;
          learned[k] = vars[k].hard();
          learned_weights[k] = learned[k].dequantized();
          current[k] = &learned_weights[k];
        }
        outcome.learned_loss = block_loss(model, l, hidden_q, target, current, threads);
        double best = outcome.learned_loss;
        std::array<bool, kLinearsPerBlock> use_learned{};
        for (int k = 0; k < kLinearsPerBlock; ++k) use_learned[k] = vars[k].trainable;
        if (outcome.initial_loss < best) {
          best = outcome.initial_loss;
          current = initial;
          use_learned.fill(false);
        }
        // Each layer in turn takes whichever of its two code sets lowers the block loss.
        for (int k = 0; k < kLinearsPerBlock; ++k) {
          if (!vars[k].trainable) continue;
          auto trial = current;
          trial[k] = use_learned[k] ? initial[k] : &learned_weights[k];
          const double loss = block_loss(model, l, hidden_q, target, trial, threads);
          if (loss < best) {
            best = loss;
            current = trial;
            use_learned[k] = !use_learned[k];
          }
        }
        outcome.final_loss = best;
        for (int k = 0; k < kLinearsPerBlock; ++k) {
          LayerVariables& v = vars[k];
          if (!v.trainable) continue;
          if (use_learned[k]) {
            v.layer->codes = learned[k].codes;
            v.layer->grid = learned[k].grid;
            v.layer->report.method += "+block";
            v.layer->report.notes.push_back(fmt::format(
                "block reconstruction: block loss {:.6g} → {:.6g}", outcome.initial_loss, best));
          } else {
            outcome.kept_per_layer.push_back(model.linear_name(v.linear));
          }
        }
      } else {
        outcome.final_loss = outcome.initial_loss;
        for (int k = 0; k < kLinearsPerBlock; ++k)
          if (vars[k].trainable)
            outcome.kept_per_layer.push_back(model.linear_name(vars[k].linear));
      }
    } else {
      outcome.final_loss = outcome.initial_loss;
    }
    // The block is final: the model computes with it, and its output feeds the next block.
    for (int k = 0; k < kLinearsPerBlock; ++k)
      if (vars[k].trainable) set(vars[k].linear, *vars[k].layer);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int w = 0; w < n_windows; ++w) {
      model.forward_block(l, hidden_q[w]);
      if (options.asymmetric_target) float_model.forward_block(l, hidden_f[w]);
    }
    outcome.seconds = seconds_since(block_start);
    result.blocks.push_back(std::move(outcome));
  }
  result.seconds = seconds_since(start);
  return result;
}

}  // namespace qround::model
