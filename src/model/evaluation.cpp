#include "qround/model/evaluation.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/model/tokenizer.hpp"

namespace qround::model {
namespace {

// log-softmax of one row of logits, in double.
void log_softmax(const float* logits, Index n, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(n));
  double mx = logits[0];
  for (Index i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (Index i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (Index i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - lse;
}

}  // namespace

std::vector<std::vector<int>> make_eval_windows(const std::vector<int>& text_tokens, int seq_len,
                                                Index max_tokens) {
  if (seq_len < 2)
    throw InvalidArgument(fmt::format("seq_len {} must be at least 2 to score a token", seq_len));
  if (max_tokens < 0) throw InvalidArgument(fmt::format("max_tokens {} must be >= 0", max_tokens));
  const std::size_t n = max_tokens > 0 ? std::min(text_tokens.size(),
                                                  static_cast<std::size_t>(max_tokens))
                                       : text_tokens.size();
  const std::size_t per = static_cast<std::size_t>(seq_len) - 1;
  std::vector<std::vector<int>> windows;
  for (std::size_t start = 0; start < n; start += per) {
    std::vector<int> w{Tokenizer::kBos};
    const std::size_t end = std::min(n, start + per);
    w.insert(w.end(), text_tokens.begin() + start, text_tokens.begin() + end);
    windows.push_back(std::move(w));
  }
  return windows;
}

EvalResult evaluate(const LlamaModel& model, const std::vector<std::vector<int>>& windows,
                    const LlamaModel* reference, const ProgressFn& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (reference && reference->config().vocab_size != model.config().vocab_size)
    throw InvalidArgument(fmt::format("reference model has vocabulary {}, the model {}",
                                      reference->config().vocab_size, model.config().vocab_size));
  EvalResult r;
  // Windows run in parallel (each forward pass is then single-threaded inside Eigen); per-window
  // sums are reduced in window order so the result does not depend on the thread count.
  const Index n = static_cast<Index>(windows.size());
  std::vector<double> nll(n, 0.0), kl(n, 0.0);
  std::vector<Index> count(n, 0);
  bool cancelled = false;
  Index finished = 0;
#pragma omp parallel for schedule(dynamic, 1)
  for (Index w = 0; w < n; ++w) {
    bool skip;
#pragma omp atomic read
    skip = cancelled;
    const auto& tokens = windows[w];
    if (skip || tokens.size() < 2) continue;
    const MatrixF logits = model.forward(tokens);
    MatrixF ref_logits;
    if (reference) ref_logits = reference->forward(tokens);
    const Index V = logits.cols();
    std::vector<double> lp, lq;
    for (Index t = 0; t + 1 < static_cast<Index>(tokens.size()); ++t) {
      log_softmax(logits.row(t).data(), V, lq);
      nll[w] -= lq[tokens[t + 1]];
      if (reference) {
        log_softmax(ref_logits.row(t).data(), V, lp);
        double k = 0.0;
        for (Index i = 0; i < V; ++i) k += std::exp(lp[i]) * (lp[i] - lq[i]);
        kl[w] += k;
      }
      ++count[w];
    }
#pragma omp critical(qround_eval_progress)
    {
      ++finished;
      if (progress && !cancelled &&
          !progress(static_cast<double>(finished) / static_cast<double>(n),
                    fmt::format("window {}/{}", finished, n)))
#pragma omp atomic write
        cancelled = true;
    }
  }
  if (cancelled) throw Cancelled();
  double nll_sum = 0.0, kl_sum = 0.0;
  for (Index w = 0; w < n; ++w) {
    nll_sum += nll[w];
    kl_sum += kl[w];
    r.predicted_tokens += count[w];
  }
  if (r.predicted_tokens == 0) throw InvalidArgument("evaluation has no token to predict");
  r.nll = nll_sum / static_cast<double>(r.predicted_tokens);
  r.perplexity = std::exp(r.nll);
  r.kl = reference ? kl_sum / static_cast<double>(r.predicted_tokens) : 0.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

void SampleOptions::validate() const {
  if (steps < 0) throw InvalidArgument(fmt::format("steps = {} must be >= 0", steps));
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    throw InvalidArgument(fmt::format("temperature = {} must be finite and >= 0", temperature));
}

std::vector<int> generate(const LlamaModel& model, const std::vector<int>& prompt,
                          const SampleOptions& options) {
  options.validate();
  if (prompt.empty()) throw InvalidArgument("prompt must hold at least one token (BOS)");
  const int seq_len = model.config().seq_len;
  std::vector<int> tokens = prompt;
  std::vector<int> out;
  detail::Rng rng(options.seed);
  while (static_cast<int>(out.size()) < options.steps &&
         static_cast<int>(tokens.size()) < seq_len) {
    // The whole context again: the model is small, and this keeps one forward implementation.
    const MatrixF logits = model.forward(tokens);
    const auto last = logits.row(logits.rows() - 1);
    int next = 0;
    if (options.temperature == 0.0f) {
      last.maxCoeff(&next);
    } else {
      std::vector<double> p;
      MatrixF scaled = last / options.temperature;
      log_softmax(scaled.data(), scaled.cols(), p);
      double u = rng.uniform(), acc = 0.0;
      next = static_cast<int>(p.size()) - 1;
      for (std::size_t i = 0; i < p.size(); ++i) {
        acc += std::exp(p[i]);
        if (u < acc) {
          next = static_cast<int>(i);
          break;
        }
      }
    }
    if (options.stop_at_bos && next == Tokenizer::kBos) break;
    tokens.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace qround::model
