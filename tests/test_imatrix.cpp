// llama.cpp imatrix files: golden bytes of both forms written plainly from the format facts
// (tools/imatrix/imatrix.cpp save_imatrix / save_imatrix_legacy), round trips, importance() against
// an explicit mean of x², hostile inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "qround/error.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/imatrix.hpp"
#include "qround/problem.hpp"
#include "qround/scale_search.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

using io::Imatrix;
using io::ImatrixForm;
using Bytes = std::vector<unsigned char>;

template <typename T>
void put(Bytes& b, T v) {
  unsigned char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  b.insert(b.end(), raw, raw + sizeof(T));
}
void put_str32(Bytes& b, const std::string& s) {  // legacy: i32 length
  put<std::int32_t>(b, static_cast<std::int32_t>(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}
void put_str64(Bytes& b, const std::string& s) {  // GGUF: u64 length
  put<std::uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}
void pad32(Bytes& b) {
  while (b.size() % 32) b.push_back(0);
}

// Legacy: "a" with ncall 2 and values {6, 8}, "b" with ncall 2 and value {2}; chunk count 3,
// dataset "cal.txt".
Bytes legacy_golden() {
  Bytes b;
  put<std::int32_t>(b, 2);
  put_str32(b, "a");
  put<std::int32_t>(b, 2);
  put<std::int32_t>(b, 2);
  put<float>(b, 6.0f);
  put<float>(b, 8.0f);
  put_str32(b, "b");
  put<std::int32_t>(b, 2);
  put<std::int32_t>(b, 1);
  put<float>(b, 2.0f);
  put<std::int32_t>(b, 3);
  put_str32(b, "cal.txt");
  return b;
}

Imatrix legacy_expected() {
  Imatrix m;
  m.form = ImatrixForm::kLegacy;
  m.entries = {{"a", {6.0f, 8.0f}, {2}}, {"b", {2.0f}, {2}}};
  m.datasets = {"cal.txt"};
  m.chunk_count = 3;
  return m;
}

// GGUF: one tensor "t" with sums {3, 5} over 4 tokens, chunk size 4, one chunk.
Bytes gguf_golden() {
  Bytes b;
  b.insert(b.end(), {'G', 'G', 'U', 'F'});
  put<std::uint32_t>(b, 3);
  put<std::int64_t>(b, 2);  // tensors
  put<std::int64_t>(b, 5);  // kv
  put_str64(b, "general.alignment");
  put<std::int32_t>(b, 4);  // u32
  put<std::uint32_t>(b, 32);
  put_str64(b, "general.type");
  put<std::int32_t>(b, 8);
  put_str64(b, "imatrix");
  put_str64(b, "imatrix.datasets");
  put<std::int32_t>(b, 9);
  put<std::int32_t>(b, 8);
  put<std::uint64_t>(b, 1);
  put_str64(b, "cal.txt");
  put_str64(b, "imatrix.chunk_count");
  put<std::int32_t>(b, 4);
  put<std::uint32_t>(b, 1);
  put_str64(b, "imatrix.chunk_size");
  put<std::int32_t>(b, 4);
  put<std::uint32_t>(b, 4);
  put_str64(b, "t.in_sum2");  // ggml_n_dims drops the trailing 1
  put<std::uint32_t>(b, 1);
  put<std::int64_t>(b, 2);
  put<std::int32_t>(b, 0);  // F32
  put<std::uint64_t>(b, 0);
  put_str64(b, "t.counts");
  put<std::uint32_t>(b, 1);
  put<std::int64_t>(b, 1);
  put<std::int32_t>(b, 0);
  put<std::uint64_t>(b, 32);
  pad32(b);
  put<float>(b, 3.0f);
  put<float>(b, 5.0f);
  pad32(b);
  put<float>(b, 4.0f);
  pad32(b);
  return b;
}

Imatrix gguf_expected() {
  Imatrix m;
  m.entries = {{"t", {3.0f, 5.0f}, {4}}};
  m.datasets = {"cal.txt"};
  m.chunk_count = 1;
  m.chunk_size = 4;
  return m;
}

void expect_same(const Imatrix& a, const Imatrix& b) {
  EXPECT_EQ(a.form, b.form);
  EXPECT_EQ(a.datasets, b.datasets);
  EXPECT_EQ(a.chunk_count, b.chunk_count);
  EXPECT_EQ(a.chunk_size, b.chunk_size);
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    EXPECT_EQ(a.entries[i].name, b.entries[i].name);
    EXPECT_EQ(a.entries[i].sums, b.entries[i].sums);
    EXPECT_EQ(a.entries[i].counts, b.entries[i].counts);
  }
}

void expect_io_error(const Bytes& b, const std::string& needle) {
  try {
    io::parse_imatrix(b, "test file");
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Imatrix, LegacyGoldenBytesReadAndWrite) {
  const Imatrix m = io::parse_imatrix(legacy_golden(), "legacy");
  expect_same(m, legacy_expected());
  EXPECT_EQ(io::serialize_imatrix(legacy_expected(), ImatrixForm::kLegacy), legacy_golden());
  // llama-quantize: values / ncall.
  EXPECT_EQ(m.quantize_weights("a"), (std::vector<float>{3.0f, 4.0f}));
  EXPECT_EQ(m.importance("b", 1)[0], 1.0);
}

TEST(Imatrix, LegacyTrailerIsOptional) {
  Bytes b = legacy_golden();
  b.resize(b.size() - 4 - 7 - 4);  // no chunk count, no dataset (older files)
  const Imatrix m = io::parse_imatrix(b, "old");
  EXPECT_EQ(m.chunk_count, 0);
  EXPECT_TRUE(m.datasets.empty());
  Bytes c = legacy_golden();
  c.resize(c.size() - 4 - 7);  // chunk count only
  EXPECT_EQ(io::parse_imatrix(c, "old").chunk_count, 3);
}

TEST(Imatrix, GgufGoldenBytesReadAndWrite) {
  const Imatrix m = io::parse_imatrix(gguf_golden(), "gguf");
  expect_same(m, gguf_expected());
  EXPECT_EQ(io::serialize_imatrix(gguf_expected(), ImatrixForm::kGguf), gguf_golden());
  EXPECT_EQ(m.quantize_weights("t"), (std::vector<float>{0.75f, 1.25f}));
}

TEST(Imatrix, FileRoundTripsOfBothFormsAndConversions) {
  testing::TempDir dir;
  for (ImatrixForm form : {ImatrixForm::kGguf, ImatrixForm::kLegacy}) {
    const Imatrix m = form == ImatrixForm::kGguf ? gguf_expected() : legacy_expected();
    const std::string path = dir.file(std::string("m.") + to_string(form));
    io::write_imatrix(path, m, form);
    expect_same(io::read_imatrix(path), m);
  }
  // GGUF → legacy as save_imatrix_legacy: ncall = ⌈4 / 4⌉ = 1, values (sum / count) · 1.
  const Imatrix legacy =
      io::parse_imatrix(io::serialize_imatrix(gguf_expected(), ImatrixForm::kLegacy), "conv");
  EXPECT_EQ(legacy.entries[0].counts, (std::vector<std::int64_t>{1}));
  EXPECT_EQ(legacy.quantize_weights("t"), gguf_expected().quantize_weights("t"));
  // Legacy → GGUF as the tool merges a legacy file: sums · chunk_size, counts · chunk_size.
  Imatrix l = legacy_expected();
  EXPECT_THROW(io::serialize_imatrix(l, ImatrixForm::kGguf), InvalidArgument);  // no chunk size
  l.chunk_size = 8;
  const Imatrix g = io::parse_imatrix(io::serialize_imatrix(l, ImatrixForm::kGguf), "conv");
  EXPECT_EQ(g.entries[0].sums, (std::vector<float>{48.0f, 64.0f}));
  EXPECT_EQ(g.entries[0].counts, (std::vector<std::int64_t>{16}));
  EXPECT_EQ(g.quantize_weights("a"), l.quantize_weights("a"));
}

TEST(Imatrix, ImportanceFromStatisticsIsTheMeanOfSquaredActivations) {
  const Index tokens = 37, in = 12;
  const MatrixF x = testing::random_matrix(tokens, in, 5, 2.0);
  const MatrixF w = testing::random_matrix(3, in, 6);
  LayerProblem problem(w);
  problem.add_batch(x);
  io::ImatrixFromStatisticsOptions o;
  o.chunk_size = 16;
  o.datasets = {"x.npy"};
  const Imatrix m = io::imatrix_from_statistics({"blk.0.ffn_down.weight"},
                                                {problem.hessian_diagonal()}, {tokens}, o);
  EXPECT_EQ(m.chunk_count, 2);  // ⌊37 / 16⌋
  const Imatrix back = io::parse_imatrix(io::serialize_imatrix(m, ImatrixForm::kGguf), "stats");
  const VectorD imp = back.importance("blk.0.ffn_down.weight", in);
  for (Index j = 0; j < in; ++j) {
    double sum = 0.0;
    for (Index t = 0; t < tokens; ++t) sum += double(x(t, j)) * double(x(t, j));
    // What llama-quantize computes: float(sum) / float(tokens).
    EXPECT_EQ(imp[j], double(float(sum) / float(tokens))) << j;
    EXPECT_NEAR(imp[j], sum / tokens, 1e-6 * sum / tokens) << j;
  }
  // The legacy form gives the same weights up to float rounding of (mean · ncall) / ncall.
  const Imatrix legacy =
      io::parse_imatrix(io::serialize_imatrix(m, ImatrixForm::kLegacy), "stats legacy");
  EXPECT_EQ(legacy.entries[0].counts, (std::vector<std::int64_t>{3}));  // ⌈37 / 16⌉
  const VectorD imp_legacy = legacy.importance("blk.0.ffn_down.weight", in);
  for (Index j = 0; j < in; ++j) EXPECT_NEAR(imp_legacy[j], imp[j], 1e-6 * imp[j]);
  EXPECT_THROW(io::imatrix_from_statistics({"a"}, {problem.hessian_diagonal()}, {0}),
               InvalidArgument);
  EXPECT_THROW(io::imatrix_from_statistics(
                   {"a", "a"}, {problem.hessian_diagonal(), problem.hessian_diagonal()}, {1, 1}),
               InvalidArgument);
}

TEST(Imatrix, AbsentNameOrLengthMismatchIsRefusedNamingTheTensor) {
  const Imatrix m = gguf_expected();
  try {
    m.importance("u", 2);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'u'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("t"), std::string::npos) << e.what();
  }
  try {
    m.importance("t", 3);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'t' has 2 columns"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m.importance("t", 2, 1), InvalidArgument);
}

TEST(Imatrix, ZeroCountMatrixGetsUnitWeightsAsLlamaQuantize) {
  Imatrix m;
  m.entries = {{"experts", {2.0f, 4.0f, 9.0f, 9.0f}, {2, 0}}};
  m.chunk_size = 512;
  const Imatrix back = io::parse_imatrix(io::serialize_imatrix(m, ImatrixForm::kGguf), "moe");
  EXPECT_EQ(back.quantize_weights("experts"), (std::vector<float>{1.0f, 2.0f, 1.0f, 1.0f}));
  EXPECT_EQ(back.importance("experts", 2, 1), VectorD::Ones(2));
}

TEST(Imatrix, HostileLegacyFilesRaiseIoErrorNamingTheField) {
  const Bytes good = legacy_golden();
  expect_io_error({}, "truncated");
  auto with_i32 = [&](std::size_t offset, std::int32_t v) {
    Bytes b = good;
    std::memcpy(b.data() + offset, &v, 4);
    return b;
  };
  expect_io_error(with_i32(0, 0), "entry count is 0");
  expect_io_error(with_i32(0, -5), "entry count is -5");
  expect_io_error(with_i32(0, 1 << 30), "entry count is 1073741824");
  expect_io_error(with_i32(4, -1), "name length is -1");
  expect_io_error(with_i32(4, 0x7fffffff), "name length is 2147483647");
  expect_io_error(with_i32(9, 0), "ncall is 0");
  expect_io_error(with_i32(9, -3), "ncall is -3");
  expect_io_error(with_i32(13, 0), "value count is 0");
  expect_io_error(with_i32(13, 1 << 29), "value count is 536870912");
  expect_io_error(with_i32(13, 3), "");  // values run into the next entry: some IoError
  Bytes nan = good;
  const float q = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan.data() + 17, &q, 4);
  expect_io_error(nan, "value 0 is nan");
  Bytes neg = good;
  const float m1 = -1.0f;
  std::memcpy(neg.data() + 21, &m1, 4);
  expect_io_error(neg, "value 1 is -1");
  expect_io_error(with_i32(good.size() - 15, -2), "chunk count is -2");
  expect_io_error(with_i32(good.size() - 11, 99), "dataset name length is 99");
  Bytes trailing = good;
  trailing.push_back(0);
  expect_io_error(trailing, "dataset name length");
  for (std::size_t cut = 1; cut < good.size() - 15; ++cut) {
    Bytes b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_THROW(io::parse_imatrix(b, "cut"), IoError) << cut;
  }
  Bytes dup = good;  // rename "b" to "a"
  dup[29] = 'a';
  expect_io_error(dup, "'a' appears twice");
}

TEST(Imatrix, HostileGgufFilesRaiseIoErrorNamingTheField) {
  // Files made through the GGUF container with one field wrong.
  auto gguf_with = [](const std::function<void(io::GgufFile&)>& change) {
    io::GgufFile f = io::parse_gguf(gguf_golden(), "golden");
    change(f);
    return io::serialize_gguf(f);
  };
  expect_io_error(gguf_with([](io::GgufFile& f) { f.erase("imatrix.chunk_size"); }),
                  "imatrix.chunk_size is missing");
  expect_io_error(gguf_with([](io::GgufFile& f) {
                    f.set("imatrix.chunk_count", io::GgufValue::scalar<std::int32_t>(1));
                  }),
                  "imatrix.chunk_count is int32");
  expect_io_error(
      gguf_with([](io::GgufFile& f) { f.set("general.type", io::GgufValue::string("model")); }),
      "expected the string \"imatrix\"");
  auto tensors = [&](const std::vector<float>& sums, const std::vector<float>& counts,
                     std::vector<std::int64_t> sum_shape, std::vector<std::int64_t> count_shape,
                     bool with_counts = true) {
    return gguf_with([&](io::GgufFile& f) {
      io::GgufFile g;
      for (const auto& [k, v] : f.metadata()) g.set(k, v);
      g.add_tensor("t.in_sum2", GgmlType::kF32, sum_shape, sums.data(), sums.size() * 4);
      if (with_counts)
        g.add_tensor("t.counts", GgmlType::kF32, count_shape, counts.data(), counts.size() * 4);
      f = g;
    });
  };
  expect_io_error(tensors({1, 2}, {1}, {2}, {1}, false), "has no 't.counts'");
  expect_io_error(tensors({1, 2}, {-1}, {2}, {1}), "count 0 is -1");
  expect_io_error(tensors({1, 2}, {1.5f}, {2}, {1}), "count 0 is 1.5");
  expect_io_error(tensors({1, 2}, {std::nanf("")}, {2}, {1}), "count 0 is nan");
  expect_io_error(tensors({1, 2}, {1, 1}, {2}, {1, 2}), "expected {cols, n} and {1, n}");
  expect_io_error(tensors({1, std::numeric_limits<float>::infinity()}, {1}, {2}, {1}),
                  "value 1 is inf");
  expect_io_error(tensors({1, -2}, {1}, {2}, {1}), "value 1 is -2");
  expect_io_error(gguf_with([](io::GgufFile& f) {
                    io::GgufFile g;
                    for (const auto& [k, v] : f.metadata()) g.set(k, v);
                    f = g;
                  }),
                  "holds no imatrix entries");
  Bytes cut = gguf_golden();
  cut.resize(cut.size() - 40);
  expect_io_error(cut, "");
}

TEST(Imatrix, ScaleImportanceOverridesOnlyTheGridSearch) {
  const MatrixF w = testing::random_matrix(4, 64, 11);
  const MatrixF x = testing::llm_like_activations(80, 64, 12);
  LayerProblem problem(w);
  problem.add_batch(x);
  const GridSpec spec = GridSpec::for_format(GgmlType::kQ4_0);
  VectorD imp = VectorD::Ones(64);
  imp.head(8).setConstant(1000.0);
  const Grid reference = make_grid(w, spec, imp);
  const MatrixD h = problem.hessian();
  ASSERT_NE(make_grid(problem, spec).stored.d, reference.stored.d);  // diag(H) chooses otherwise
  problem.set_scale_importance(imp);
  const Grid g = make_grid(problem, spec);
  EXPECT_EQ(g.stored.d, reference.stored.d);
  EXPECT_EQ(problem.hessian(), h);
  EXPECT_THROW(problem.set_scale_importance(VectorD::Ones(3)), InvalidArgument);
  VectorD bad = imp;
  bad[2] = -1.0;
  EXPECT_THROW(problem.set_scale_importance(bad), InvalidArgument);
}

}  // namespace
}  // namespace qround
