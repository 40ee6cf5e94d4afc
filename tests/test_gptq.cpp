#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>

#include "qround/detail/dense.hpp"
#include "qround/detail/dense_gemm.hpp"
#include "qround/detail/gptq_factor.hpp"
#include "qround/detail/rng.hpp"
#include "qround/gptq.hpp"
#include "qround/nearest.hpp"
#include "qround/round_layer.hpp"
#include "qround/scale_search.hpp"

namespace qround {
namespace {

MatrixF random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0) {
  detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) m(r, c) = static_cast<float>(scale * rng.normal());
  return m;
}

// Strongly correlated inputs: few latent factors mixed into every feature plus a little noise,
// and feature scales spread over two decades (so act-order has something to sort).
MatrixF correlated_inputs(Index tokens, Index in, std::uint64_t seed) {
  const Index latent = std::max<Index>(2, in / 4);
  const MatrixF z = random_matrix(tokens, latent, seed);
  const MatrixF mix = random_matrix(latent, in, seed + 1);
  MatrixF x = z * mix + random_matrix(tokens, in, seed + 2, 0.1);
  for (Index c = 0; c < in; ++c) x.col(c) *= static_cast<float>(std::pow(10.0, 2.0 * c / in - 1.0));
  return x;
}

LayerProblem correlated_problem(Index out, Index in, std::uint64_t seed, Index tokens = 256) {
  LayerProblem p(random_matrix(out, in, seed + 10, 0.1));
  p.add_batch(correlated_inputs(tokens, in, seed));
  return p;
}

// ---- the reference algorithm, plainly, in double (IST-DASLab gptq.py fasterquant) -------------

// Naive lower Cholesky factor; false if not positive definite.
bool naive_cholesky(const MatrixD& a, MatrixD& l) {
  const Index n = a.rows();
  l = MatrixD::Zero(n, n);
  for (Index j = 0; j < n; ++j) {
    double s = a(j, j);
    for (Index k = 0; k < j; ++k) s -= l(j, k) * l(j, k);
    if (!(s > 0.0)) return false;
    l(j, j) = std::sqrt(s);
    for (Index i = j + 1; i < n; ++i) {
      double t = a(i, j);
      for (Index k = 0; k < j; ++k) t -= l(i, k) * l(j, k);
      l(i, j) = t / l(j, j);
    }
  }
  return true;
}

// cholesky → cholesky_inverse → cholesky(upper), as the reference does.
MatrixD reference_upper_factor(const MatrixD& h) {
  const Index n = h.rows();
  MatrixD l;
  EXPECT_TRUE(naive_cholesky(h, l));
  MatrixD linv = MatrixD::Zero(n, n);  // forward substitution column by column
  for (Index c = 0; c < n; ++c)
    for (Index i = 0; i < n; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (Index k = 0; k < i; ++k) s -= l(i, k) * linv(k, c);
      linv(i, c) = s / l(i, i);
    }
  MatrixD hinv = MatrixD::Zero(n, n);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j)
      for (Index k = 0; k < n; ++k) hinv(i, j) += linv(k, i) * linv(k, j);
  MatrixD l2;
  EXPECT_TRUE(naive_cholesky(hinv, l2));
  return l2.transpose();  // upper U with UᵀU = H⁻¹
}

struct ReferenceResult {
  MatrixI8 codes;  // original column order
  MatrixF w_hat;   // dequantized, original column order
};

ReferenceResult reference_gptq(const LayerProblem& problem, const GridSpec& spec,
                               const GptqOptions& o) {
  const Index m = problem.rows(), n = problem.cols();
  MatrixF w = problem.weights();
  MatrixD h = problem.hessian();
  Grid grid;
  if (spec.granularity != Granularity::kPerGroup) grid = make_grid(w, spec);
  for (Index j = 0; j < n; ++j)
    if (h(j, j) == 0.0) {
      h(j, j) = 1.0;
      w.col(j).setZero();
    }
  const Index g = spec.effective_group_size(n);
  const bool dynamic = spec.granularity == Granularity::kPerGroup && !o.static_groups && g < n;
  if (spec.granularity == Granularity::kPerGroup) grid = make_grid(w, spec);
  std::vector<Index> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), Index{0});
  if (o.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](Index a, Index b) { return h(a, a) > h(b, b); });
  MatrixD wp(m, n), hp(n, n);
  for (Index a = 0; a < n; ++a) {
    wp.col(a) = w.col(perm[a]).cast<double>();
    for (Index b = 0; b < n; ++b) hp(a, b) = h(perm[a], perm[b]);
  }
  hp.diagonal().array() += o.damp * hp.diagonal().mean();
  const MatrixD u = reference_upper_factor(hp);
  GridSpec row_spec = spec;
  row_spec.granularity = Granularity::kPerRow;
  ReferenceResult out;
  out.codes.resize(m, n);
  out.w_hat.resize(m, n);
  MatrixD snapshot = wp;  // W as the lazy block updates leave it at the current block's start
  VectorF scale(m);
  MatrixI32 zero(m, 1);
  for (Index j = 0; j < n; ++j) {
    if (j % o.block == 0) snapshot = wp;
    if (dynamic && j % g == 0) {
      const Grid gg = make_grid(snapshot.middleCols(j, std::min(g, n - j)).cast<float>(), row_spec);
      for (Index r = 0; r < m; ++r) {
        scale[r] = gg.scales(r, 0);
        zero(r, 0) = gg.zeros(r, 0);
      }
    }
    for (Index r = 0; r < m; ++r) {
      const float wf = static_cast<float>(wp(r, j));
      std::int32_t q;
      double v;
      if (dynamic) {
        const double t = std::round(static_cast<double>(wf) / scale[r]) + zero(r, 0);
        q = static_cast<std::int32_t>(std::clamp<double>(t, spec.qmin(), spec.qmax()));
        v = static_cast<double>(scale[r]) * (q - zero(r, 0));
      } else {
        q = grid.code(r, perm[j], wf);
        v = grid.level(r, perm[j], q);
      }
      out.codes(r, perm[j]) = static_cast<std::int8_t>(q);
      out.w_hat(r, perm[j]) = static_cast<float>(v);
      const double err = (wp(r, j) - v) / u(j, j);
      for (Index k = j + 1; k < n; ++k) wp(r, k) -= err * u(j, k);
    }
  }
  return out;
}

// The reference algorithm's options (no RTN guard: its codes are compared one to one).
GptqOptions options(bool act_order, bool static_groups, Index block) {
  GptqOptions o;
  o.rtn_guard = false;
  o.act_order = act_order;
  o.static_groups = static_groups;
  o.block = block;
  return o;
}

Index mismatches(const MatrixI8& a, const MatrixI8& b) { return (a.array() != b.array()).count(); }

// ---- tests -------------------------------------------------------------------------------------

template <typename T>
void check_gemm_sub(Index m, Index n, Index k, bool portable) {
  // Operands with padding (leading dimensions larger than the shapes) to catch stride mistakes.
  const Index lda = m + 3, ldb = n + 5, ldc = n + 2;
  const MatrixF a = random_matrix(k, lda, 20), b = random_matrix(k, ldb, 21);
  const MatrixF c0 = random_matrix(m, ldc, 22);
  RowMatrix<T> at = a.cast<T>(), bt = b.cast<T>(), c = c0.cast<T>();  // a: column-major m × k
  if (portable)
    detail::gemm_sub_portable(c.data(), ldc, at.data(), lda, bt.data(), ldb, m, n, k);
  else
    detail::gemm_sub(c.data(), ldc, at.data(), lda, bt.data(), ldb, m, n, k);
  double worst = 0.0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < ldc; ++j) {
      double expect = c0(i, j);
      if (j < n)
        for (Index p = 0; p < k; ++p) expect -= double(a(p, i)) * double(b(p, j));
      if (j >= n) {
        EXPECT_EQ(double(c(i, j)), expect) << "padding written at " << i << "," << j;
      }
      worst = std::max(worst, std::abs(double(c(i, j)) - expect));
    }
  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-13) * (k + 1);
  EXPECT_LT(worst, tol) << m << "×" << n << "×" << k << (portable ? " portable" : " dispatched");
}

TEST(GptqKernels, GemmSubMatchesNaiveOnOddShapes) {
  const Index shapes[][3] = {{1, 1, 1},     {7, 33, 5},     {8, 32, 128},
                             {13, 47, 129}, {64, 200, 300}, {130, 70, 140}};
  for (bool portable : {false, true})
    for (const auto& s : shapes) {
      check_gemm_sub<float>(s[0], s[1], s[2], portable);
      check_gemm_sub<double>(s[0], s[1], s[2], portable);
    }
  std::printf("gemm_sub path: %s\n", detail::gemm_sub_path());
}

TEST(GptqKernels, EveryDenseKernelGivesTheSameCodes) {
  // gemm_sub follows the dense-kernel choice; GPTQ must agree with the reference on each.
  const LayerProblem p = correlated_problem(24, 48, 3);
  const GridSpec spec = GridSpec::with_group_size(4, 16);
  const GptqOptions o = options(false, false, 16);
  const ReferenceResult ref = reference_gptq(p, spec, o);
  for (const std::string& name : detail::dense_kernels()) {
    detail::ScopedDenseKernel scoped(name);
    EXPECT_EQ(detail::gemm_sub_path(), std::string(name == "scalar" ? "portable" : name));
    EXPECT_EQ(mismatches(gptq(p, spec, o).codes, ref.codes), 0) << name;
  }
}

TEST(GptqKernels, BlockedFactorMatchesReference) {
  // Several 128-blocks with a ragged edge; a correlated SPD matrix, damped as GPTQ does.
  const MatrixF x = correlated_inputs(600, 300, 23);
  MatrixD h = (x.cast<double>().transpose() * x.cast<double>());
  h.diagonal().array() += 0.01 * h.diagonal().mean();
  MatrixD u;
  ASSERT_TRUE(detail::upper_factor_of_inverse(h, u));
  const MatrixD ref = reference_upper_factor(h);
  EXPECT_TRUE(u.isUpperTriangular(0.0));
  const double scale = ref.cwiseAbs().maxCoeff();
  EXPECT_LT((u - ref).cwiseAbs().maxCoeff(), 1e-9 * scale);
  EXPECT_LT((u.transpose() * u * h - MatrixD::Identity(300, 300)).cwiseAbs().maxCoeff(), 1e-8);
  MatrixD indefinite = MatrixD::Identity(200, 200);
  indefinite(150, 150) = -1.0;
  EXPECT_FALSE(detail::upper_factor_of_inverse(indefinite, u));
}

TEST(Gptq, IdentityHessianGivesRtnExactly) {
  const MatrixF w = random_matrix(20, 48, 1);
  const LayerProblem p = LayerProblem::from_hessian(w, MatrixD::Identity(48, 48), 100);
  for (int group : {0, 16}) {
    for (bool act : {false, true}) {
      const GridSpec spec = GridSpec::with_group_size(3, group);
      // act-order with dynamic groups needs gptq_indexed
      const GptqOptions o = options(act, act, 8);
      const QuantizedLayer q = gptq(p, spec, o);
      const Grid rtn_grid = make_grid(w, spec);
      EXPECT_EQ(mismatches(q.codes, quantize(w, rtn_grid)), 0) << group << " " << act;
      // Same Ŵ; the two numbers come from different evaluations (GPTQ's own errors vs H).
      EXPECT_NEAR(q.report.loss, q.report.loss_rtn, 1e-6 * q.report.loss_rtn);
      EXPECT_NEAR(q.report.loss, p.loss(q.dequantized()), 1e-6 * q.report.loss);
    }
  }
}

TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const LayerProblem p = correlated_problem(32, 64, 2);
  for (int bits : {3, 4}) {
    for (int group : {0, 16}) {
      const QuantizedLayer q = gptq(p, GridSpec::with_group_size(bits, group));
      EXPECT_LT(q.report.loss, 0.8 * q.report.loss_rtn) << bits << " bits, group " << group;
    }
  }
}

struct ReferenceCase {
  int bits;
  int group;
  bool symmetric;
  bool act_order;
  bool static_groups;
  Index block;
  ScaleSearch search;
};

TEST(Gptq, MatchesPlainDoubleReference) {
  const ReferenceCase cases[] = {
      {4, 0, false, false, false, 16, ScaleSearch::kMinMax},
      {3, 0, true, true, false, 7, ScaleSearch::kMinMax},
      {4, 16, false, false, false, 16, ScaleSearch::kMinMax},  // groups aligned with blocks
      {4, 12, false, false, false, 16, ScaleSearch::kMinMax},  // group starts inside a block
      {2, 16, true, false, true, 32, ScaleSearch::kMinMax},
      {4, 16, false, true, true, 16, ScaleSearch::kMse},
      {3, 0, false, false, false, 64, ScaleSearch::kMse},
  };
  const LayerProblem p = correlated_problem(24, 48, 3);
  for (const ReferenceCase& c : cases) {
    GridSpec spec = GridSpec::with_group_size(c.bits, c.group, c.symmetric);
    spec.search = c.search;
    const GptqOptions o = options(c.act_order, c.static_groups, c.block);
    const QuantizedLayer q = gptq(p, spec, o);
    const ReferenceResult ref = reference_gptq(p, spec, o);
    const std::string what =
        fmt::format("bits {} group {} sym {} act {} static {} block {}", c.bits, c.group,
                    c.symmetric, c.act_order, c.static_groups, c.block);
    // float vs double can only flip a code whose value sits within float noise of a rounding tie;
    // none does on these problems.
    EXPECT_EQ(mismatches(q.codes, ref.codes), 0) << what;
    EXPECT_NEAR(q.report.loss, p.loss(ref.w_hat), 1e-5 * p.loss(ref.w_hat)) << what;
  }
}

TEST(Gptq, ActOrderWithDynamicGroupsFollowsReferenceIndex) {
  const LayerProblem p = correlated_problem(16, 48, 4);
  const GridSpec spec = GridSpec::with_group_size(4, 16);
  const GptqOptions o = options(true, false, 16);
  EXPECT_THROW(gptq(p, spec, o), InvalidArgument);
  const GptqIndexedLayer q = gptq_indexed(p, spec, o);
  const ReferenceResult ref = reference_gptq(p, spec, o);
  EXPECT_EQ(mismatches(q.codes, ref.codes), 0);
  EXPECT_LT((q.dequantized() - ref.w_hat).cwiseAbs().maxCoeff(), 1e-5f);
  // g_idx: processed position k is in group k / G; the permutation sorts diag(H) descending.
  const VectorD d = p.hessian_diagonal();
  for (size_t k = 0; k + 1 < q.permutation.size(); ++k)
    EXPECT_GE(d[q.permutation[k]], d[q.permutation[k + 1]]);
  for (size_t k = 0; k < q.permutation.size(); ++k)
    EXPECT_EQ(q.group_index[static_cast<size_t>(q.permutation[k])], static_cast<int>(k / 16));
  EXPECT_NEAR(q.report.loss, p.loss(ref.w_hat), 1e-5 * q.report.loss);
  EXPECT_LT(q.report.loss, q.report.loss_rtn);
}

TEST(Gptq, ActOrderCodesComeBackInOriginalOrder) {
  // Act-order on a problem equals plain GPTQ on the problem with columns pre-permuted by
  // descending H_jj, codes then un-permuted.
  const LayerProblem p = correlated_problem(16, 40, 5);
  const GridSpec spec = GridSpec::with_group_size(3, 0);
  const GptqOptions act = options(true, false, 8);
  const QuantizedLayer q = gptq(p, spec, act);
  const VectorD d = p.hessian_diagonal();
  std::vector<Index> perm(40);
  std::iota(perm.begin(), perm.end(), Index{0});
  std::stable_sort(perm.begin(), perm.end(), [&](Index a, Index b) { return d[a] > d[b]; });
  ASSERT_NE(perm.front(), 0);  // the test needs a real permutation
  MatrixF wp(16, 40);
  MatrixD hp(40, 40);
  for (Index a = 0; a < 40; ++a) {
    wp.col(a) = p.weights().col(perm[a]);
    for (Index b = 0; b < 40; ++b) hp(a, b) = p.hessian()(perm[a], perm[b]);
  }
  const LayerProblem permuted = LayerProblem::from_hessian(wp, hp, p.tokens());
  GptqOptions plain = act;
  plain.act_order = false;
  const QuantizedLayer qp = gptq(permuted, spec, plain);
  for (Index a = 0; a < 40; ++a)
    EXPECT_TRUE((q.codes.col(perm[a]).array() == qp.codes.col(a).array()).all()) << a;
  EXPECT_NEAR(q.report.loss, qp.report.loss, 1e-9 * qp.report.loss);
}

TEST(Gptq, SingularHessianWithDeadInputs) {
  // 12 tokens for 32 inputs (rank 12), and two inputs that never fire.
  MatrixF x = random_matrix(12, 32, 6);
  x.col(3).setZero();
  x.col(20).setZero();
  LayerProblem p(random_matrix(8, 32, 7));
  p.add_batch(x);
  const QuantizedLayer q = gptq(p, GridSpec::with_group_size(4, 0));
  const MatrixF w_hat = q.dequantized();
  EXPECT_TRUE(w_hat.allFinite());
  EXPECT_TRUE((w_hat.col(3).array() == 0.0f).all());
  EXPECT_TRUE((w_hat.col(20).array() == 0.0f).all());
  EXPECT_LE(q.report.loss, q.report.loss_rtn);
  ASSERT_FALSE(q.report.notes.empty());
  EXPECT_NE(q.report.notes.back().find("2 dead inputs"), std::string::npos);
}

TEST(Gptq, IndefiniteHessianRaisesDampingThenFails) {
  // diag mean 1, eigenvalues 4 and −2 in the first 2×2 block: damping 0.01, 0.1 and 1 fail, 10
  // works.
  MatrixD h = MatrixD::Identity(8, 8);
  h(0, 1) = h(1, 0) = 3.0;
  const LayerProblem p = LayerProblem::from_hessian(random_matrix(4, 8, 8), h, 10);
  const QuantizedLayer q = gptq(p, GridSpec::with_group_size(4, 0));
  ASSERT_FALSE(q.report.notes.empty());
  EXPECT_NE(q.report.notes.front().find("3 retries"), std::string::npos) << q.report.notes.front();
  GptqOptions few;
  few.max_damping_retries = 2;
  EXPECT_THROW(gptq(p, GridSpec::with_group_size(4, 0), few), NumericalError);
}

TEST(Gptq, AsymmetricTargetUsesTheQuantizedInputsHessian) {
  // The reference's sequential convention: GPTQ sees H = X̃ᵀX̃ only; the report still measures the
  // loss against the float target.
  const MatrixF xf = correlated_inputs(128, 32, 30);
  const MatrixF xq = xf + random_matrix(128, 32, 31, 0.05);
  const MatrixF w = random_matrix(12, 32, 32, 0.1);
  LayerProblem target(w);
  target.add_batch(xq, xf);
  LayerProblem plain(w);
  plain.add_batch(xq);
  const GridSpec spec = GridSpec::with_group_size(3, 8);
  const QuantizedLayer a = gptq(target, spec), b = gptq(plain, spec);
  EXPECT_EQ(mismatches(a.codes, b.codes), 0);
  EXPECT_NEAR(a.report.loss, target.loss(a.dequantized()), 1e-9 * a.report.loss);
  EXPECT_GT(a.report.loss, b.report.loss);  // the input mismatch adds to the loss
}

TEST(Gptq, DeterministicAcrossThreadCounts) {
  const LayerProblem p = correlated_problem(200, 64, 9);  // more rows than one chunk
  const GridSpec spec = GridSpec::with_group_size(4, 16);
  GptqOptions o;
  o.block = 32;
  o.threads = 1;
  const QuantizedLayer one = gptq(p, spec, o);
  for (int threads : {2, 3}) {
    o.threads = threads;
    const QuantizedLayer many = gptq(p, spec, o);
    EXPECT_EQ(mismatches(one.codes, many.codes), 0) << threads;
    EXPECT_EQ(one.report.loss, many.report.loss);
    EXPECT_TRUE((one.grid.scales.array() == many.grid.scales.array()).all());
  }
}

TEST(Gptq, ProgressAndCancel) {
  const LayerProblem p = correlated_problem(200, 32, 10);
  int calls = 0;
  const QuantizedLayer q = gptq(p, GridSpec::with_group_size(4, 0), {}, [&](double f, auto) {
    EXPECT_GT(f, 0.0);
    EXPECT_LE(f, 1.0);
    ++calls;
    return true;
  });
  EXPECT_GT(calls, 0);
  EXPECT_THROW(gptq(p, GridSpec::with_group_size(4, 0), {}, [](double, auto) { return false; }),
               Cancelled);
}

TEST(Gptq, OptionsValidate) {
  GptqOptions o;
  EXPECT_NO_THROW(o.validate());
  o.block = 0;
  EXPECT_THROW(o.validate(), InvalidArgument);
  o = {};
  o.damp = -1;
  EXPECT_THROW(o.validate(), InvalidArgument);
  LayerProblem empty(random_matrix(2, 4, 11));
  EXPECT_THROW(gptq(empty, GridSpec::with_group_size(4, 0)), InvalidArgument);
}

TEST(Gptq, RoundLayerMapsParams) {
  const LayerProblem p = correlated_problem(16, 32, 12);
  RoundLayerOptions r;
  r.method = parse_method("gptq");
  r.grid = GridSpec::with_group_size(4, 8);
  r.params = {{"act-order", ""}, {"static-groups", ""}, {"damp", "0.05"}, {"block", "8"}};
  GptqOptions o;
  o.act_order = o.static_groups = true;
  o.damp = 0.05;
  o.block = 8;
  const QuantizedLayer a = round_layer(p, r);
  const QuantizedLayer b = gptq(p, r.grid, o);
  EXPECT_EQ(mismatches(a.codes, b.codes), 0);
  EXPECT_EQ(a.report.method, "gptq");
  r.params["lambda"] = "1";
  EXPECT_THROW(round_layer(p, r), InvalidArgument);
}

// ---- a real layer ------------------------------------------------------------------------------

std::string data_dir() {
  if (const char* env = std::getenv("QROUND_DATA_DIR")) return env;
  return QROUND_DEFAULT_DATA_DIR;
}

// Minimal .npy reader for little-endian float32 C-order 2-D arrays (test-only).
bool load_npy_f32(const std::string& path, MatrixF& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) return false;
  std::uint32_t header_len = 0;
  if (magic[6] == 1) {
    std::uint16_t h16 = 0;
    f.read(reinterpret_cast<char*>(&h16), 2);
    header_len = h16;
  } else {
    f.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  f.read(header.data(), header_len);
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos)
    return false;
  const auto open = header.find('('), comma = header.find(',', open), close = header.find(')');
  const Index rows = std::stol(header.substr(open + 1, comma - open - 1));
  const Index cols = std::stol(header.substr(comma + 1, close - comma - 1));
  out.resize(rows, cols);
  f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(rows * cols * 4));
  return static_cast<bool>(f);
}

TEST(Gptq, RealLayerFourBitsGroup32BeatsRtn) {
  MatrixF w, x;
  const std::string dir = data_dir() + "/layers/";
  if (!load_npy_f32(dir + "layers.0.w2.W.npy", w) ||
      !load_npy_f32(dir + "layers.0.ffn_hidden.X.npy", x))
    GTEST_SKIP() << "real layers not found in " << dir << " (set QROUND_DATA_DIR)";
  LayerProblem p(w);
  p.add_batch(x);
  const GridSpec spec = GridSpec::with_group_size(4, 32);
  for (bool static_groups : {false, true}) {
    GptqOptions o;
    o.static_groups = static_groups;
    const QuantizedLayer q = gptq(p, spec, o);
    EXPECT_LT(q.report.loss, 0.9 * q.report.loss_rtn) << "static " << static_groups;
    const ReferenceResult ref = reference_gptq(p, spec, o);
    EXPECT_LE(mismatches(q.codes, ref.codes), w.size() / 1000) << "static " << static_groups;
    EXPECT_NEAR(q.report.loss, p.loss(ref.w_hat), 1e-3 * q.report.loss);
  }
  GptqOptions act;
  act.act_order = true;
  const GptqIndexedLayer qi = gptq_indexed(p, spec, act);
  EXPECT_LT(qi.report.loss, 0.9 * qi.report.loss_rtn);
}

}  // namespace
}  // namespace qround
