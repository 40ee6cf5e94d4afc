// qgemm kernels: every ISA this build and CPU can run, bit-exact int32 accumulators against the
// naive reference (odd shapes, extreme values, guard bands), f32 outputs within ε·√K-type bounds
// of double references, thread-count independence; ISA dispatch; the activation quantizer.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "qround/error.hpp"
#include "qround/isa.hpp"
#include "qround/packed.hpp"
#include "qround/qgemm.hpp"
#include "qround/qgemm_ref.hpp"

namespace qround {
namespace {

using testing_util::make_test_grid;
using testing_util::random_codes;

constexpr float kEps = std::numeric_limits<float>::epsilon() / 2;  // unit roundoff
constexpr std::int32_t kGuardI = 0x5A5A5A5A;
const float kGuardF = -12345.5f;

struct Config {
  int bits;
  bool symmetric;
  Index group;  // 0 = per row
  Container container;
};

std::string config_name(const Config& c) {
  return "w" + std::to_string(c.bits) + (c.symmetric ? "s" : "a") + "_g" + std::to_string(c.group) +
         "_" + to_string(c.container);
}

const Config kConfigs[] = {
    {8, true, 0, Container::kInt8},   {8, true, 32, Container::kInt8},
    {7, false, 64, Container::kInt8}, {4, true, 0, Container::kInt4},
    {4, true, 32, Container::kInt4},  {4, false, 128, Container::kInt4},
    {4, false, 64, Container::kInt4}, {3, true, 0, Container::kInt8},
};

MatrixF random_activations(Index tokens, Index cols, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixF x(tokens, cols);
  for (Index t = 0; t < tokens; ++t)
    for (Index c = 0; c < cols; ++c) x(t, c) = n(rng) * (c % 7 == 0 ? 5.0f : 1.0f);
  return x;
}

// Runs the accumulator kernel into a guarded buffer and compares with the int64 reference.
void expect_exact_accumulators(const MatrixI8& codes, const Grid& grid, Container container,
                               const QuantizedActivations& xq, const std::string& what) {
  const PackedMatrix packed(codes, grid, PackOptions{container});
  const Index tokens = xq.codes.rows(), width = codes.rows() * grid.groups();
  const Index ld = width + 5;
  std::vector<std::int32_t> buf(static_cast<std::size_t>((tokens + 2) * ld), kGuardI);
  qgemm_accumulators_into(packed, xq, buf.data() + ld, ld);
  const RowMatrix<std::int64_t> ref = ref::accumulators(codes, grid, xq.codes);
  for (Index t = 0; t < tokens + 2; ++t)
    for (Index c = 0; c < ld; ++c) {
      const std::int32_t got = buf[static_cast<std::size_t>(t * ld + c)];
      const bool inside = t >= 1 && t <= tokens && c < width;
      if (inside) {
        ASSERT_EQ(got, ref(t - 1, c)) << what << " token " << t - 1 << " column " << c;
      } else {
        ASSERT_EQ(got, kGuardI) << what << ": guard band written at " << t << ", " << c;
      }
    }
}

// f32 output in a guarded buffer vs the double reference: the only error is the epilogue's
// rounding (acc → f32, fma over groups, times the token scale).
void expect_close_outputs(const MatrixI8& codes, const Grid& grid, Container container,
                          const MatrixF& x, const std::string& what) {
  const PackedMatrix packed(codes, grid, PackOptions{container});
  const Index tokens = x.rows(), rows = codes.rows(), ldy = rows + 3;
  std::vector<float> buf(static_cast<std::size_t>((tokens + 2) * ldy), kGuardF);
  qgemm_into(packed, x, buf.data() + ldy, ldy);
  const QuantizedActivations xq = quantize_activations(x);
  const MatrixD ref = ref::qgemm(codes, grid, xq);
  const RowMatrix<std::int64_t> acc = ref::accumulators(codes, grid, xq.codes);
  const Index groups = grid.groups();
  for (Index t = 0; t < tokens + 2; ++t)
    for (Index r = 0; r < ldy; ++r) {
      const float got = buf[static_cast<std::size_t>(t * ldy + r)];
      if (t < 1 || t > tokens || r >= rows) {
        ASSERT_EQ(got, kGuardF) << what << ": guard band written at " << t << ", " << r;
        continue;
      }
      double magnitude = 0.0;
      for (Index g = 0; g < groups; ++g)
        magnitude += std::fabs(grid.scales(r, g) * static_cast<double>(acc(t - 1, r * groups + g)));
      magnitude *= xq.scales[t - 1];
      const double bound = 2.0 * kEps * static_cast<double>(groups + 3) * magnitude + 1e-30;
      ASSERT_NEAR(got, ref(t - 1, r), bound) << what << " token " << t - 1 << " row " << r;
    }
}

class QgemmIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { override_ = std::make_unique<ScopedIsaOverride>(GetParam()); }
  void TearDown() override { override_.reset(); }
  std::unique_ptr<ScopedIsaOverride> override_;
};

TEST_P(QgemmIsa, AccumulatorsBitExactOverShapes) {
  std::mt19937 rng(42);
  const std::vector<Index> sizes = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,  12,  13,
                                    14, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 255, 257};
  for (const Config& cfg : kConfigs) {
    // Sweep rows at a fixed odd width, and widths at a fixed odd height; M = 1 and M > 1.
    for (Index rows : sizes)
      for (Index tokens : {1, 4}) {
        const Index cols = cfg.group > 0 ? 2 * cfg.group + 13 : 65;
        const Grid g = make_test_grid(rows, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
        const auto xq = quantize_activations(random_activations(tokens, cols, rng));
        expect_exact_accumulators(random_codes(g, rng), g, cfg.container, xq,
                                  config_name(cfg) + " rows " + std::to_string(rows));
      }
    for (Index cols : sizes) {
      if (cfg.group > 0 && cols > cfg.group && cols % 8 != 0 && cfg.group % 8 != 0) continue;
      for (Index tokens : {1, 5}) {
        const Grid g = make_test_grid(33, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
        const auto xq = quantize_activations(random_activations(tokens, cols, rng));
        expect_exact_accumulators(random_codes(g, rng), g, cfg.container, xq,
                                  config_name(cfg) + " cols " + std::to_string(cols));
      }
    }
  }
}

TEST_P(QgemmIsa, AccumulatorsBitExactAtExtremes) {
  std::mt19937 rng(9);
  for (const Config& cfg : kConfigs) {
    for (int pattern = 0; pattern < 4; ++pattern) {
      const Index rows = 37, cols = 515, tokens = 7;
      const Grid g = make_test_grid(rows, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
      MatrixI8 codes(rows, cols);
      QuantizedActivations xq;
      xq.codes.resize(tokens, cols);
      xq.scales = VectorF::Ones(tokens);
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < cols; ++c) {
          const bool odd = ((r + c) & 1) != 0;
          const int lo = g.qmin(), hi = g.qmax();
          codes(r, c) = static_cast<std::int8_t>(pattern == 0   ? hi
                                                 : pattern == 1 ? lo
                                                 : pattern == 2 ? (odd ? lo : hi)
                                                                : g.zeros(r, c / g.group_size));
        }
      for (Index t = 0; t < tokens; ++t)
        for (Index c = 0; c < cols; ++c) {
          const bool odd = ((t + c) & 1) != 0;
          xq.codes(t, c) = static_cast<std::int8_t>(pattern == 0   ? 127
                                                    : pattern == 1 ? -127
                                                    : pattern == 2 ? (odd ? -127 : 127)
                                                                   : (t % 2 ? 127 : 0));
        }
      expect_exact_accumulators(codes, g, cfg.container, xq,
                                config_name(cfg) + " pattern " + std::to_string(pattern));
    }
  }
}

TEST_P(QgemmIsa, LongRowsAcrossKChunks) {
  // More than 128 k-steps and several token tiles: kernels that block K carry their accumulators
  // (mid-group too) from chunk to chunk.
  std::mt19937 rng(21);
  for (const Config& cfg : kConfigs)
    for (Index cols : {1031, 2053}) {
      const Grid g = make_test_grid(33, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
      const MatrixI8 codes = random_codes(g, rng);
      const MatrixF x = random_activations(9, cols, rng);
      expect_exact_accumulators(codes, g, cfg.container, quantize_activations(x),
                                config_name(cfg) + " long " + std::to_string(cols));
      expect_close_outputs(codes, g, cfg.container, x, config_name(cfg));
    }
}

TEST_P(QgemmIsa, FloatOutputsWithinBoundAndGuardsIntact) {
  std::mt19937 rng(5);
  for (const Config& cfg : kConfigs)
    for (Index rows : {1, 17, 64, 65})
      for (Index tokens : {1, 3, 8}) {
        const Index cols = cfg.group > 0 ? 3 * cfg.group + 8 : 257;
        const Grid g = make_test_grid(rows, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
        MatrixF x = random_activations(tokens, cols, rng);
        if (tokens == 3) x.row(1).setZero();  // a zero token: scale 0, output exactly 0
        expect_close_outputs(random_codes(g, rng), g, cfg.container, x, config_name(cfg));
      }
}

TEST_P(QgemmIsa, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(8);
  const Grid g = make_test_grid(300, 256, 4, true, 32, rng);
  const PackedMatrix p(random_codes(g, rng), g);
  const MatrixF x = random_activations(300, 256, rng);  // > 256 tokens: tokens are split too
  const MatrixF one = qgemm(p, x, QgemmOptions{1});
  const MatrixF two = qgemm(p, x, QgemmOptions{2});
  const MatrixF three = qgemm(p, x, QgemmOptions{3});
  EXPECT_TRUE(one == two);
  EXPECT_TRUE(one == three);
  EXPECT_TRUE(qgemm_float(p, x, QgemmOptions{1}) == qgemm_float(p, x, QgemmOptions{2}));
}

std::string isa_name(const ::testing::TestParamInfo<Isa>& info) { return to_string(info.param); }

INSTANTIATE_TEST_SUITE_P(Supported, QgemmIsa, ::testing::ValuesIn(supported_isas()), isa_name);

TEST(QgemmFloat, MatchesDoubleReferenceWithinEpsSqrtK) {
  std::mt19937 rng(17);
  for (const Config& cfg : kConfigs)
    for (bool nupes : {false, true}) {
      const Index rows = 21, cols = cfg.group > 0 ? 2 * cfg.group + 8 : 131, tokens = 6;
      Grid g = make_test_grid(rows, cols, cfg.bits, cfg.symmetric, cfg.group, rng);
      if (nupes) {
        g.exponent.resize(rows);
        for (Index r = 0; r < rows; ++r) g.exponent[r] = 0.6f + 0.05f * static_cast<float>(r % 9);
      }
      const MatrixI8 codes = random_codes(g, rng);
      const PackedMatrix p(codes, g, PackOptions{cfg.container});
      const MatrixF x = random_activations(tokens, cols, rng);
      const MatrixF y = qgemm_float(p, x);
      const MatrixD ref = ref::qgemm_float(codes, g, x);
      const MatrixD w = dequantize(codes, g).cast<double>();
      const MatrixD magnitude = x.cast<double>().cwiseAbs() * w.cwiseAbs().transpose();
      // NUPES levels are computed as s^(1/a)·|d|^(1/a) instead of |s·d|^(1/a): a few more ulps.
      const double c = nupes ? 8.0 : 2.0;
      for (Index t = 0; t < tokens; ++t)
        for (Index r = 0; r < rows; ++r)
          ASSERT_NEAR(y(t, r), ref(t, r), c * kEps * std::sqrt(double(cols)) * magnitude(t, r))
              << config_name(cfg) << (nupes ? " nupes" : "") << " at " << t << ", " << r;
      if (nupes) {
        EXPECT_THROW(qgemm(p, x), InvalidArgument);
      }
    }
}

TEST(Qgemm, RejectsBadArguments) {
  std::mt19937 rng(1);
  const Grid g = make_test_grid(8, 64, 4, true, 32, rng);
  const PackedMatrix p(random_codes(g, rng), g);
  EXPECT_THROW(qgemm(p, MatrixF::Zero(2, 63)), InvalidArgument);
  std::vector<float> y(16);
  EXPECT_THROW(qgemm_into(p, MatrixF::Zero(2, 64), y.data(), 7), InvalidArgument);
  EXPECT_THROW(qgemm(p, MatrixF::Zero(2, 64), QgemmOptions{-1}), InvalidArgument);
  MatrixF nan = MatrixF::Zero(2, 64);
  nan(1, 5) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(qgemm(p, nan), InvalidArgument);
  QuantizedActivations bad = quantize_activations(MatrixF::Ones(2, 64));
  bad.codes(0, 0) = -128;
  EXPECT_THROW(qgemm_accumulators(p, bad), InvalidArgument);
  EXPECT_EQ(qgemm(p, MatrixF::Zero(0, 64)).rows(), 0);
}

TEST(ActivationQuantizer, SymmetricPerTokenInt8) {
  MatrixF x(3, 5);
  x << 1.0f, -2.0f, 0.5f, 2.0f, -0.0f,  //
      0, 0, 0, 0, 0,                    //
      -3.0f, 1.5f, 0.01f, -1.49f, 2.99f;
  const QuantizedActivations q = quantize_activations(x);
  EXPECT_FLOAT_EQ(q.scales[0], 2.0f / 127.0f);
  EXPECT_EQ(q.codes(0, 1), -127);
  EXPECT_EQ(q.codes(0, 3), 127);
  EXPECT_EQ(q.codes(0, 2), std::round(0.5f / (2.0f / 127.0f)));  // 31.75 → 32
  EXPECT_EQ(q.scales[1], 0.0f);
  EXPECT_TRUE(q.codes.row(1).isZero());
  EXPECT_EQ(q.codes(2, 0), -127);
  EXPECT_EQ(q.codes.minCoeff(), -127);
  const MatrixF f = fake_quant_activations(x);
  for (Index t = 0; t < 3; ++t)
    for (Index c = 0; c < 5; ++c)
      EXPECT_EQ(f(t, c), q.scales[t] * static_cast<float>(q.codes(t, c)));
}

TEST(Dispatch, ListsAndOverrides) {
  const auto compiled = compiled_isas();
  const auto supported = supported_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(compiled.front(), Isa::kScalar);
  EXPECT_EQ(supported.front(), Isa::kScalar);
  EXPECT_LE(supported.size(), compiled.size());
  for (Isa isa : supported) {
    EXPECT_EQ(parse_isa(to_string(isa)), isa);
    ScopedIsaOverride outer(isa);
    EXPECT_EQ(active_isa(), isa);
    {
      ScopedIsaOverride inner(Isa::kScalar);
      EXPECT_EQ(active_isa(), Isa::kScalar);
    }
    EXPECT_EQ(active_isa(), isa);
  }
  EXPECT_THROW(parse_isa("sse9"), InvalidArgument);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512Vnni})
    if (!isa_supported(isa)) {
      EXPECT_THROW(ScopedIsaOverride{isa}, InvalidArgument);
    }
  // The automatic / environment choice is always something this machine runs.
  EXPECT_TRUE(isa_supported(active_isa()));
}

}  // namespace
}  // namespace qround
