// Language-model evaluation of a llama2.c model: mean next-token NLL (and perplexity) over a text,
// the mean KL divergence of a quantized model's next-token distribution from the float model's,
// and sampling.
//
// Protocol: the text is one token stream (dummy-prefix space, no BOS) cut into non-overlapping
// windows of seq_len positions: BOS followed by the next seq_len − 1 text tokens. Each text token
// is predicted exactly once, from the position before it; the prediction at a window's last
// position is not scored.
#pragma once

#include <cstdint>
#include <vector>

#include "qround/model/llama.hpp"

namespace qround::model {

// Windows (each starting with BOS) covering `text_tokens` in order; `max_tokens` > 0 keeps only
// that many text tokens first.
std::vector<std::vector<int>> make_eval_windows(const std::vector<int>& text_tokens, int seq_len,
                                                Index max_tokens = 0);

struct EvalResult {
  Index predicted_tokens = 0;
  double nll = 0.0;         // mean negative log-likelihood, nats per token
  double perplexity = 0.0;  // exp(nll)
  double kl = 0.0;          // mean KL(reference ‖ model) in nats; 0 without a reference
  double seconds = 0.0;
};

// NLL of `model` on the windows; with `reference` also the mean KL(reference ‖ model) on the same
// positions. Progress per window; cancellation throws qround::Cancelled.
EvalResult evaluate(const LlamaModel& model, const std::vector<std::vector<int>>& windows,
                    const LlamaModel* reference = nullptr, const ProgressFn& progress = {});

struct SampleOptions {
  int steps = 256;           // new tokens at most (also bounded by seq_len)
  float temperature = 0.0f;  // 0 = greedy
  std::uint64_t seed = 0;
  bool stop_at_bos = true;   // llama2.c ends a sample when the model emits BOS
  void validate() const;
};

// Continues `prompt` (which should start with BOS); returns the new tokens only.
std::vector<int> generate(const LlamaModel& model, const std::vector<int>& prompt,
                          const SampleOptions& options = {});

}  // namespace qround::model
