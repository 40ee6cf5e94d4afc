// Block reconstruction (model/block_reconstruction.hpp) on a small random Llama model: never worse
// than the per-layer codes on the block loss, codes inside the grid, frozen format grids, the same
// result for any thread count, clean refusals and cancellation; and on stories260K at 2 bits it
// beats the per-layer method it starts from.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model_test_data.hpp"
#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/model/block_reconstruction.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/model/type_mix.hpp"
#include "qround/pipeline.hpp"

namespace qround::model {
namespace {

LlamaModel random_llama(unsigned seed, int dim = 32, int n_layers = 2) {
  LlamaConfig c;
  c.dim = dim;
  c.hidden_dim = 64;
  c.n_layers = n_layers;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 48;
  c.seq_len = 24;
  std::mt19937 gen(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  auto random = [&](Index r, Index cols, float scale) {
    MatrixF m(r, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = scale * n(gen);
    return m;
  };
  LlamaWeights w;
  w.token_embedding = random(c.vocab_size, c.dim, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    LlamaBlock b;
    b.rms_att = VectorF::Constant(c.dim, 1.0f);
    b.rms_ffn = VectorF::Constant(c.dim, 1.0f);
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
    b.linear[0] = random(c.dim, c.dim, 2.0f * in_scale);
    b.linear[1] = random(c.kv_dim(), c.dim, 2.0f * in_scale);
    b.linear[2] = random(c.kv_dim(), c.dim, in_scale);
    b.linear[3] = random(c.dim, c.dim, in_scale);
    b.linear[4] = random(c.hidden_dim, c.dim, in_scale);
    b.linear[5] = random(c.hidden_dim, c.dim, in_scale);
    b.linear[6] = random(c.dim, c.hidden_dim, 1.0f / std::sqrt(static_cast<float>(c.hidden_dim)));
    w.blocks.push_back(std::move(b));
  }
  w.rms_final = VectorF::Constant(c.dim, 1.0f);
  return LlamaModel(c, std::move(w));
}

std::vector<std::vector<int>> random_windows(int count, int length, int vocab, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<std::vector<int>> windows(count, std::vector<int>(length));
  for (auto& w : windows)
    for (int& t : w) t = tok(gen);
  return windows;
}

// Per-layer round-to-nearest on `spec`, sequential, leaving the model computing with the codes.
ModelQuantization per_layer(LlamaModel& model, const std::vector<std::vector<int>>& windows,
                            const GridSpec& spec, Method method = Method::kNearest) {
  LlamaAdapterOptions ao;
  ao.packed = false;
  LlamaQuantizable adapter(model, windows, ao);
  SequentialOptions so;
  so.round.method = method;
  so.round.grid = spec;
  return quantize_model(adapter, so);
}

std::vector<QuantizedLayer*> pointers(ModelQuantization& q, int num_linear) {
  std::vector<QuantizedLayer*> p(static_cast<std::size_t>(num_linear), nullptr);
  for (auto& l : q.layers) p[static_cast<std::size_t>(l.layer)] = &l.quantized;
  return p;
}

BlockReconstructionOptions quick(int iterations = 150) {
  BlockReconstructionOptions o;
  o.iterations = iterations;
  o.batch_windows = 3;
  return o;
}

TEST(BlockReconstruction, NeverWorseThanPerLayerAndLearnsSomething) {
  const LlamaModel float_model = random_llama(1);
  LlamaModel model = float_model;
  const auto windows = random_windows(6, 24, 48, 2);
  ModelQuantization q = per_layer(model, windows, GridSpec::with_group_size(2, 16));
  const auto before = q.layers;
  const BlockReconstruction r =
      reconstruct_blocks(model, float_model, windows, pointers(q, model.num_linear()), quick());
  ASSERT_EQ(r.blocks.size(), 2u);
  bool improved = false;
  for (const auto& b : r.blocks) {
    EXPECT_LE(b.final_loss, b.initial_loss) << "block " << b.block;
    EXPECT_LE(b.final_loss, b.learned_loss) << "keep-best picks the better of the two";
    improved = improved || b.final_loss < 0.9 * b.initial_loss;
  }
  EXPECT_TRUE(improved) << "150 steps at 2 bits should cut some block's loss by 10 %";
  for (std::size_t i = 0; i < q.layers.size(); ++i) {
    const QuantizedLayer& l = q.layers[i].quantized;
    EXPECT_GE(l.codes.minCoeff(), l.grid.qmin());
    EXPECT_LE(l.codes.maxCoeff(), l.grid.qmax());
    l.grid.validate(l.codes.rows(), l.codes.cols());
    // The model computes with exactly the final codes.
    EXPECT_EQ(model.linear(static_cast<int>(q.layers[i].layer)), l.dequantized());
  }
  // The first block's final loss, recomputed plainly: the float block's output on the float
  // embedding as the target, the quantized block on the (same) quantized embedding.
  double sum = 0.0;
  Index tokens = 0;
  for (const auto& w : windows) {
    MatrixF y = float_model.embed(w), x = model.embed(w);
    float_model.forward_block(0, y);
    model.forward_block(0, x);
    sum += (x - y).cast<double>().squaredNorm();
    tokens += x.rows();
  }
  EXPECT_NEAR(r.blocks[0].final_loss, sum / static_cast<double>(tokens),
              1e-5 * r.blocks[0].final_loss);
}

TEST(BlockReconstruction, SameResultForAnyThreadCount) {
  const LlamaModel float_model = random_llama(3);
  const auto windows = random_windows(5, 20, 48, 4);
  // Batches of 3 run windows in parallel; a batch of 1 splits each window's work instead.
  for (int batch : {3, 1}) {
    std::vector<ModelQuantization> results;
    for (int threads : {1, 2}) {
      LlamaModel model = float_model;
      ModelQuantization q = per_layer(model, windows, GridSpec::with_group_size(3, 16));
      BlockReconstructionOptions o = quick(60);
      o.threads = threads;
      o.seed = 7;
      o.batch_windows = batch;
      reconstruct_blocks(model, float_model, windows, pointers(q, model.num_linear()), o);
      results.push_back(std::move(q));
    }
    for (std::size_t i = 0; i < results[0].layers.size(); ++i) {
      EXPECT_EQ(results[0].layers[i].quantized.codes, results[1].layers[i].quantized.codes)
          << "batch " << batch;
      EXPECT_EQ(results[0].layers[i].quantized.grid.scales,
                results[1].layers[i].quantized.grid.scales)
          << "batch " << batch;
    }
  }
}

TEST(BlockReconstruction, FormatGridsStayFrozenAndExact) {
  // q4_0 stores its scales as fp16 d: the codes move, the grid does not, and the GGUF bytes still
  // dequantize to exactly the simulated weights (quantize_to_gguf checks every tensor).
  LlamaModel model = random_llama(5);
  const LlamaModel float_model = model;
  const auto windows = random_windows(4, 24, 48, 6);
  GgufQuantizeOptions o;
  o.types = pure_tensor_types(model, GgmlType::kQ4_0);
  o.sequential.round.method = Method::kNearest;
  o.sequential.round.grid.search = ScaleSearch::kHessian;
  o.block = quick(80);
  LlamaModel per_layer_model = float_model;
  GgufQuantizeOptions plain = o;
  plain.block.reset();
  const GgufQuantization reference = quantize_to_gguf(per_layer_model, windows, plain);
  const GgufQuantization r = quantize_to_gguf(model, windows, o);
  ASSERT_EQ(r.blocks.blocks.size(), 2u);
  bool moved = false;
  for (std::size_t i = 0; i < r.layers.layers.size(); ++i) {
    const QuantizedLayer& a = r.layers.layers[i].quantized;
    const QuantizedLayer& b = reference.layers.layers[i].quantized;
    EXPECT_EQ(a.grid.scales, b.grid.scales) << r.layers.layers[i].name;
    moved = moved || a.codes != b.codes;
  }
  EXPECT_TRUE(moved) << "block reconstruction changed no code at all";
  for (const auto& b : r.blocks.blocks) EXPECT_LE(b.final_loss, b.initial_loss);
}

TEST(BlockReconstruction, TableFormatLayersAreFrozenAndSaySo) {
  LlamaModel model = random_llama(8, 32, 1);
  const LlamaModel float_model = model;
  const auto windows = random_windows(3, 16, 48, 9);
  GgufQuantizeOptions o;
  o.types = pure_tensor_types(model, GgmlType::kIQ4_NL);
  o.sequential.round.method = Method::kNearest;
  o.sequential.round.grid.search = ScaleSearch::kHessian;
  o.block = quick(5);
  const GgufQuantization r = quantize_to_gguf(model, windows, o);
  ASSERT_EQ(r.blocks.blocks.size(), 1u);
  EXPECT_EQ(r.blocks.blocks[0].frozen.size(), 7u);
  EXPECT_NE(r.blocks.blocks[0].frozen[0].find("iq4_nl"), std::string::npos);
  EXPECT_EQ(r.blocks.blocks[0].final_loss, r.blocks.blocks[0].initial_loss);
}

TEST(BlockReconstruction, RefusesBadInputAndCancelsCleanly) {
  const LlamaModel float_model = random_llama(10, 32, 1);
  LlamaModel model = float_model;
  const auto windows = random_windows(3, 16, 48, 11);
  ModelQuantization q = per_layer(model, windows, GridSpec::with_group_size(3, 16));
  auto ptrs = pointers(q, model.num_linear());
  EXPECT_THROW(reconstruct_blocks(model, float_model, {}, ptrs), InvalidArgument);
  EXPECT_THROW(reconstruct_blocks(model, float_model, windows, {ptrs[0]}), InvalidArgument);
  EXPECT_THROW(reconstruct_blocks(model, float_model, {std::vector<int>(25, 1)}, ptrs),
               InvalidArgument);  // longer than seq_len
  for (auto bad : {+[](BlockReconstructionOptions& o) { o.lr = 0; },
                   +[](BlockReconstructionOptions& o) { o.iterations = -1; },
                   +[](BlockReconstructionOptions& o) { o.batch_windows = 0; },
                   +[](BlockReconstructionOptions& o) { o.warm_start = 1.5; },
                   +[](BlockReconstructionOptions& o) { o.scale_lr = -1; }}) {
    BlockReconstructionOptions o;
    bad(o);
    EXPECT_THROW(o.validate(), InvalidArgument);
  }
  const MatrixI8 codes = q.layers[0].quantized.codes;
  const MatrixF weights = model.linear(0);
  int calls = 0;
  EXPECT_THROW(reconstruct_blocks(model, float_model, windows, ptrs, quick(50),
                                  [&](double, std::string_view) { return ++calls < 10; }),
               Cancelled);
  EXPECT_EQ(q.layers[0].quantized.codes, codes) << "the block in progress keeps its codes";
  EXPECT_EQ(model.linear(0), weights);
}

// stories260K, 2 bits group 32, sequential GPTQ per layer, then 150 block steps: the model's NLL
// must drop well below the per-layer result's (calibration: 4 windows from the second half of the
// file, as the pipeline tests; evaluation: 4 096 tokens of its start). Measured: float 1.548,
// per-layer GPTQ 5.094; 100 block steps reach 4.461 (0.82 of the loss), 150 pass the 0.8 bound.
TEST(BlockReconstruction, Stories260KTwoBitsBeatsPerLayerGptq) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const LlamaModel float_model = load_llama2c(dir + "/stories260K.bin");
  const auto tok = Tokenizer::load(dir + "/tok512.bin", float_model.config().vocab_size);
  const std::string text = ::qround::testing::slurp(dir + "/tinystories_train_head.txt");
  const int seq_len = float_model.config().seq_len;
  const auto eval = make_eval_windows(tok.encode(text.substr(0, 20000)), seq_len, 4096);
  const auto calib = make_eval_windows(tok.encode(text.substr(100000)), seq_len, 4 * 511);
  LlamaModel model = float_model;
  ModelQuantization q = per_layer(model, calib, GridSpec::with_group_size(2, 32), Method::kGptq);
  const double nll_per_layer = evaluate(model, eval).nll;
  BlockReconstructionOptions o;
  o.iterations = 150;
  o.batch_windows = 4;
  reconstruct_blocks(model, float_model, calib, pointers(q, model.num_linear()), o);
  const double nll_block = evaluate(model, eval).nll;
  const double nll_float = evaluate(float_model, eval).nll;
  EXPECT_LT(nll_block - nll_float, 0.8 * (nll_per_layer - nll_float))
      << "float " << nll_float << " per-layer " << nll_per_layer << " block " << nll_block;
}

}  // namespace
}  // namespace qround::model
