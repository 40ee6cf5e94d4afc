// The qround side of scripts/interop.sh's model checks: qround's own evaluation of a GGUF model
// (float or quantized: it computes with the dequantized tensors), on the evaluation windows it
// writes for the engine, so llama.cpp scores exactly the same token ids.
//
//   gguf_nll MODEL.gguf TEXT SKIP MAX WINDOWS_OUT
//
// TEXT is tokenized by the GGUF's own tokenizer; its first SKIP tokens are dropped (held out from
// the calibration text, which is the same file's head), at most MAX (0: all) are kept, cut into
// windows of the model's context length starting with BOS (the protocol of model/evaluation.hpp).
// WINDOWS_OUT gets one window per line, whitespace-separated ids. Prints "nll X tokens N".
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "qround/error.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/gguf_llama.hpp"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: gguf_nll MODEL.gguf TEXT SKIP MAX WINDOWS_OUT\n");
    return 2;
  }
  try {
    const qround::model::GgufLlama g = qround::model::load_gguf_llama(argv[1]);
    if (!g.tokenizer) throw qround::IoError("no tokenizer: " + g.tokenizer_error);
    std::ifstream text_in(argv[2], std::ios::binary);
    if (!text_in) throw qround::IoError(fmt::format("cannot read '{}'", argv[2]));
    std::stringstream text;
    text << text_in.rdbuf();
    std::vector<int> tokens = g.tokenizer->encode(text.str());
    const long skip = std::atol(argv[3]), max = std::atol(argv[4]);
    if (skip < 0 || skip >= static_cast<long>(tokens.size()) || max < 0)
      throw qround::InvalidArgument(fmt::format("SKIP {} / MAX {} do not fit {} tokens", skip, max,
                                                tokens.size()));
    tokens.erase(tokens.begin(), tokens.begin() + skip);
    const auto windows =
        qround::model::make_eval_windows(tokens, g.model.config().seq_len, max);
    std::ofstream out(argv[5]);
    for (const auto& w : windows) {
      for (std::size_t i = 0; i < w.size(); ++i) out << (i ? " " : "") << w[i];
      out << '\n';
    }
    if (!out) throw qround::IoError(fmt::format("cannot write '{}'", argv[5]));
    const auto r = qround::model::evaluate(g.model, windows);
    fmt::print("nll {:.6f} tokens {}\n", r.nll, r.predicted_tokens);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_nll: %s\n", e.what());
    return 1;
  }
}
