// Quantize a llama2.c model with qround's sequential driver, from a user's point of view.
//
//   example_quantize_llama2c stories260K.bin tok512.bin text.txt [method] [bits] [group]
//
// The adapter below is what you write for your own model: list the linear layers, group the ones
// that share an input into stages, run calibration data reporting each layer's input, and swap
// a layer's weights. (qround ships the same adapter for llama2.c as model::LlamaQuantizable,
// which also routes replaced layers through the packed integer kernels.)
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "qround/model/evaluation.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/pipeline.hpp"

using namespace qround;

class MyLlamaAdapter : public QuantizableModel {
 public:
  MyLlamaAdapter(model::LlamaModel& model, std::vector<std::vector<int>> batches)
      : model_(model), float_model_(model), batches_(std::move(batches)) {}

  std::vector<LinearLayerInfo> layers() const override {
    std::vector<LinearLayerInfo> out;
    for (int i = 0; i < model_.num_linear(); ++i)
      out.push_back({model_.linear_name(i), model_.linear(i).rows(), model_.linear(i).cols()});
    return out;
  }
  // Per block: {wq, wk, wv} read the normed residual, {wo} the attention output, {w1, w3} the
  // normed residual again, {w2} the gated hidden state. Indices are block * 7 + position.
  std::vector<std::vector<Index>> stages() const override {
    std::vector<std::vector<Index>> out;
    for (Index b = 0; b < model_.config().n_layers; ++b) {
      const Index o = b * model::kLinearsPerBlock;
      out.push_back({o + 0, o + 1, o + 2});
      out.push_back({o + 3});
      out.push_back({o + 4, o + 5});
      out.push_back({o + 6});
    }
    return out;
  }
  Index calibration_batches() const override { return static_cast<Index>(batches_.size()); }
  void run(Index batch, ModelWeights weights, const LayerInputFn& on_input) override {
    const auto& m = weights == ModelWeights::kFloat ? float_model_ : model_;
    m.forward(batches_[batch], [&](int layer, const MatrixFRef& x) { return on_input(layer, x); });
  }
  MatrixF float_weights(Index layer) const override {
    return float_model_.linear(static_cast<int>(layer));
  }
  void replace(Index layer, const QuantizedLayer& q) override {
    model_.set_linear(static_cast<int>(layer), q.dequantized());
  }
  void restore(Index layer) override {
    model_.set_linear(static_cast<int>(layer), float_model_.linear(static_cast<int>(layer)));
  }

 private:
  model::LlamaModel& model_;
  const model::LlamaModel float_model_;
  std::vector<std::vector<int>> batches_;
};

int main(int argc, char** argv) {
  if (argc < 4) {
    fmt::print(stderr, "usage: {} MODEL.bin TOKENIZER.bin TEXT.txt [method] [bits] [group]\n",
               argv[0]);
    return 2;
  }
  try {
    const auto float_model = model::load_llama2c(argv[1]);
    const auto tokenizer = model::Tokenizer::load(argv[2], float_model.config().vocab_size);
    std::ifstream in(argv[3], std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const std::vector<int> tokens = tokenizer.encode(text.str());
    const int seq_len = float_model.config().seq_len;
    // Calibrate on 8 windows from the end of the text, evaluate on the first 20 000 tokens.
    const std::size_t tail = std::min<std::size_t>(tokens.size(), 8 * (seq_len - 1));
    const auto calib = model::make_eval_windows(
        std::vector<int>(tokens.end() - static_cast<std::ptrdiff_t>(tail), tokens.end()), seq_len);
    const auto eval = model::make_eval_windows(tokens, seq_len, 20000);

    model::LlamaModel quantized = float_model;
    MyLlamaAdapter adapter(quantized, calib);
    SequentialOptions options;
    options.round.method = parse_method(argc > 4 ? argv[4] : "nearest");
    options.round.grid = GridSpec::with_group_size(argc > 5 ? std::atoi(argv[5]) : 4,
                                                   argc > 6 ? std::atoi(argv[6]) : 32);
    const ModelQuantization result = quantize_model(
        adapter, options, [](double fraction, std::string_view message) {
          fmt::print(stderr, "\r{:5.1f}% {:<50}", 100.0 * fraction, message);
          return true;  // false would cancel and restore the float weights
        });
    fmt::print(stderr, "\n");
    for (const auto& layer : result.layers)
      fmt::print("{:<14} relative loss {:.3e} (RTN {:.3e})\n", layer.name,
                 layer.quantized.report.relative_loss, layer.quantized.report.relative_loss_rtn);

    const auto f = model::evaluate(float_model, eval);
    const auto q = model::evaluate(quantized, eval, &float_model);
    fmt::print("float NLL {:.4f}  quantized NLL {:.4f}  KL {:.4f}  ({:.1f} s)\n", f.nll, q.nll,
               q.kl, result.seconds);
    model::SampleOptions sample;
    sample.steps = 60;
    fmt::print("{}\n", tokenizer.decode(model::generate(quantized, {model::Tokenizer::kBos}, sample)));
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
