#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "model_test_data.hpp"
#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/pipeline.hpp"

namespace qround {
namespace {

MatrixF random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0) {
  detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(scale * rng.normal());
  return m;
}

// A two-stage toy network: stage 0 = {A, B} on x; y = tanh(x Aᵀ) + x Bᵀ; stage 1 = {C} on y.
class ToyModel : public QuantizableModel {
 public:
  explicit ToyModel(Index batches) {
    float_ = {random_matrix(12, 16, 1, 0.3), random_matrix(12, 16, 2, 0.3),
              random_matrix(8, 12, 3, 0.3)};
    current_ = float_;
    for (Index b = 0; b < batches; ++b) inputs_.push_back(random_matrix(40, 16, 100 + b));
  }
  std::vector<LinearLayerInfo> layers() const override {
    return {{"A", 12, 16}, {"B", 12, 16}, {"C", 8, 12}};
  }
  std::vector<std::vector<Index>> stages() const override { return stages_; }
  Index calibration_batches() const override { return static_cast<Index>(inputs_.size()); }
  void run(Index batch, ModelWeights weights, const LayerInputFn& on_input) override {
    ++runs;
    const auto& w = weights == ModelWeights::kFloat ? float_ : current_;
    const MatrixF x = inputs_.at(batch);
    if (!on_input(0, x) || !on_input(1, x)) return;
    const MatrixF y = hidden(x, w);
    on_input(2, y);
  }
  MatrixF float_weights(Index layer) const override { return float_.at(layer); }
  void replace(Index layer, const QuantizedLayer& q) override {
    current_.at(layer) = q.dequantized();
  }
  void restore(Index layer) override { current_.at(layer) = float_.at(layer); }

  static MatrixF hidden(const MatrixF& x, const std::vector<MatrixF>& w) {
    MatrixF a = x * w[0].transpose();
    return MatrixF(a.array().tanh()) + x * w[1].transpose();
  }

  std::vector<MatrixF> float_, current_;
  std::vector<MatrixF> inputs_;
  std::vector<std::vector<Index>> stages_ = {{0, 1}, {2}};
  int runs = 0;
};

SequentialOptions rtn(int bits) {
  SequentialOptions o;
  o.round.method = Method::kNearest;
  o.round.grid = GridSpec::with_group_size(bits, 4);
  return o;
}

// ‖X_ref Wᵀ − X Ŵᵀ‖² computed plainly in double.
double plain_loss(const std::vector<MatrixF>& x_ref, const std::vector<MatrixF>& x,
                  const MatrixF& w, const MatrixF& w_hat) {
  double sum = 0.0;
  for (std::size_t b = 0; b < x.size(); ++b) {
    const Eigen::MatrixXd d = x_ref[b].cast<double>() * w.cast<double>().transpose() -
                              x[b].cast<double>() * w_hat.cast<double>().transpose();
    sum += d.squaredNorm();
  }
  return sum;
}

TEST(Pipeline, SequentialCalibrationSeesTheQuantizedUpstream) {
  ToyModel model(3);
  const ModelQuantization seq = quantize_model(model, rtn(2));
  ASSERT_EQ(seq.layers.size(), 3u);
  ASSERT_EQ(seq.stages.size(), 2u);
  EXPECT_EQ(seq.layers[2].name, "C");
  EXPECT_EQ(seq.layers[2].tokens, 120);
  // The model now computes with the quantized layers.
  for (int l = 0; l < 3; ++l)
    EXPECT_EQ(model.current_[l], seq.layers[l].quantized.dequantized()) << l;
  // C's loss is measured on the inputs the quantized A and B produce.
  std::vector<MatrixF> x_quant, x_float;
  for (const auto& x : model.inputs_) {
    x_quant.push_back(ToyModel::hidden(x, model.current_));
    x_float.push_back(ToyModel::hidden(x, model.float_));
  }
  const MatrixF c_hat = seq.layers[2].quantized.dequantized();
  const double expect_seq = plain_loss(x_quant, x_quant, model.float_[2], c_hat);
  EXPECT_NEAR(seq.layers[2].quantized.report.loss, expect_seq, 1e-6 * expect_seq);

  // C's reported loss in a fresh toy model quantized with the given calibration mode.
  auto c_loss = [](bool sequential, bool asymmetric, int* runs) {
    ToyModel fresh(3);
    SequentialOptions o = rtn(2);
    o.sequential = sequential;
    o.asymmetric_target = asymmetric;
    const double loss = quantize_model(fresh, o).layers[2].quantized.report.loss;
    *runs = fresh.runs;
    return loss;
  };
  int runs = 0;
  // One-shot: C's statistics come from the float model (one pass per batch), so its loss differs.
  const double expect_one = plain_loss(x_float, x_float, model.float_[2], c_hat);
  EXPECT_NEAR(c_loss(false, false, &runs), expect_one, 1e-6 * expect_one);
  EXPECT_GT(std::abs(expect_seq - expect_one), 1e-3 * expect_one);
  EXPECT_EQ(runs, 3);
  // Asymmetric target: ‖X Wᵀ − X̃ Ŵᵀ‖² with X from the float model.
  const double expect_asym = plain_loss(x_float, x_quant, model.float_[2], c_hat);
  EXPECT_NEAR(c_loss(true, true, &runs), expect_asym, 1e-6 * expect_asym);
}

TEST(Pipeline, ProgressAndCancellationRestoreTheModel) {
  ToyModel model(2);
  std::vector<double> fractions;
  quantize_model(model, rtn(4), [&](double f, std::string_view) {
    fractions.push_back(f);
    return true;
  });
  ASSERT_FALSE(fractions.empty());
  for (std::size_t i = 1; i < fractions.size(); ++i) EXPECT_GE(fractions[i], fractions[i - 1]);
  EXPECT_DOUBLE_EQ(fractions.back(), 1.0);

  ToyModel cancelled(2);
  int calls = 0;
  EXPECT_THROW(quantize_model(cancelled, rtn(4),
                              [&](double f, std::string_view) { return ++calls < 6 || f < 0; }),
               Cancelled);
  for (int l = 0; l < 3; ++l) EXPECT_EQ(cancelled.current_[l], cancelled.float_[l]) << l;
}

// Mixed precision over a model: the sensitivities are the one-shot (float-calibrated) relative
// losses, the chosen allocation fits its budget, more budget never predicts more loss, and the
// driver quantizes each layer at its allocated width.
TEST(Pipeline, MixedPrecisionAllocatesWithinTheBudget) {
  ToyModel model(3);
  SensitivityOptions so;
  so.bits = {2, 3, 4, 8};
  so.rounding = rtn(2).round;
  const SensitivityTable table = measure_model_sensitivity(model, so);
  ASSERT_EQ(table.names, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(model.runs, 3);  // one float pass over the batches
  for (std::size_t j = 0; j < table.bits.size(); ++j) {
    ToyModel fresh(3);
    SequentialOptions o = rtn(2);
    o.round.grid = mixed_precision_grid(o.round.grid, table.bits[j]);
    o.sequential = false;
    const ModelQuantization one_shot = quantize_model(fresh, o);
    for (Index i = 0; i < 3; ++i) {
      const double expect =
          one_shot.layers[static_cast<std::size_t>(i)].quantized.report.relative_loss;
      EXPECT_NEAR(table.sensitivity(i, static_cast<Index>(j)), expect, 1e-9 * expect + 1e-15)
          << i << " " << table.bits[j];
    }
  }

  const ParetoFront front = pareto_front(table);
  const double lo = static_cast<double>(front.min_total_bits) / front.total_weights;
  const double hi = static_cast<double>(front.max_total_bits) / front.total_weights;
  double previous_loss = std::numeric_limits<double>::infinity();
  for (int step = 0; step <= 20; ++step) {
    const double budget = lo + (hi - lo) * step / 20.0;
    const AllocationPoint& p = choose(front, Budget::bits_per_weight(budget));
    EXPECT_LE(p.bits_per_weight, budget + 1e-12) << budget;
    EXPECT_LE(p.loss, previous_loss) << budget;
    previous_loss = p.loss;
  }
  EXPECT_THROW(choose(front, Budget::bits_per_weight(lo * 0.99)), InvalidArgument);
  EXPECT_THROW(choose(front, Budget::bits_per_weight(hi * 1.01)), InvalidArgument);

  // Halfway between the storage of every layer at 3 bits and every layer at 4 bits.
  const double middle =
      0.5 * static_cast<double>(table.cost_bits.col(1).sum() + table.cost_bits.col(2).sum()) /
      front.total_weights;
  const AllocationPoint& chosen = choose(front, Budget::bits_per_weight(middle));
  EXPECT_GT(std::set<int>(chosen.bits.begin(), chosen.bits.end()).size(), 1u);
  SequentialOptions o = rtn(4);
  o.per_layer = per_layer_bits(front.names, chosen.bits);
  const ModelQuantization mixed = quantize_model(model, o);
  double bits = 0.0;
  for (std::size_t i = 0; i < 3; ++i) {
    const Grid& g = mixed.layers[i].quantized.grid;
    EXPECT_EQ(g.bits, chosen.bits[i]) << i;
    EXPECT_EQ(g.symmetric, chosen.bits[i] == 8) << i;  // 8 bits is made symmetric
    bits += static_cast<double>(table.cost_bits(
        static_cast<Index>(i),
        std::find(table.bits.begin(), table.bits.end(), chosen.bits[i]) - table.bits.begin()));
  }
  EXPECT_NEAR(bits_per_weight(mixed), chosen.bits_per_weight, 1e-9);
  EXPECT_NEAR(bits_per_weight(mixed), bits / front.total_weights, 1e-3);
  EXPECT_LE(bits_per_weight(mixed), middle + 1e-9);
  EXPECT_THROW(quantize_model(model,
                              [&] {
                                SequentialOptions bad = rtn(4);
                                bad.per_layer = per_layer_bits({"A", "B"}, {2, 3});
                                return bad;
                              }()),
               InvalidArgument);
}

TEST(Pipeline, RejectsBadStructureAndOptions) {
  ToyModel model(1);
  model.stages_ = {{0}, {2}};  // B in no stage
  EXPECT_THROW(quantize_model(model, rtn(4)), InvalidArgument);
  model.stages_ = {{0, 1}, {2, 1}};  // B twice
  EXPECT_THROW(quantize_model(model, rtn(4)), InvalidArgument);
  model.stages_ = {{0, 2}, {1}};  // mixed input widths
  EXPECT_THROW(quantize_model(model, rtn(4)), InvalidArgument);
  model.stages_ = {{0, 1}, {2}};
  SequentialOptions bad = rtn(4);
  bad.sequential = false;
  bad.asymmetric_target = true;
  EXPECT_THROW(quantize_model(model, bad), InvalidArgument);
  bad = rtn(1);
  EXPECT_THROW(quantize_model(model, bad), InvalidArgument);
}

// ---- the real model end to end ------------------------------------------------------------

struct RealSetup {
  model::LlamaModel float_model;
  std::vector<std::vector<int>> eval, calib;
};

RealSetup real_setup(const std::string& dir) {
  auto m = model::load_llama2c(dir + "/stories260K.bin");
  const auto tok = model::Tokenizer::load(dir + "/tok512.bin", m.config().vocab_size);
  std::ifstream in(dir + "/tinystories_train_head.txt", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // Evaluate on the first 20 000 characters, calibrate on 4 windows (2 044 tokens) from the second
  // half of the file: small, to keep the suite's time down (the README table calibrates on 4 088
  // tokens and evaluates on 20 000).
  RealSetup s{m, {}, {}};
  s.eval = model::make_eval_windows(tok.encode(text.substr(0, 20000)), m.config().seq_len);
  s.calib = model::make_eval_windows(tok.encode(text.substr(100000)), m.config().seq_len, 4 * 511);
  return s;
}

// Iterations per layer for the iterative methods (FlexRound, NUPES, AdaRound) in these tests:
// their defaults (5 000–10 000) take minutes for the 35 layers on 2 shared cores.
constexpr int kTestIterations = 100;

struct EndToEnd {
  double nll, kl;
};

EndToEnd quantize_and_eval(const RealSetup& s, Method method, int bits, int iterations,
                           bool sequential = true) {
  model::LlamaModel q = s.float_model;
  model::LlamaQuantizable adapter(q, s.calib);
  SequentialOptions o;
  o.round.method = method;
  // NUPES's power grid is odd-symmetric: it takes symmetric grids only.
  o.round.grid = GridSpec::with_group_size(bits, 32, /*symmetric=*/method == Method::kNupes);
  o.round.iterations = method == Method::kNearest || method == Method::kGptq ? -1 : iterations;
  o.sequential = sequential;
  const ModelQuantization r = quantize_model(adapter, o);
  for (const auto& l : r.layers) {
    const PackedMatrix* p = q.packed_linear(static_cast<int>(l.layer));
    EXPECT_NE(p, nullptr) << l.name;
    if (p) {
      EXPECT_EQ(p->unpack_codes(), l.quantized.codes) << l.name;
    }
  }
  const model::EvalResult e = model::evaluate(q, s.eval, &s.float_model);
  return {e.nll, e.kl};
}

// Measured here (first 20 000 characters: float NLL 1.4765 — the prefix is easier than the whole
// file; 4 calibration windows; integer kernels with int8 activations): RTN at 4 bits group 32
// gives 1.5623 (+0.086 nats/token, KL 0.097). Every method must stay within 0.15 nats of float.
// Measured with the methods of the gptq and flexnupes branches merged (kTestIterations = 100):
// FlexRound 1.5401 (KL 0.064), NUPES (symmetric grid) 1.5300 (0.071), GPTQ 1.5293 (0.064).
TEST(PipelineLlama2c, FourBitsGroup32EveryMethodNearFloat) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const RealSetup s = real_setup(dir);
  const double float_nll = model::evaluate(s.float_model, s.eval).nll;
  for (Method m : available_methods()) {
    const EndToEnd r = quantize_and_eval(s, m, 4, kTestIterations);
    EXPECT_LT(r.nll, float_nll + 0.15) << to_string(m);
    EXPECT_GT(r.kl, 0.0) << to_string(m);
    EXPECT_LT(r.kl, 0.2) << to_string(m);
  }
}

// At 3 bits group 32 RTN gives 2.0729 (+0.596 nats/token, KL 0.623); every
// learned method must do better, with kTestIterations per layer (the README table uses 500).
// Measured as above: FlexRound 1.8164 (KL 0.356), NUPES (symmetric grid) 2.0356 (0.585),
// GPTQ 1.8899 (0.416).
TEST(PipelineLlama2c, ThreeBitsLearnedMethodsBeatNearest) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const RealSetup s = real_setup(dir);
  const EndToEnd rtn_result = quantize_and_eval(s, Method::kNearest, 3, -1);
  const double float_nll = model::evaluate(s.float_model, s.eval).nll;
  EXPECT_GT(rtn_result.nll, float_nll + 0.3);  // 3-bit RTN visibly hurts (measured ≈ +0.6)
  for (Method m : available_methods()) {
    if (m == Method::kNearest) continue;
    const EndToEnd r = quantize_and_eval(s, m, 3, kTestIterations);
    EXPECT_LT(r.nll, rtn_result.nll) << to_string(m);
    EXPECT_LT(r.kl, rtn_result.kl) << to_string(m);
  }
}

// The stage inputs really come from the quantized upstream: the one-shot model (all statistics
// from the float model) differs from the sequential one once a method uses the Hessian; with RTN
// (no Hessian use) the codes must agree, which checks that only the calibration differs.
TEST(PipelineLlama2c, SequentialAndOneShotCalibrationDiffer) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const RealSetup s = real_setup(dir);
  model::LlamaModel a = s.float_model, b = s.float_model;
  model::LlamaQuantizable seq(a, s.calib), one(b, s.calib);
  SequentialOptions o;
  o.round.grid = GridSpec::with_group_size(3, 32);
  const ModelQuantization rs = quantize_model(seq, o);
  o.sequential = false;
  const ModelQuantization ro = quantize_model(one, o);
  ASSERT_EQ(rs.layers.size(), 35u);
  // Layer 0 (first stage) sees the same inputs either way; later layers do not.
  EXPECT_DOUBLE_EQ(rs.layers[0].quantized.report.loss, ro.layers[0].quantized.report.loss);
  int differ = 0;
  for (std::size_t i = 3; i < rs.layers.size(); ++i) {
    EXPECT_EQ(rs.layers[i].quantized.codes, ro.layers[i].quantized.codes);
    differ += rs.layers[i].quantized.report.loss != ro.layers[i].quantized.report.loss;
  }
  EXPECT_EQ(differ, 32);
}

// The adapter's block checkpoints (resuming a window where its last run entered a block) change
// the cost of sequential calibration, never its result: the same bits as rerunning every window
// from its embedding, with the quantized model's and the float model's runs (asymmetric target).
TEST(PipelineLlama2c, BlockCheckpointsGiveTheSameBits) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const RealSetup s = real_setup(dir);
  SequentialOptions o;
  o.round.method = Method::kGptq;
  o.round.grid = GridSpec::with_group_size(3, 32);
  o.asymmetric_target = true;
  std::vector<ModelQuantization> results;
  std::vector<model::LlamaModel> models;
  for (std::size_t budget : {std::size_t{0}, std::size_t{1} << 30}) {
    model::LlamaModel m = s.float_model;
    model::LlamaAdapterOptions ao;
    ao.checkpoint_bytes = budget;
    model::LlamaQuantizable adapter(m, s.calib, ao);
    results.push_back(quantize_model(adapter, o));
    models.push_back(std::move(m));
  }
  ASSERT_EQ(results[0].layers.size(), results[1].layers.size());
  for (std::size_t i = 0; i < results[0].layers.size(); ++i) {
    EXPECT_EQ(results[0].layers[i].quantized.codes, results[1].layers[i].quantized.codes) << i;
    EXPECT_EQ(results[0].layers[i].quantized.report.loss,
              results[1].layers[i].quantized.report.loss)
        << i;
  }
  const std::vector<int>& w = s.calib.front();
  EXPECT_EQ(models[0].forward(w), models[1].forward(w));
}

}  // namespace
}  // namespace qround
