// An imatrix from qround's calibration (model/calibration_imatrix.hpp) and its use in
// quantize_to_gguf: the sums are diag(XᵀX) of every linear input over the windows (checked against
// a plain double-precision forward of the first block and against the calibration Hessians), the
// names and counts are llama-imatrix's, and an imatrix entry replaces the calibration's importance
// in exactly that matrix's scale search.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "model_test_data.hpp"
#include "qround/error.hpp"
#include "qround/grid.hpp"
#include "qround/model/calibration_imatrix.hpp"
#include "qround/model/evaluation.hpp"
#include "qround/model/gguf_llama.hpp"
#include "qround/model/gguf_quantize.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/model/type_allocation.hpp"
#include "qround/model/type_mix.hpp"
#include "qround/problem.hpp"
#include "qround/scale_search.hpp"

namespace qround::model {
namespace {

struct StoriesCalib {
  LlamaModel model;
  std::vector<std::vector<int>> windows;
};

StoriesCalib stories(const std::string& dir, std::size_t chars) {
  LlamaModel m = load_llama2c(dir + "/stories260K.bin");
  const Tokenizer t = Tokenizer::load(dir + "/tok512.bin", m.config().vocab_size);
  auto w =
      make_eval_windows(t.encode(::qround::testing::slurp(dir + "/tinystories_train_head.txt").substr(0, chars)),
                        m.config().seq_len);
  return {std::move(m), std::move(w)};
}

TEST(CollectImatrix, SumsAreTheCalibrationInputsSquared) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const StoriesCalib s = stories(dir, 3000);
  const LlamaModel& m = s.model;
  const io::Imatrix im = collect_imatrix(m, s.windows);
  std::int64_t tokens = 0;
  for (const auto& w : s.windows) tokens += static_cast<std::int64_t>(w.size());
  ASSERT_GT(s.windows.size(), 1u);

  // llama-imatrix's defaults: every blk.N matrix, no classifier; one matrix each, all positions.
  ASSERT_EQ(im.entries.size(), 35u);
  for (const auto& e : im.entries) {
    EXPECT_EQ(e.name.rfind("blk.", 0), 0u) << e.name;
    ASSERT_EQ(e.counts.size(), 1u);
    EXPECT_EQ(e.counts[0], tokens) << e.name;
  }
  EXPECT_EQ(im.chunk_size, m.config().seq_len);
  EXPECT_EQ(im.chunk_count, tokens / m.config().seq_len);

  // Independent reference for blk.0.attn_q: RMSNorm of the embedding rows, in double.
  const int dim = m.config().dim;
  std::vector<double> ref(dim, 0.0);
  for (const auto& w : s.windows)
    for (int id : w) {
      double ss = 0.0;
      for (int c = 0; c < dim; ++c)
        ss += double(m.weights().token_embedding(id, c)) * m.weights().token_embedding(id, c);
      const double inv = 1.0 / std::sqrt(ss / dim + m.config().rms_eps);
      for (int c = 0; c < dim; ++c) {
        const double x =
            m.weights().token_embedding(id, c) * inv * m.weights().blocks[0].rms_att[c];
        ref[c] += x * x;
      }
    }
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"}) {
    const io::ImatrixEntry* e = im.find(name);
    ASSERT_NE(e, nullptr) << name;
    ASSERT_EQ(e->cols(), dim);
    for (int c = 0; c < dim; ++c)
      ASSERT_NEAR(e->sums[c], ref[c], 1e-5 * ref[c] + 1e-9) << name << " column " << c;
  }

  // Every layer: the diagonal of the Hessian a calibration of the float model accumulates.
  for (int i = 0; i < m.num_linear(); ++i) {
    LayerProblem p(m.linear(i));
    for (const auto& w : s.windows)
      m.forward(w, [&](int index, const MatrixFRef& x) {
        if (index == i) p.add_batch(x);
        return index < i;
      });
    const VectorD d = p.hessian_diagonal();
    const io::ImatrixEntry* e = im.find(gguf_linear_name(i));
    ASSERT_NE(e, nullptr) << gguf_linear_name(i);
    ASSERT_EQ(e->cols(), d.size());
    for (Index c = 0; c < d.size(); ++c)
      ASSERT_NEAR(e->sums[c], d[c], 1e-5 * d[c] + 1e-9) << gguf_linear_name(i) << " " << c;
  }

  // --process-output: the tied classifier's input under token_embd's name; through the file bytes
  // (both forms) the weights llama-quantize derives are the per-column means.
  CollectImatrixOptions po;
  po.process_output = true;
  const io::Imatrix with_out = collect_imatrix(m, s.windows, po);
  ASSERT_EQ(with_out.entries.size(), 36u);
  const io::ImatrixEntry* cls = with_out.find(kGgufTokenEmbedding);
  ASSERT_NE(cls, nullptr);
  EXPECT_EQ(cls->cols(), dim);
  for (io::ImatrixForm form : {io::ImatrixForm::kGguf, io::ImatrixForm::kLegacy}) {
    const io::Imatrix back = io::parse_imatrix(io::serialize_imatrix(with_out, form), "image");
    const VectorD imp = back.importance("blk.2.ffn_down.weight", m.config().hidden_dim);
    const io::ImatrixEntry* e = with_out.find("blk.2.ffn_down.weight");
    for (Index c = 0; c < imp.size(); ++c)
      EXPECT_NEAR(imp[c], e->sums[c] / static_cast<double>(tokens), 1e-6 * imp[c] + 1e-12)
          << to_string(form);
  }
  EXPECT_THROW(collect_imatrix(m, {}), InvalidArgument);
  EXPECT_THROW(collect_imatrix(m, {{1, 2}, {}}), InvalidArgument);
}

// With the nearest method the first layer's grid depends on nothing but the scale search's
// importance: with an imatrix entry it is make_grid(W, q4_0, that importance), bit for bit.
TEST(GgufQuantize, ImatrixEntryWeighsExactlyItsMatrixScaleSearch) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const StoriesCalib s = stories(dir, 2500);
  const LlamaModel& m = s.model;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  io::Imatrix im;
  im.chunk_size = m.config().seq_len;
  auto entry = [&](const std::string& name, Index cols) {
    io::ImatrixEntry e;
    e.name = name;
    e.counts = {100};
    for (Index c = 0; c < cols; ++c)  // strongly non-uniform, so the search's choice moves
      e.sums.push_back(static_cast<float>(100.0 * std::pow(u(rng), 4.0)));
    return e;
  };
  im.entries = {entry(kGgufTokenEmbedding, m.config().dim),
                entry("blk.0.attn_q.weight", m.config().dim)};
  GgufQuantizeOptions o;
  o.sequential.round.method = Method::kNearest;
  o.sequential.round.grid.search = ScaleSearch::kHessian;
  o.types = pure_tensor_types(m, GgmlType::kQ4_0);
  o.imatrix = im;
  LlamaModel q = m;
  const GgufQuantization r = quantize_to_gguf(q, s.windows, o);
  EXPECT_EQ(r.scale_importance.at("blk.0.attn_q.weight"), "imatrix");
  EXPECT_EQ(r.scale_importance.at(kGgufTokenEmbedding), "imatrix");
  EXPECT_EQ(r.scale_importance.at("blk.0.attn_k.weight"), "calibration");
  EXPECT_EQ(r.scale_importance.count("blk.0.ffn_down.weight"), 0u);  // f16: no scale search

  const GridSpec spec = GridSpec::for_format(GgmlType::kQ4_0, ScaleSearch::kHessian);
  const auto expect_grid_of = [&](const MatrixF& w, const std::string& name, const MatrixF& got) {
    const Grid g = make_grid(w, spec, im.importance(name, w.cols()));
    const MatrixF want = fake_quant(w, g);
    ASSERT_EQ(want.size(), got.size());
    for (Index i = 0; i < want.size(); ++i) ASSERT_EQ(want.data()[i], got.data()[i]) << name << i;
  };
  expect_grid_of(m.linear(0), "blk.0.attn_q.weight", q.linear(0));
  expect_grid_of(m.weights().token_embedding, kGgufTokenEmbedding, q.weights().token_embedding);

  // Without the imatrix the same layer takes the calibration's importance: a different grid.
  o.imatrix.reset();
  LlamaModel plain = m;
  const GgufQuantization rp = quantize_to_gguf(plain, s.windows, o);
  EXPECT_EQ(rp.scale_importance.at("blk.0.attn_q.weight"), "calibration");
  EXPECT_EQ(rp.scale_importance.at(kGgufTokenEmbedding), "uniform");
  EXPECT_NE(plain.linear(0), q.linear(0));

  // An entry whose width is not its matrix's, and an imatrix without the hessian search: refused.
  o.imatrix = im;
  o.imatrix->entries[1] = entry("blk.0.attn_q.weight", m.config().dim + 1);
  LlamaModel bad = m;
  EXPECT_THROW(quantize_to_gguf(bad, s.windows, o), InvalidArgument);
  o.imatrix = im;
  o.sequential.round.grid.search = ScaleSearch::kMinMax;
  EXPECT_THROW(quantize_to_gguf(bad, s.windows, o), InvalidArgument);
  EXPECT_EQ(bad.linear(0), m.linear(0));
}

// Mixed precision over ggml types: the file fits the budget, the ends of the range give every
// mixed layer its cheapest / largest candidate, fixed matrices keep their plan, bounds are named.
TEST(TypeAllocation, ChoosesCandidateTypesWithinTheFileBudget) {
  QROUND_REQUIRE_MODEL_DATA(dir);
  const StoriesCalib s = stories(dir, 2500);
  const LlamaModel& m = s.model;
  const auto plan = pure_tensor_types(m, GgmlType::kQ4_0);
  TypeAllocationOptions o;
  o.candidates = {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ5_1};
  o.rounding.method = Method::kNearest;
  o.rounding.grid.search = ScaleSearch::kHessian;
  o.bits_per_weight = 1.0;
  try {
    allocate_tensor_types(m, s.windows, plan, o);
    FAIL() << "a budget below every allocation was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
  }
  // The plain storage of the file at each end, computed from the block sizes.
  double weights = 0.0, fixed = 0.0, mixed_weights = 0.0;
  for (const auto& t : plan) {
    const bool emb = t.name == kGgufTokenEmbedding;
    int linear = -1;
    for (int i = 0; i < m.num_linear(); ++i)
      if (gguf_linear_name(i) == t.name) linear = i;
    const MatrixF& w = emb ? m.weights().token_embedding : m.linear(linear);
    weights += static_cast<double>(w.size());
    if (emb || t.type == GgmlType::kF16)
      fixed += static_cast<double>(w.size()) * ggml_traits(t.type).bits_per_weight();
    else
      mixed_weights += static_cast<double>(w.size());
  }
  const double lo = (fixed + 4.5 * mixed_weights) / weights,  // q4_0: 18 bytes per 32
      hi = (fixed + 8.5 * mixed_weights) / weights;           // q8_0: 34 bytes per 32
  for (const double budget : {lo, (lo + hi) / 2, hi}) {
    o.bits_per_weight = budget;
    const TypeAllocation a = allocate_tensor_types(m, s.windows, plan, o);
    EXPECT_LE(a.bits_per_weight, budget + 1e-12);
    EXPECT_EQ(a.table.names.size(), 30u);
    ASSERT_EQ(a.types.size(), plan.size());
    int changed = 0, at_q8 = 0;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      EXPECT_EQ(a.types[i].name, plan[i].name);
      const bool mixable = plan[i].name != kGgufTokenEmbedding && plan[i].type == GgmlType::kQ4_0;
      if (!mixable) {
        EXPECT_EQ(a.types[i].type, plan[i].type) << plan[i].name;
        continue;
      }
      if (budget == lo) EXPECT_EQ(a.types[i].type, GgmlType::kQ4_0) << plan[i].name;
      if (budget == hi) EXPECT_EQ(a.types[i].type, GgmlType::kQ8_0) << plan[i].name;
      changed += a.types[i].type != GgmlType::kQ4_0;
      at_q8 += a.types[i].type == GgmlType::kQ8_0;
    }
    if (budget != lo && budget != hi) {
      EXPECT_GT(changed, 0);
      EXPECT_LT(at_q8, 30);
      EXPECT_GT(a.bits_per_weight, lo);
    }
  }
  o.candidates = {GgmlType::kQ4_0, GgmlType::kF16};
  EXPECT_THROW(allocate_tensor_types(m, s.windows, plan, o), InvalidArgument);
}

}  // namespace
}  // namespace qround::model
