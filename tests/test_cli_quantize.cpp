// `qround quantize` end to end: outputs, the min-max RTN reference on real layers, exit codes, and
// nothing half-written on failure.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "cli_runner.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/scale_search.hpp"
#include "qround/synthetic.hpp"

namespace qround {
namespace {

using testing::run_cli;
using testing::TempDir;
namespace fs = std::filesystem;

struct LayerFiles {
  std::string weights, inputs;
};

LayerFiles write_synthetic(const TempDir& dir, Index out = 24, Index in = 40) {
  SyntheticLayerOptions o;
  o.out = out;
  o.in = in;
  o.tokens = 300;
  const SyntheticLayer layer = make_synthetic_layer(o);
  LayerFiles f{dir.file("W.npy"), dir.file("X.npy")};
  io::save_npy(f.weights, layer.weights);
  io::save_npy(f.inputs, layer.inputs);
  return f;
}

// Plain min-max asymmetric RTN for one row group, in double, as the issue states it.
void reference_group(const MatrixF& w, Index r, Index c0, Index n, int bits, float* scale,
                     int* zero, std::vector<int>* codes) {
  double lo = 0.0, hi = 0.0;
  for (Index c = c0; c < c0 + n; ++c) {
    lo = std::min(lo, double(w(r, c)));
    hi = std::max(hi, double(w(r, c)));
  }
  if (lo == 0.0 && hi == 0.0) lo = -1.0, hi = 1.0;
  const double maxq = std::pow(2.0, bits) - 1.0;
  const float s = float((hi - lo) / maxq);
  const double z = std::round(-lo / double(s));
  *scale = s;
  *zero = int(z);
  codes->clear();
  for (Index c = c0; c < c0 + n; ++c) {
    const double q = std::round(double(w(r, c)) / double(s)) + z;
    codes->push_back(int(std::min(std::max(q, 0.0), maxq)));
  }
}

TEST(CliQuantize, NearestReproducesTheMinMaxReferenceOnRealLayers) {
  const fs::path layers = testing::layers_dir();
  if (!fs::exists(layers / "layers.0.w1.W.npy"))
    GTEST_SKIP() << "real layers not found in " << layers << " (set QROUND_DATA_DIR)";
  TempDir dir;
  struct Case {
    const char* weights;
    const char* inputs;
    int bits, group;
  };
  for (const Case& c : {Case{"layers.0.w1.W.npy", "layers.0.ffn_in.X.npy", 4, 32},
                        Case{"layers.1.w2.W.npy", "layers.1.ffn_hidden.X.npy", 3, 0},
                        Case{"layers.0.wq.W.npy", "layers.0.attn_in.X.npy", 2, 64}}) {
    const std::string out = dir.file(std::string("out-") + c.weights);
    const auto r = run_cli(fmt::format("quantize --weights {} --inputs {} --bits {} "
                                       "--group-size {} --out {} --quiet",
                                       (layers / c.weights).string(),
                                       (layers / c.inputs).string(), c.bits, c.group, out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const MatrixF w = io::load_npy_f32((layers / c.weights).string());
    const MatrixI8 codes = io::load_npy_i8(out + "/codes.npy");
    const MatrixF scales = io::load_npy_f32(out + "/scales.npy");
    const MatrixI32 zeros = io::load_npy_i32(out + "/zeros.npy");
    const MatrixF deq = io::load_npy_f32(out + "/dequant.npy");
    const Index g = c.group == 0 ? w.cols() : c.group;
    const Index groups = (w.cols() + g - 1) / g;
    ASSERT_EQ(codes.rows(), w.rows());
    ASSERT_EQ(codes.cols(), w.cols());
    ASSERT_EQ(scales.cols(), groups);
    Index mismatches = 0, ties = 0;
    std::vector<int> ref;
    for (Index row = 0; row < w.rows(); ++row)
      for (Index k = 0; k < groups; ++k) {
        float s;
        int z;
        const Index n = std::min(g, w.cols() - k * g);
        reference_group(w, row, k * g, n, c.bits, &s, &z, &ref);
        EXPECT_EQ(scales(row, k), s);
        EXPECT_EQ(zeros(row, k), z);
        for (Index j = 0; j < n; ++j) {
          const Index col = k * g + j;
          if (codes(row, col) == ref[size_t(j)]) continue;
          // Only an exact tie between two levels may round differently.
          const double t = double(w(row, col)) / double(s);
          if (std::fabs(std::fabs(t - std::floor(t)) - 0.5) < 1e-6) ++ties;
          else ++mismatches;
        }
        for (Index j = 0; j < n; ++j) {
          const Index col = k * g + j;
          EXPECT_FLOAT_EQ(deq(row, col), s * float(codes(row, col) - z));
        }
      }
    EXPECT_EQ(mismatches, 0) << c.weights;
    EXPECT_LE(ties, 2) << c.weights;
    const json::Value report = json::parse(testing::slurp(out + "/report.json"));
    EXPECT_EQ(report.at("method").as_string(), "nearest");
    EXPECT_EQ(report.at("bits").as_int(), c.bits);
    EXPECT_EQ(report.at("group_size").as_int(), c.group);
    EXPECT_FALSE(report.at("symmetric").as_bool());
    EXPECT_EQ(report.at("scale_search").as_string(), "minmax");
    EXPECT_GT(report.at("loss").as_number(), 0.0);
    EXPECT_EQ(report.at("loss").as_number(), report.at("loss_rtn").as_number());
    EXPECT_GT(report.at("relative_loss").as_number(), 0.0);
    EXPECT_LT(report.at("relative_loss").as_number(), 1.0);
    for (const char* key : {"relative_loss_rtn", "seconds", "iterations"})
      EXPECT_NE(report.find(key), nullptr) << key;
  }
}

TEST(CliQuantize, SeveralInputBatchesEqualOneConcatenatedBatch) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  const MatrixF x = io::load_npy_f32(f.inputs);
  io::save_npy(dir.file("X1.npy"), MatrixF(x.topRows(100)));
  io::save_npy(dir.file("X2.npy"), MatrixF(x.bottomRows(x.rows() - 100)));
  auto one = run_cli(fmt::format("quantize --weights {} --inputs {} --bits 3 --out {}",
                                 f.weights, f.inputs, dir.file("one")));
  auto two = run_cli(fmt::format("quantize --weights {} --inputs {} --inputs {} --bits 3 --out {}",
                                 f.weights, dir.file("X1.npy"), dir.file("X2.npy"),
                                 dir.file("two")));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(two.exit_code, 0) << two.err;
  const json::Value a = json::parse(testing::slurp(dir.file("one/report.json")));
  const json::Value b = json::parse(testing::slurp(dir.file("two/report.json")));
  EXPECT_EQ(b.at("tokens").as_int(), x.rows());
  EXPECT_NEAR(a.at("loss").as_number(), b.at("loss").as_number(),
              1e-9 * a.at("loss").as_number());
}

TEST(CliQuantize, UsageErrorsExitTwoAndWriteNothing) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  const std::string out = dir.file("out");
  const std::string base = fmt::format("quantize --weights {} --inputs {} --out {}", f.weights,
                                       f.inputs, out);
  for (const std::string& extra :
       {std::string("--bits 9"), std::string("--bits 1"), std::string("--method magic"),
        std::string("--scale-search best"), std::string("--group-size -3"),
        std::string("--symmetric yes"), std::string("--iterations x"), std::string("--lambda 0.5"),
        std::string("--method adaround --lamda 0.5"), std::string("--method gptq --damp -1"),
        std::string("--method adaround --batch 0"), std::string("--out="),
        std::string("--weights="), std::string("--threads 4097"), std::string("--threads -1")}) {
    const auto r = run_cli(base + " " + extra);
    EXPECT_EQ(r.exit_code, 2) << extra << ": " << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  EXPECT_EQ(run_cli(fmt::format("quantize --inputs {} --out {}", f.inputs, out)).exit_code, 2);
  EXPECT_EQ(run_cli(fmt::format("quantize --weights {} --out {}", f.weights, out)).exit_code, 2);
  EXPECT_EQ(run_cli(fmt::format("quantize --weights {} --inputs {}", f.weights, f.inputs))
                .exit_code,
            2);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"W.npy", "X.npy"}));
}

TEST(CliQuantize, RuntimeErrorsExitOneWithOneLineAndWriteNothing) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  // A truncated copy of the inputs, and inputs of the wrong width.
  const std::string bytes = testing::slurp(f.inputs);
  {
    std::ofstream t(dir.file("trunc.npy"), std::ios::binary);
    t.write(bytes.data(), std::streamsize(bytes.size() - 100));
  }
  io::save_npy(dir.file("narrow.npy"), MatrixF::Ones(10, 7));
  MatrixF nan_w = io::load_npy_f32(f.weights);
  nan_w(3, 5) = std::nanf("");
  io::save_npy(dir.file("nan.npy"), nan_w);
  const std::string out = dir.file("out");
  for (const auto& [weights, inputs, expect] :
       {std::tuple<std::string, std::string, std::string>{dir.file("missing.npy"), f.inputs,
                                                          "missing.npy"},
        {f.weights, dir.file("trunc.npy"), "trunc.npy"},
        {f.weights, dir.file("narrow.npy"), "10×7"},
        {dir.file("nan.npy"), f.inputs, "non-finite"}}) {
    const auto r = run_cli(
        fmt::format("quantize --weights {} --inputs {} --out {}", weights, inputs, out));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
  EXPECT_EQ(dir.entries(),
            (std::vector<std::string>{"W.npy", "X.npy", "nan.npy", "narrow.npy", "trunc.npy"}));
}

// A 128-byte .npy declaring `shape` with no data (numpy's version 1.0 layout).
void write_empty_npy(const std::string& path, const std::string& shape) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  const std::string pre = std::string("\x93NUMPY\x01\x00", 8) +
                          static_cast<char>(header.size() & 0xff) +
                          static_cast<char>(header.size() >> 8);
  std::ofstream(path, std::ios::binary) << pre << header;
}

// Regression (issue 15): weights of shape (2^62, 0) made quantize spin forever.
TEST(CliQuantize, EmptyWeightsWithAHugeShapeAreRefused) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  const std::string out = dir.file("out");
  for (const char* shape : {"(4611686018427387904, 0)", "(0, 4611686018427387904)"}) {
    write_empty_npy(dir.file("hostile.npy"), shape);
    const auto r = run_cli(fmt::format("quantize --weights {} --inputs {} --out {}",
                                       dir.file("hostile.npy"), f.inputs, out));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(shape), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

// Regression (issue 15): a layer whose Hessian does not fit ended in "unexpected error:
// std::bad_alloc"; it is refused before allocating, naming the shape, the bytes and the limit.
TEST(CliQuantize, AHessianOverTheMemoryLimitIsRefused) {
  TempDir dir;
  const LayerFiles f{dir.file("W.npy"), dir.file("X.npy")};  // 1 × 1024: 8 MiB of Hessian
  io::save_npy(f.weights, testing::random_matrix(1, 1024, 1));
  io::save_npy(f.inputs, testing::random_matrix(16, 1024, 2));  // 64 KiB
  const std::string out = dir.file("out");
  const std::string base =
      fmt::format("quantize --weights {} --inputs {} --out {} --quiet", f.weights, f.inputs, out);
  for (const auto& [extra, env, source] : {std::tuple<std::string, std::string, std::string>{
                                               " --max-memory 1M", "", "--max-memory 1M"},
                                           {"", "QROUND_MAX_MEMORY=2M", "QROUND_MAX_MEMORY=2M"}}) {
    const auto r = run_cli(base + extra, env);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    for (const std::string& part : {std::string("1×1024"), std::string("8392704 bytes"), source})
      EXPECT_NE(r.err.find(part), std::string::npos) << part << " in: " << r.err;
    EXPECT_EQ(r.err.find("bad_alloc"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
  EXPECT_EQ(run_cli(base + " --max-memory lots").exit_code, 2);
  EXPECT_EQ(run_cli(base + " --max-memory 0").exit_code, 2);
  EXPECT_EQ(run_cli(base + " --max-memory 64M").exit_code, 0);
  EXPECT_TRUE(fs::exists(out));
}

// Regression (issue 15): --threads 4096 ended in libgomp's "Thread creation failed"; more threads
// than processors are clamped, with a note.
TEST(CliQuantize, TooManyThreadsAreClampedWithANote) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  const auto r =
      run_cli(fmt::format("quantize --weights {} --inputs {} --out {} --quiet --method "
                          "gptq --threads 4096",
                          f.weights, f.inputs, dir.file("out")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("--threads 4096 is more than the"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Thread creation failed"), std::string::npos) << r.err;
}

// Regression (issue 15): inputs of 1e37 exited 0 with a result written; now exit 1 naming the
// layer, whatever the method.
TEST(CliQuantize, InputsOverflowingTheStatisticsAreANumericalError) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  io::save_npy(dir.file("huge.npy"), MatrixF::Constant(16, 40, 1e37f));
  const std::string out = dir.file("out");
  for (const char* method : {"nearest", "gptq"}) {
    const auto r = run_cli(fmt::format("quantize --weights {} --inputs {} --out {} --method {}",
                                       f.weights, dir.file("huge.npy"), out, method));
    EXPECT_EQ(r.exit_code, 1) << method << ": " << r.err;
    EXPECT_NE(r.err.find("XᵀX overflows"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("layer " + f.weights), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(CliQuantize, AFailedRunLeavesAnEarlierResultUntouchedAndASuccessReplacesIt) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir);
  const std::string out = dir.file("out");
  ASSERT_EQ(run_cli(fmt::format("quantize --weights {} --inputs {} --bits 4 --out {}",
                                f.weights, f.inputs, out))
                .exit_code,
            0);
  const std::string before = testing::slurp(out + "/codes.npy");
  EXPECT_EQ(run_cli(fmt::format("quantize --weights {} --inputs {} --out {}", f.weights,
                                dir.file("nope.npy"), out))
                .exit_code,
            1);
  EXPECT_EQ(testing::slurp(out + "/codes.npy"), before);
  ASSERT_EQ(run_cli(fmt::format("quantize --weights {} --inputs {} --bits 2 --out {}",
                                f.weights, f.inputs, out))
                .exit_code,
            0);
  EXPECT_NE(testing::slurp(out + "/codes.npy"), before);
  EXPECT_EQ(json::parse(testing::slurp(out + "/report.json")).at("bits").as_int(), 2);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"W.npy", "X.npy", "out"}));
}

}  // namespace
}  // namespace qround

namespace qround {
namespace {

TEST(CliQuantizeFormat, WritesTheTypesBlocksAndCheckConfirmsTheLevels) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir, 8, 256);
  for (const char* type : {"q4_0", "q4_1", "q3_k", "q4_k", "q6_k"}) {
    SCOPED_TRACE(type);
    const std::string out = dir.file(std::string("out-") + type);
    const auto r = run_cli(fmt::format("quantize --weights {} --inputs {} --format {} --method gptq "
                                       "--quiet --out {}",
                                       f.weights, f.inputs, type, out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(fs::exists(out + "/layer.gguf"));
    // The GGUF tensor, read and dequantized by qround's own reader, is the simulated layer.
    const io::GgufFile g = io::read_gguf(out + "/layer.gguf");
    const io::GgufTensor& t = g.tensor("weight");
    EXPECT_EQ(to_string(t.type), std::string(type));
    const MatrixF engine = dequantize_ggml(t.type, t.data(), t.bytes(), 8, 256);
    const MatrixF simulated = io::load_npy_f32(out + "/dequant.npy");
    EXPECT_EQ(std::memcmp(engine.data(), simulated.data(), sizeof(float) * engine.size()), 0);
    EXPECT_EQ(g.get("general.quantization_version").get<std::uint32_t>(), 2u);
    const auto c = run_cli(fmt::format("check --weights {} --inputs {} --quantized {} --json",
                                       f.weights, f.inputs, out));
    EXPECT_EQ(c.exit_code, 0) << c.err;
    EXPECT_NE(c.out.find("\"gguf_levels_equal_simulated\": true"), std::string::npos) << c.out;
  }
}

TEST(CliQuantizeFormat, DisagreeingGridOptionsAreUsageErrors) {
  TempDir dir;
  const LayerFiles f = write_synthetic(dir, 4, 256);
  const std::string base = fmt::format("quantize --weights {} --inputs {} --out {}", f.weights,
                                       f.inputs, dir.file("out"));
  for (const std::string& extra :
       {std::string("--format q4_k --bits 3"), std::string("--format q4_0 --group-size 64"),
        std::string("--format q4_1 --symmetric"), std::string("--format q4_k --scale-search mse"),
        std::string("--format f16"), std::string("--format q9_9"),
        std::string("--format q4_0 --method nupes")}) {
    const auto r = run_cli(base + " " + extra);
    EXPECT_EQ(r.exit_code, 2) << extra << ": " << r.err;
    EXPECT_FALSE(r.err.empty()) << extra;
  }
  // Agreeing options are fine; a row length the format cannot block is a runtime error.
  EXPECT_EQ(run_cli(base + " --format q4_k --bits 4 --group-size 32 --quiet").exit_code, 0);
  const LayerFiles narrow = write_synthetic(dir, 4, 96);
  const auto r = run_cli(fmt::format("quantize --weights {} --inputs {} --format q4_k --out {}",
                                     narrow.weights, narrow.inputs, dir.file("narrow")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("256"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("narrow")));
}

}  // namespace
}  // namespace qround

namespace qround {
namespace {

TEST(CliQuantizeImatrix, ScaleSearchUsesTheImatrixEntry) {
  testing::TempDir dir;
  const LayerFiles f = write_synthetic(dir, 8, 256);
  const MatrixF w = io::load_npy_f32(f.weights);
  // An importance unlike the layer's own inputs: the first block dominates.
  VectorD sums = VectorD::Constant(256, 10.0);
  sums.head(32).setConstant(1.0e5);
  const io::Imatrix m = io::imatrix_from_statistics({"blk.0.w", "blk.1.w"}, {sums, sums}, {10, 10});
  const std::string imatrix = dir.file("imatrix.gguf");
  io::write_imatrix(imatrix, m, io::ImatrixForm::kGguf);
  const std::string out = dir.file("out");
  const auto r = testing::run_cli(fmt::format(
      "quantize --weights {} --inputs {} --format q4_0 --imatrix {} --imatrix-tensor blk.1.w "
      "--quiet --out {}",
      f.weights, f.inputs, imatrix, out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const MatrixF expected =
      fake_quant(w, make_grid(w, GridSpec::for_format(GgmlType::kQ4_0), m.importance("blk.1.w", 256)));
  const MatrixF got = io::load_npy_f32(out + "/dequant.npy");
  EXPECT_EQ(std::memcmp(expected.data(), got.data(), sizeof(float) * got.size()), 0);
  // Without the imatrix the layer's own diag(XᵀX) gives other scales.
  const auto plain = testing::run_cli(fmt::format(
      "quantize --weights {} --inputs {} --format q4_0 --quiet --out {}", f.weights, f.inputs,
      dir.file("plain")));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(io::load_npy_f32(dir.file("plain") + "/dequant.npy"), got);
}

TEST(CliQuantizeImatrix, AmbiguousAbsentOrMismatchedEntriesAreRefused) {
  testing::TempDir dir;
  const LayerFiles f = write_synthetic(dir, 8, 256);
  const VectorD sums = VectorD::Ones(256);
  const std::string two = dir.file("two.dat");
  io::Imatrix m = io::imatrix_from_statistics({"a", "b"}, {sums, sums}, {4, 4});
  m.chunk_size = 4;
  io::write_imatrix(two, m, io::ImatrixForm::kLegacy);
  const std::string base = fmt::format("quantize --weights {} --inputs {} --format q4_0 --quiet "
                                       "--out {} --imatrix {}",
                                       f.weights, f.inputs, dir.file("out"), two);
  auto r = testing::run_cli(base);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("choose one with --imatrix-tensor (a, b)"), std::string::npos) << r.err;
  r = testing::run_cli(base + " --imatrix-tensor c");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no entry 'c'"), std::string::npos) << r.err;
  const std::string narrow = dir.file("narrow.gguf");
  io::write_imatrix(narrow, io::imatrix_from_statistics({"a"}, {VectorD::Ones(64)}, {4}),
                    io::ImatrixForm::kGguf);
  r = testing::run_cli(fmt::format("quantize --weights {} --inputs {} --format q4_0 --quiet --out "
                                   "{} --imatrix {}",
                                   f.weights, f.inputs, dir.file("out"), narrow));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'a' has 64 columns"), std::string::npos) << r.err;
  r = testing::run_cli(fmt::format("quantize --weights {} --inputs {} --bits 4 --quiet --out {} "
                                   "--imatrix {}",
                                   f.weights, f.inputs, dir.file("out"), narrow));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--scale-search hessian"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

}  // namespace
}  // namespace qround
