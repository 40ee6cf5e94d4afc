// Scale search for ggml storage formats: valid exact grids for every type, never worse than a
// plain min-max fit written here, importance that matters, thread-count independence, bad input.
#include <gtest/gtest.h>

#include "qround/ggml_codec.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "qround/io/npy.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

// Gaussian weights with outlier columns and a few heavy-tailed entries.
MatrixF outlier_weights(Index rows, Index cols, std::uint64_t seed) {
  MatrixF w = testing::random_matrix(rows, cols, seed, 0.02);
  detail::Rng rng(seed, 11);
  for (Index c = 0; c < cols; c += 37) w.col(c) *= 6.0f;
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      if (rng.uniform() < 0.01) w(r, c) *= 10.0f;
  return w;
}

VectorD positive_importance(Index cols, std::uint64_t seed) {
  detail::Rng rng(seed, 5);
  VectorD imp(cols);
  for (Index c = 0; c < cols; ++c) imp[c] = std::exp(2.0 * rng.normal());
  return imp;
}

// Σ_j imp_j (w − ŵ)² of the grid's nearest codes, in double (imp = nullptr: unweighted).
double weighted_error(const MatrixF& w, const Grid& grid, const VectorD* imp) {
  const MatrixF w_hat = fake_quant(w, grid);
  double e = 0.0;
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c) {
      const double d = double(w(r, c)) - double(w_hat(r, c));
      e += (imp ? (*imp)[c] : 1.0) * d * d;
    }
  return e;
}

float half(double x) {
  const float r = round_to_fp16(static_cast<float>(x));
  return r == 0.0f ? (x < 0 ? -6.103515625e-05f : 6.103515625e-05f) : r;
}

// The plain ggml-style min-max fit, written independently of the search: 32-blocks d =
// fp16(max/qmin) (the largest magnitude on the most negative code) or d = fp16((max − min)/qmax),
// m = fp16(min); K-quants per sub-block min-max, then integer scales relative to the largest.
Grid naive_grid(const MatrixF& w, GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  Grid g = empty_format_grid(type, w.rows(), w.cols());
  const Index groups = w.cols() / t.sub_block, blocks = w.cols() / t.block;
  const int per = t.block / t.sub_block;
  g.zeros = MatrixI32::Zero(g.rows, groups);
  FormatParams& p = g.stored;
  p.d.resize(g.rows, blocks);
  if (t.has_offset) p.dmin.resize(g.rows, blocks);
  if (t.super_block) {
    p.sc.resize(g.rows, groups);
    if (t.has_offset) p.m.resize(g.rows, groups);
  }
  const int sc_lo = type == GgmlType::kQ3_K ? -32 : type == GgmlType::kQ6_K ? -128 : 1;
  const int sc_hi = type == GgmlType::kQ3_K   ? 31
                    : type == GgmlType::kQ6_K ? 127
                                              : (1 << t.scale_bits) - 1;
  for (Index r = 0; r < g.rows; ++r)
    for (Index b = 0; b < blocks; ++b) {
      std::vector<double> s(per), mb(per);
      for (int j = 0; j < per; ++j) {
        double lo = 0, hi = 0, vmax = 0;
        const Index c0 = b * t.block + j * t.sub_block;
        lo = hi = w(r, c0);
        for (Index c = c0; c < c0 + t.sub_block; ++c) {
          lo = std::min<double>(lo, w(r, c));
          hi = std::max<double>(hi, w(r, c));
          if (std::fabs(w(r, c)) > std::fabs(vmax)) vmax = w(r, c);
        }
        if (t.levels) {
          s[j] = vmax / -127.0;  // iq4_nl: the largest magnitude on kvalues_iq4nl[0] = −127
        } else if (t.has_offset) {
          if (t.super_block) lo = std::min(lo, 0.0);
          s[j] = (hi - lo) / t.qmax;
          mb[j] = -lo;
        } else {
          s[j] = vmax / t.qmin;
        }
      }
      if (!t.super_block) {
        p.d(r, b) = half(s[0]);
        if (t.has_offset) p.dmin(r, b) = round_to_fp16(static_cast<float>(-mb[0]));
        continue;
      }
      double smax = 0, mmax = 0;
      for (int j = 0; j < per; ++j) {
        if (std::fabs(s[j]) > std::fabs(smax)) smax = s[j];
        mmax = std::max(mmax, mb[j]);
      }
      const float d = half(t.has_offset ? smax / sc_hi : smax / sc_lo);
      p.d(r, b) = d;
      const float dmin = t.has_offset ? round_to_fp16(static_cast<float>(mmax / sc_hi)) : 0.0f;
      if (t.has_offset) p.dmin(r, b) = dmin;
      for (int j = 0; j < per; ++j) {
        long k = std::lround(s[j] / d);
        k = std::max<long>(sc_lo, std::min<long>(sc_hi, k));
        if (k == 0) k = 1;
        p.sc(r, b * per + j) = static_cast<std::int32_t>(type == GgmlType::kQ3_K ? k + 32 : k);
        if (t.has_offset)
          p.m(r, b * per + j) = dmin == 0.0f
                                    ? 0
                                    : static_cast<std::int32_t>(std::max<long>(
                                          0, std::min<long>(sc_hi, std::lround(mb[j] / dmin))));
      }
    }
  derive_format_levels(g);
  g.validate(g.rows, g.cols);
  return g;
}

// The grid is a valid exact format grid and every nearest code lies in the format's range.
void expect_valid(const Grid& g, const MatrixF& w, GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  ASSERT_NO_THROW(g.validate(w.rows(), w.cols())) << t.name;
  EXPECT_EQ(*g.format, type);
  EXPECT_EQ(g.group_size, t.sub_block);
  const MatrixI8 q = quantize(w, g);
  EXPECT_GE(q.cast<int>().minCoeff(), t.qmin) << t.name;
  EXPECT_LE(q.cast<int>().maxCoeff(), t.qmax) << t.name;
  for (Index r = 0; r < g.rows; ++r)
    for (Index j = 0; j < g.groups(); ++j) {
      // iq4_nl has no zero level: an all-zero block stores d = 0 (as ggml does), nothing else.
      const bool zero_block = (w.row(r).segment(j * t.sub_block, t.sub_block).array() == 0).all();
      if (t.levels && zero_block)
        ASSERT_EQ(g.scales(r, j), 0.0f) << t.name;
      else
        ASSERT_NE(g.scales(r, j), 0.0f) << t.name;
    }
}

// Searched with and without importance, ours beats the naive fit on its own metric.
void check_against_naive(const MatrixF& w, const VectorD& imp, GgmlType type) {
  const Grid naive = naive_grid(w, type);
  const Grid hess = make_grid(w, GridSpec::for_format(type, ScaleSearch::kHessian), imp);
  const Grid plain = make_grid(w, GridSpec::for_format(type, ScaleSearch::kMinMax));
  expect_valid(hess, w, type);
  expect_valid(plain, w, type);
  EXPECT_LE(weighted_error(w, hess, &imp), weighted_error(w, naive, &imp)) << to_string(type);
  EXPECT_LE(weighted_error(w, plain, nullptr), weighted_error(w, naive, nullptr))
      << to_string(type);
}

TEST(FormatSearch, EveryTypeBeatsTheNaiveFitOnSyntheticWeights) {
  const MatrixF w = outlier_weights(24, 512, 1);
  const VectorD imp = positive_importance(512, 2);
  for (GgmlType type : ggml_quantized_types()) check_against_naive(w, imp, type);
}

TEST(FormatSearch, EveryTypeBeatsTheNaiveFitOnRealLayers) {
  const auto dir = testing::layers_dir();
  if (!std::filesystem::exists(dir / "layers.0.wq.W.npy"))
    GTEST_SKIP() << "real layers not found under " << dir << " (set QROUND_DATA_DIR)";
  const std::pair<const char*, const char*> layers[] = {{"wq", "attn_in"}, {"wk", "attn_in"},
                                                        {"wv", "attn_in"}, {"wo", "attn_out"},
                                                        {"w1", "ffn_in"},  {"w3", "ffn_in"}};
  int checked = 0;
  for (int l = 0; l < 2; ++l)
    for (const auto& [name, site] : layers) {
      const std::string prefix = (dir / ("layers." + std::to_string(l) + ".")).string();
      const MatrixF w = io::load_npy_f32(prefix + name + ".W.npy");
      const MatrixF x = io::load_npy_f32(prefix + site + ".X.npy");
      const VectorD imp = x.cast<double>().colwise().squaredNorm().transpose();
      for (GgmlType type : ggml_quantized_types()) {
        if (w.cols() % ggml_traits(type).block != 0) continue;  // K-quants: 256-wide below
        check_against_naive(w, imp, type);
        ++checked;
      }
      // K-quants: the real rows side by side, four layers' worth of 64 inputs in one row of 256.
      if (w.rows() % 4 == 0) {
        const MatrixF wide = Eigen::Map<const MatrixF>(w.data(), w.rows() / 4, 256);
        const VectorD wide_imp = imp.replicate(4, 1);
        for (GgmlType type : {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                              GgmlType::kQ6_K}) {
          check_against_naive(wide, wide_imp, type);
          ++checked;
        }
      }
    }
  EXPECT_GT(checked, 100);
}

TEST(FormatSearch, ImportanceMatters) {
  // Strongly uneven importance: the weighted search must score better on the weighted metric
  // than the search that ignores it.
  const MatrixF w = outlier_weights(32, 512, 3);
  VectorD imp = positive_importance(512, 4);
  for (Index c = 0; c < imp.size(); c += 5) imp[c] *= 100.0;
  for (GgmlType type : ggml_quantized_types()) {
    const Grid hess = make_grid(w, GridSpec::for_format(type, ScaleSearch::kHessian), imp);
    const Grid plain = make_grid(w, GridSpec::for_format(type, ScaleSearch::kMinMax));
    EXPECT_LT(weighted_error(w, hess, &imp), weighted_error(w, plain, &imp)) << to_string(type);
  }
}

TEST(FormatSearch, IdenticalOnOneAndTwoThreads) {
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  const MatrixF w = outlier_weights(96, 1024, 5);
  const VectorD imp = positive_importance(1024, 6);
  const int saved = omp_get_max_threads();
  for (GgmlType type :
       {GgmlType::kQ4_0, GgmlType::kQ5_1, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kIQ4_NL}) {
    omp_set_num_threads(1);
    const Grid one = make_grid(w, GridSpec::for_format(type, ScaleSearch::kHessian), imp);
    omp_set_num_threads(2);
    const Grid two = make_grid(w, GridSpec::for_format(type, ScaleSearch::kHessian), imp);
    omp_set_num_threads(saved);
    const auto same = [](const auto& a, const auto& b) {
      // memcmp with a null pointer is undefined even for 0 bytes: empty parameters (types
      // without dmin or sub-block scales) compare by shape alone.
      return a.rows() == b.rows() && a.cols() == b.cols() &&
             (a.size() == 0 ||
              std::memcmp(a.data(), b.data(), sizeof(*a.data()) * a.size()) == 0);
    };
    EXPECT_TRUE(same(one.stored.d, two.stored.d)) << to_string(type);
    EXPECT_TRUE(same(one.stored.dmin, two.stored.dmin)) << to_string(type);
    EXPECT_TRUE(same(one.stored.sc, two.stored.sc)) << to_string(type);
    EXPECT_TRUE(same(one.stored.m, two.stored.m)) << to_string(type);
    EXPECT_TRUE(same(one.scales, two.scales)) << to_string(type);
  }
#endif
}

TEST(FormatSearch, ZeroAndConstantBlocksGetNonzeroScales) {
  MatrixF w = MatrixF::Zero(3, 256);
  w.row(1).setConstant(0.375f);  // exact in fp16: representable with zero error
  w.row(2).setConstant(-1.25f);
  for (GgmlType type : ggml_quantized_types()) {
    const Grid g = make_grid(w, GridSpec::for_format(type, ScaleSearch::kMinMax));
    expect_valid(g, w, type);
    // The zero row is exact everywhere; the constant rows are exact wherever the format can
    // put a level on the constant (every type here: 0.375 and −1.25 are fp16 multiples).
    const MatrixF w_hat = fake_quant(w, g);
    for (Index c = 0; c < w.cols(); ++c) EXPECT_EQ(w_hat(0, c), 0.0f) << to_string(type);
    EXPECT_NEAR((w_hat - w).cwiseAbs().maxCoeff(), 0.0, 1e-3) << to_string(type);
  }
}

TEST(FormatSearch, TinyAndHugeRangesStayFinite) {
  MatrixF w = testing::random_matrix(2, 256, 9, 1e-7);    // below fp16's normal range
  w.row(1) = testing::random_matrix(1, 256, 10, 2000.0);  // large but storable
  for (GgmlType type : ggml_quantized_types()) {
    const Grid g = make_grid(w, GridSpec::for_format(type, ScaleSearch::kMinMax));
    expect_valid(g, w, type);
    EXPECT_TRUE(fake_quant(w, g).allFinite()) << to_string(type);
  }
}

TEST(FormatSearch, RefusesRowsThatAreNotWholeBlocks) {
  const MatrixF w = testing::random_matrix(64, 172, 1);
  try {
    make_grid(w, GridSpec::for_format(GgmlType::kQ4_K, ScaleSearch::kMinMax));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("q4_k"), std::string::npos) << msg;
    EXPECT_NE(msg.find("256"), std::string::npos) << msg;
    EXPECT_NE(msg.find("64×172"), std::string::npos) << msg;
  }
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ8_0, ScaleSearch::kMinMax)),
               InvalidArgument);
}

TEST(FormatSearch, RefusesNonFiniteWeightsAndImportance) {
  MatrixF w = testing::random_matrix(4, 64, 2);
  VectorD imp = VectorD::Ones(64);
  w(1, 3) = std::nanf("");
  try {
    make_grid(w, GridSpec::for_format(GgmlType::kQ4_0), imp);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("(1, 3)"), std::string::npos) << e.what();
  }
  w(1, 3) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ4_1)), InvalidArgument);
  w(1, 3) = 0.5f;
  imp[7] = std::numeric_limits<double>::quiet_NaN();
  try {
    make_grid(w, GridSpec::for_format(GgmlType::kQ5_0), imp);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("importance[7]"), std::string::npos) << e.what();
  }
  imp[7] = -1.0;
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ5_0), imp), InvalidArgument);
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ5_0), VectorD::Ones(32)),
               InvalidArgument);
}

TEST(FormatSearch, RefusesRangesBeyondFp16) {
  for (GgmlType type : ggml_quantized_types()) {
    MatrixF w = testing::random_matrix(3, 256, 3);
    w(2, 70) = 3e9f;  // needs a scale far beyond 65504 in every format
    try {
      make_grid(w, GridSpec::for_format(type, ScaleSearch::kMinMax));
      FAIL() << "expected InvalidArgument for " << to_string(type);
    } catch (const InvalidArgument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find("fp16"), std::string::npos) << msg;
    }
  }
}

TEST(FormatSearch, RefusesMissingImportanceAndTheMseSearch) {
  const MatrixF w = testing::random_matrix(2, 256, 4);
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ4_K, ScaleSearch::kHessian)),
               InvalidArgument);
  EXPECT_THROW(make_grid(w, GridSpec::for_format(GgmlType::kQ4_K, ScaleSearch::kMse)),
               InvalidArgument);
  EXPECT_THROW(make_format_grid(w, GridSpec::for_format(GgmlType::kQ6_K), nullptr),
               InvalidArgument);
}

// ---- iq4_nl against llama.cpp's own search ------------------------------------------------------

// kvalues_iq4nl (ggml-common.h), written here independently.
const float kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// ggml-quants.c's best_index_int8: the nearest table entry of x (upper one on a tie).
int best_index(float x) {
  if (x <= kIq4[0]) return 0;
  if (x >= kIq4[15]) return 15;
  int ml = 0, mu = 15;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < kIq4[mav])
      mu = mav;
    else
      ml = mav;
  }
  return x - kIq4[mu - 1] < kIq4[mu] - x ? mu - 1 : mu;
}

// A plain reimplementation of llama.cpp's iq4_nl quantizer (quantize_row_iq4_nl_impl with
// super_block_size = block_size = 32 and ntry = 7, as quantize_iq4_nl calls it), one block:
// weights qw·sqrt(σ² + x²) (σ² = 2·Σx²/32) with an importance qw, x² without; returns the stored
// fp16 d and writes the codes L it stores.
float llama_iq4nl_block(const float* x, const double* qw, int* L) {
  float sigma2 = 0;
  for (int j = 0; j < 32; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / 32;
  float weight[32];
  for (int j = 0; j < 32; ++j)
    weight[j] = qw ? static_cast<float>(qw[j]) * std::sqrt(sigma2 + x[j] * x[j]) : x[j] * x[j];
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  if (amax < 1e-15f) {  // GROUP_MAX_EPS: d = 0, codes 0
    for (int j = 0; j < 32; ++j) L[j] = 0;
    return 0.0f;
  }
  float d = -max / kIq4[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float q = kIq4[best_index(id * x[j])];
    sumqx += weight[j] * q * x[j];
    sumq2 += weight[j] * q * q;
  }
  d = sumqx / sumq2;
  float best = d * sumqx;
  for (int itry = -7; itry <= 7; ++itry) {
    id = (itry + kIq4[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = kIq4[best_index(id * x[j])];
      sumqx += weight[j] * q * x[j];
      sumq2 += weight[j] * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
  }
  const float stored = round_to_fp16(d);  // GGML_FP32_TO_FP16(scales[0])
  id = d ? 1 / d : 0;                     // the codes use the unrounded d
  for (int j = 0; j < 32; ++j) L[j] = best_index(id * x[j]);
  return stored;
}

// Σ_j imp_j (w − ŵ)² of llama.cpp's bytes (ŵ = fp16 d · kvalues[L], in double).
double llama_iq4nl_error(const MatrixF& w, const VectorD* imp, bool give_importance) {
  double e = 0.0;
  int L[32];
  for (Index r = 0; r < w.rows(); ++r)
    for (Index b = 0; b < w.cols() / 32; ++b) {
      const MatrixF blk = w.block(r, b * 32, 1, 32);
      const float d =
          llama_iq4nl_block(blk.data(), give_importance ? imp->data() + b * 32 : nullptr, L);
      for (int j = 0; j < 32; ++j) {
        const double diff = double(blk(0, j)) - double(d) * kIq4[L[j]];
        e += (imp ? (*imp)[b * 32 + j] : 1.0) * diff * diff;
      }
    }
  return e;
}

// Ours with diag(H) ≤ llama.cpp given the same importance, both on Σ imp (w − ŵ)²; ours without
// importance ≤ llama.cpp without on Σ (w − ŵ)². Returns ours / llama's (weighted).
double check_against_llama(const MatrixF& w, const VectorD& imp, const std::string& what) {
  const Grid hess =
      make_grid(w, GridSpec::for_format(GgmlType::kIQ4_NL, ScaleSearch::kHessian), imp);
  const Grid plain = make_grid(w, GridSpec::for_format(GgmlType::kIQ4_NL, ScaleSearch::kMinMax));
  expect_valid(hess, w, GgmlType::kIQ4_NL);
  expect_valid(plain, w, GgmlType::kIQ4_NL);
  const double ours = weighted_error(w, hess, &imp);
  const double theirs = llama_iq4nl_error(w, &imp, true);
  EXPECT_LE(ours, theirs) << what;
  EXPECT_LE(weighted_error(w, plain, nullptr), llama_iq4nl_error(w, nullptr, false)) << what;
  return ours / theirs;
}

TEST(FormatSearch, Iq4NlAtLeastAsGoodAsLlamaCppOnSyntheticWeights) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    const MatrixF w = outlier_weights(48, 1024, 40 + seed);
    const VectorD imp = positive_importance(1024, 50 + seed);
    const double ratio = check_against_llama(w, imp, "seed " + std::to_string(seed));
    EXPECT_LT(ratio, 1.0);  // the wider scan finds strictly better blocks somewhere
    std::printf("iq4_nl synthetic seed %d: ours / llama.cpp = %.4f\n", int(seed), ratio);
  }
}

TEST(FormatSearch, Iq4NlAtLeastAsGoodAsLlamaCppOnRealLayers) {
  const auto dir = testing::layers_dir();
  if (!std::filesystem::exists(dir / "layers.0.wq.W.npy"))
    GTEST_SKIP() << "real layers not found under " << dir << " (set QROUND_DATA_DIR)";
  const std::pair<const char*, const char*> layers[] = {
      {"wq", "attn_in"}, {"wk", "attn_in"},    {"wv", "attn_in"}, {"wo", "attn_out"},
      {"w1", "ffn_in"},  {"w2", "ffn_hidden"}, {"w3", "ffn_in"}};
  int checked = 0;
  double worst = 0.0, sum = 0.0;
  for (int l = 0; l < 2; ++l)
    for (const auto& [name, site] : layers) {
      const std::string prefix = (dir / ("layers." + std::to_string(l) + ".")).string();
      if (!std::filesystem::exists(prefix + name + ".W.npy") ||
          !std::filesystem::exists(prefix + site + ".X.npy"))
        continue;
      const MatrixF w = io::load_npy_f32(prefix + name + ".W.npy");
      const MatrixF x = io::load_npy_f32(prefix + site + ".X.npy");
      if (w.cols() % 32 != 0 || x.cols() != w.cols()) continue;
      const VectorD imp = x.cast<double>().colwise().squaredNorm().transpose();
      const double ratio = check_against_llama(w, imp, prefix + name);
      worst = std::max(worst, ratio);
      sum += ratio;
      ++checked;
    }
  EXPECT_GE(checked, 10);
  std::printf("iq4_nl real layers: %d checked, ours / llama.cpp mean %.4f, worst %.4f\n", checked,
              sum / std::max(checked, 1), worst);
}

}  // namespace
}  // namespace qround
