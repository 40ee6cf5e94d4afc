#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/io/gguf.hpp"
#include "test_helpers.hpp"

namespace qround::io {
namespace {

using Bytes = std::vector<unsigned char>;

// A plain little-endian byte builder for hand-made files, independent of the writer under test.
struct Builder {
  Bytes b;
  Builder& u8(unsigned v) { return raw(&v, 1); }
  Builder& u32(std::uint32_t v) { return raw(&v, 4); }
  Builder& u64(std::uint64_t v) { return raw(&v, 8); }
  Builder& str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Builder& raw(const void* p, std::size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Builder& pad(std::size_t a) {
    while (b.size() % a) b.push_back(0);
    return *this;
  }
};

// ---- golden bytes --------------------------------------------------------------------------

TEST(GgufGolden, TinyFileIsSpelledOutByteForByte) {
  GgufFile f;
  f.set("general.architecture", GgufValue::string("llama"));
  const float data[2] = {1.0f, -2.0f};
  f.add_tensor("t", GgmlType::kF32, {2}, data, sizeof data);
  const Bytes got = serialize_gguf(f);

  const Bytes want = {'G', 'G', 'U', 'F', 3, 0, 0, 0,  // magic, version 3
                      1, 0, 0, 0, 0, 0, 0, 0,          // 1 tensor
                      2, 0, 0, 0, 0, 0, 0, 0,          // 2 key/values
                      // general.alignment (added first by the writer): uint32 (4) = 32
                      17, 0, 0, 0, 0, 0, 0, 0, 'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 'a', 'l',
                      'i', 'g', 'n', 'm', 'e', 'n', 't', 4, 0, 0, 0, 32, 0, 0, 0,
                      // general.architecture: string (8) "llama"
                      20, 0, 0, 0, 0, 0, 0, 0, 'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 'a', 'r',
                      'c', 'h', 'i', 't', 'e', 'c', 't', 'u', 'r', 'e', 8, 0, 0, 0, 5, 0, 0, 0, 0,
                      0, 0, 0, 'l', 'l', 'a', 'm', 'a',
                      // tensor "t": 1 dim, ne0 = 2, type F32 (0), offset 0
                      1, 0, 0, 0, 0, 0, 0, 0, 't',  // name
                      1, 0, 0, 0,                   // n_dims
                      2, 0, 0, 0, 0, 0, 0, 0,       // ne0
                      0, 0, 0, 0,                   // type
                      0, 0, 0, 0, 0, 0, 0, 0,       // offset
                      // 135 bytes so far: zeros up to the data section at 160
                      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                      // 1.0f, -2.0f, then padding to 192
                      0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_EQ(want.size(), 192u);
  EXPECT_EQ(got, want);

  const GgufFile r = parse_gguf(want, "golden");
  EXPECT_EQ(r.version, 3u);
  ASSERT_EQ(r.metadata().size(), 2u);
  EXPECT_EQ(r.metadata()[0].first, "general.alignment");
  EXPECT_EQ(r.get("general.alignment").get<std::uint32_t>(), 32u);
  EXPECT_EQ(r.get("general.architecture").get<std::string>(), "llama");
  ASSERT_EQ(r.tensors().size(), 1u);
  const GgufTensor& t = r.tensor("t");
  EXPECT_EQ(t.type, GgmlType::kF32);
  EXPECT_EQ(t.shape, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(t.rows(), 1);
  EXPECT_EQ(t.cols(), 2);
  ASSERT_EQ(t.bytes(), 8u);
  EXPECT_EQ(std::memcmp(t.data(), data, 8), 0);
}

TEST(GgufGolden, StandardMetadataKeys) {
  GgufFile f;
  set_standard_metadata(f, "llama");
  EXPECT_EQ(f.get("general.architecture").get<std::string>(), "llama");
  EXPECT_EQ(f.get("general.quantization_version"), GgufValue::scalar<std::uint32_t>(2));
  EXPECT_EQ(f.get("general.alignment"), GgufValue::scalar<std::uint32_t>(32));
  const GgufFile r = parse_gguf(serialize_gguf(f), "std");
  EXPECT_EQ(r.metadata(), f.metadata());  // alignment present: nothing added
}

// ---- round trips ---------------------------------------------------------------------------

TEST(GgufRoundTrip, EveryValueTypeScalarAndArray) {
  const float nan = bits_float(0x7fc01234u);
  GgufFile f;
  f.set("u8", GgufValue::scalar<std::uint8_t>(255));
  f.set("i8", GgufValue::scalar<std::int8_t>(-128));
  f.set("u16", GgufValue::scalar<std::uint16_t>(65535));
  f.set("i16", GgufValue::scalar<std::int16_t>(-32768));
  f.set("u32", GgufValue::scalar<std::uint32_t>(4294967295u));
  f.set("i32", GgufValue::scalar<std::int32_t>(std::numeric_limits<std::int32_t>::min()));
  f.set("f32", GgufValue::scalar<float>(-0.0f));
  f.set("f32nan", GgufValue::scalar<float>(nan));
  f.set("bool", GgufValue::scalar<bool>(true));
  f.set("str", GgufValue::string(std::string("a\0b\xff", 4)));
  f.set("empty", GgufValue::string(""));
  f.set("u64", GgufValue::scalar<std::uint64_t>(std::numeric_limits<std::uint64_t>::max()));
  f.set("i64", GgufValue::scalar<std::int64_t>(std::numeric_limits<std::int64_t>::min()));
  f.set("f64", GgufValue::scalar<double>(1e-310));  // subnormal
  f.set("a.u8", GgufValue::array<std::uint8_t>({0, 1, 255}));
  f.set("a.i8", GgufValue::array<std::int8_t>({-1, 2}));
  f.set("a.u16", GgufValue::array<std::uint16_t>({7}));
  f.set("a.i16", GgufValue::array<std::int16_t>({-7, 8}));
  f.set("a.u32", GgufValue::array<std::uint32_t>({1, 2, 3}));
  f.set("a.i32", GgufValue::array<std::int32_t>({-3}));
  f.set("a.f32", GgufValue::array<float>({1.5f, nan, -0.0f}));
  f.set("a.bool", GgufValue::array<bool>({true, false, true}));
  f.set("a.str", GgufValue::array<std::string>({"x", "", "token▁"}));
  f.set("a.u64", GgufValue::array<std::uint64_t>({1ull << 63}));
  f.set("a.i64", GgufValue::array<std::int64_t>({-5, 6}));
  f.set("a.f64", GgufValue::array<double>({3.25, -1e300}));
  f.set("a.empty", GgufValue::array<std::int32_t>({}));
  f.set("general.alignment", GgufValue::scalar<std::uint32_t>(32));

  qround::testing::TempDir dir;
  const std::string path = dir.file("values.gguf");
  write_gguf(path, f);
  const GgufFile r = read_gguf(path);
  ASSERT_EQ(r.metadata().size(), f.metadata().size());
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    EXPECT_EQ(r.metadata()[i].first, f.metadata()[i].first);
    EXPECT_EQ(r.metadata()[i].second, f.metadata()[i].second) << f.metadata()[i].first;
  }
  // Bit patterns are kept, and equality is by bits (so −0 ≠ +0 here).
  EXPECT_EQ(float_bits(r.get("f32nan").get<float>()), 0x7fc01234u);
  EXPECT_NE(r.get("f32"), GgufValue::scalar<float>(0.0f));
  EXPECT_EQ(r.get("a.str").get_array<std::string>()[2], "token▁");
  EXPECT_TRUE(r.get("bool").get_bool());
  EXPECT_EQ(r.get("a.empty").type(), GgufType::kArray);
  EXPECT_EQ(r.get("a.empty").element_type(), GgufType::kInt32);
  // Typed access checks the type.
  EXPECT_THROW(r.get("u32").get<std::int32_t>(), IoError);
  EXPECT_THROW(r.get("a.u32").get<std::uint32_t>(), IoError);
  EXPECT_THROW(r.get("u32").get_array<std::uint32_t>(), IoError);
  EXPECT_THROW(r.get("missing"), IoError);
  // The same bytes again when written from what was read.
  EXPECT_EQ(serialize_gguf(r), serialize_gguf(f));
}

Bytes random_bytes(std::size_t n, std::uint64_t seed) {
  detail::Rng rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<unsigned char>(rng.next());
  return b;
}

TEST(GgufRoundTrip, TensorsOfEveryFloatTypeAndBlockTypesAsOpaqueBytes) {
  struct Case {
    const char* name;
    GgmlType type;
    std::vector<std::int64_t> shape;
    std::size_t bytes;  // written out by hand from ggml-common.h's block sizes
  };
  const std::vector<Case> cases = {
      {"f32", GgmlType::kF32, {5, 3}, 5 * 3 * 4},
      {"f16", GgmlType::kF16, {7, 2}, 7 * 2 * 2},
      {"bf16", GgmlType::kBF16, {3}, 3 * 2},
      {"blk.0.q4_0", GgmlType::kQ4_0, {64, 3}, 2 * 3 * 18},       // 18-byte blocks of 32
      {"blk.0.q4_k", GgmlType::kQ4_K, {512, 2, 2}, 2 * 4 * 144},  // 144-byte blocks of 256
      {"empty", GgmlType::kF32, {0, 4}, 0},
  };
  GgufFile f;
  set_standard_metadata(f, "test");
  std::vector<Bytes> data;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    data.push_back(random_bytes(cases[i].bytes, 100 + i));
    f.add_tensor(cases[i].name, cases[i].type, cases[i].shape, data.back().data(), cases[i].bytes);
  }
  const Bytes image = serialize_gguf(f);
  const GgufFile r = parse_gguf(image, "tensors");
  ASSERT_EQ(r.tensors().size(), cases.size());
  std::uint64_t expect_offset = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const GgufTensor& t = r.tensors()[i];
    EXPECT_EQ(t.name, cases[i].name);
    EXPECT_EQ(t.type, cases[i].type);
    EXPECT_EQ(t.shape, cases[i].shape);
    EXPECT_EQ(t.offset, expect_offset) << "offsets are consecutive, each padded to 32";
    expect_offset += (cases[i].bytes + 31) / 32 * 32;
    ASSERT_EQ(t.bytes(), cases[i].bytes);
    if (t.bytes()) {
      EXPECT_EQ(std::memcmp(t.data(), data[i].data(), t.bytes()), 0) << t.name;
      EXPECT_EQ((t.data() - r.tensors()[0].data()) % 32, 0);
    }
  }
  EXPECT_EQ(image.size() % 32, 0u);
  EXPECT_EQ(r.tensor("blk.0.q4_k").rows(), 4);
}

TEST(GgufRoundTrip, Version2ReadsAsVersion3) {
  GgufFile f;
  set_standard_metadata(f, "llama");
  const float x[32] = {};
  f.add_tensor("w", GgmlType::kF32, {32}, x, sizeof x);
  Bytes image = serialize_gguf(f);
  image[4] = 2;
  const GgufFile r = parse_gguf(image, "v2");
  EXPECT_EQ(r.version, 2u);
  EXPECT_EQ(r.metadata(), f.metadata());
  EXPECT_EQ(r.tensor("w").bytes(), sizeof x);
}

// ---- writer contract -----------------------------------------------------------------------

TEST(GgufWriter, RefusesBadTensorsAndAlignment) {
  GgufFile f;
  const Bytes b(1024);
  EXPECT_THROW(f.add_tensor(std::string(64, 'n'), GgmlType::kF32, {1}, b.data(), 4),
               InvalidArgument);
  f.add_tensor(std::string(63, 'n'), GgmlType::kF32, {1}, b.data(), 4);  // 63 bytes is fine
  EXPECT_THROW(f.add_tensor(std::string(63, 'n'), GgmlType::kF32, {1}, b.data(), 4),
               InvalidArgument);  // duplicate
  EXPECT_THROW(f.add_tensor("", GgmlType::kF32, {1}, b.data(), 4), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", GgmlType::kF32, {2}, b.data(), 4), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", GgmlType::kQ4_0, {48}, b.data(), 18), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", GgmlType::kQ4_0, {32, 2}, b.data(), 18), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", GgmlType::kF32, {1, 1, 1, 1, 1}, b.data(), 4), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", GgmlType::kF32, {}, b.data(), 4), InvalidArgument);
  EXPECT_THROW(f.add_tensor("a", static_cast<GgmlType>(4), {1}, b.data(), 4), InvalidArgument);
  try {
    f.add_tensor("blk.1.ffn_down.weight", GgmlType::kQ4_K, {172, 2}, b.data(), 100);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.ffn_down.weight"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos);
  }
  f.set("general.alignment", GgufValue::scalar<std::uint32_t>(64));
  EXPECT_THROW(serialize_gguf(f), InvalidArgument);
  f.set("general.alignment", GgufValue::scalar<std::uint64_t>(32));
  EXPECT_THROW(serialize_gguf(f), InvalidArgument);
  EXPECT_THROW(f.set("", GgufValue::string("x")), InvalidArgument);
}

TEST(GgufWriter, FailedWriteLeavesNoTemporaryAndKeepsTheOldFile) {
  qround::testing::TempDir dir;
  const std::string path = dir.file("model.gguf");
  { std::ofstream(path) << "old"; }
  GgufFile bad;
  bad.set("general.alignment", GgufValue::scalar<std::uint32_t>(16));
  EXPECT_THROW(write_gguf(path, bad), InvalidArgument);
  EXPECT_THROW(write_gguf(dir.file("no/such/dir/x.gguf"), GgufFile{}), IoError);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"model.gguf"}));
  std::ifstream in(path);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "old");
  // A good write replaces it, still with nothing else left behind.
  GgufFile good;
  set_standard_metadata(good, "llama");
  write_gguf(path, good);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"model.gguf"}));
  EXPECT_EQ(read_gguf(path).metadata(), good.metadata());
}

// ---- hostile input -------------------------------------------------------------------------

// A small file described field by field; each hostile case changes one thing.
struct Spec {
  std::uint32_t magic = 0x46554747;  // "GGUF"
  std::uint32_t version = 3;
  static constexpr std::int64_t kCount = std::numeric_limits<std::int64_t>::min();
  std::int64_t n_tensors = kCount;  // kCount: the number of tensors below
  std::int64_t n_kv = kCount;
  struct Kv {
    std::string key;
    std::function<void(Builder&)> value;  // type and value bytes
  };
  std::vector<Kv> kvs = {
      {"general.alignment", [](Builder& b) { b.u32(4).u32(32); }},
      {"general.name", [](Builder& b) { b.u32(8).str("tiny"); }},
  };
  struct Tensor {
    std::string name;
    std::vector<std::int64_t> ne;
    std::uint32_t type;
    std::uint64_t offset;
    std::int64_t n_dims = -1;
  };
  std::vector<Tensor> tensors = {{"a", {4, 2}, 0, 0}, {"b", {32}, 2, 32}};  // f32 32 B, q4_0 18 B
  std::size_t data_bytes = 64;
  Bytes after_infos;  // raw bytes after the tensor infos (before the padding)

  Bytes build() const {
    Builder b;
    b.u32(magic).u32(version);
    b.u64(
        static_cast<std::uint64_t>(n_tensors == kCount ? std::int64_t(tensors.size()) : n_tensors));
    b.u64(static_cast<std::uint64_t>(n_kv == kCount ? std::int64_t(kvs.size()) : n_kv));
    for (const Kv& kv : kvs) {
      b.str(kv.key);
      kv.value(b);
    }
    for (const Tensor& t : tensors) {
      b.str(t.name).u32(static_cast<std::uint32_t>(t.n_dims < 0 ? t.ne.size() : t.n_dims));
      for (std::int64_t d : t.ne) b.u64(static_cast<std::uint64_t>(d));
      b.u32(t.type).u64(t.offset);
    }
    b.raw(after_infos.data(), after_infos.size());
    b.pad(32);
    b.b.resize(b.b.size() + data_bytes, 0x5a);
    return b.b;
  }
};

TEST(GgufHostile, TheValidSpecParses) {
  const GgufFile f = parse_gguf(Spec{}.build(), "spec");
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensor("b").bytes(), 18u);
  EXPECT_EQ(f.get("general.name").get<std::string>(), "tiny");
}

TEST(GgufHostile, EachMutationIsAnIoErrorNamingTheField) {
  constexpr std::uint64_t kHuge = std::uint64_t{1} << 60;
  struct Case {
    const char* what;
    std::function<void(Spec&)> mutate;
    const char* expect;  // must appear in the message
  };
  const std::vector<Case> cases = {
      {"bad magic", [](Spec& s) { s.magic = 0x46554746; }, "magic"},
      {"version 1", [](Spec& s) { s.version = 1; }, "version is 1"},
      {"version 4", [](Spec& s) { s.version = 4; }, "version is 4"},
      {"big-endian version", [](Spec& s) { s.version = 0x03000000; }, "version"},
      {"huge tensor count", [](Spec& s) { s.n_tensors = std::int64_t(kHuge); }, "tensor count"},
      {"negative tensor count", [](Spec& s) { s.n_tensors = -5; }, "tensor count"},
      {"huge metadata count", [](Spec& s) { s.n_kv = std::int64_t(kHuge); }, "metadata count"},
      {"negative metadata count", [](Spec& s) { s.n_kv = -1; }, "metadata count"},
      {"more metadata than present",
       [](Spec& s) {
         s.n_kv = 3;
         s.tensors.clear();
         s.data_bytes = 0;
       },
       "metadata key 2"},
      {"empty key", [](Spec& s) { s.kvs[1].key = ""; }, "empty"},
      {"duplicate key", [](Spec& s) { s.kvs[1].key = "general.alignment"; }, "twice"},
      {"bad value type", [](Spec& s) { s.kvs[1].value = [](Builder& b) { b.u32(13).u32(0); }; },
       "value type 13"},
      {"huge string length",
       [](Spec& s) { s.kvs[1].value = [=](Builder& b) { b.u32(8).u64(kHuge); }; }, "length"},
      {"huge key length",
       [](Spec& s) {
         s.kvs.clear();
         s.tensors.clear();
         s.n_kv = 1;
         s.data_bytes = 8;
       },
       "metadata key 0"},
      {"huge array of strings",
       [](Spec& s) { s.kvs[1].value = [=](Builder& b) { b.u32(9).u32(8).u64(kHuge); }; },
       "element count"},
      {"huge array of u64",
       [](Spec& s) { s.kvs[1].value = [=](Builder& b) { b.u32(9).u32(10).u64(kHuge >> 3); }; },
       "element count"},
      {"nested array",
       [](Spec& s) { s.kvs[1].value = [](Builder& b) { b.u32(9).u32(9).u64(1).u32(4).u64(0); }; },
       "nested"},
      {"bool not 0 or 1", [](Spec& s) { s.kvs[1].value = [](Builder& b) { b.u32(7).u8(2); }; },
       "0 or 1"},
      {"alignment not a power of two",
       [](Spec& s) { s.kvs[0].value = [](Builder& b) { b.u32(4).u32(48); }; }, "power of two"},
      {"alignment zero", [](Spec& s) { s.kvs[0].value = [](Builder& b) { b.u32(4).u32(0); }; },
       "power of two"},
      {"alignment not uint32",
       [](Spec& s) { s.kvs[0].value = [](Builder& b) { b.u32(10).u64(32); }; }, "uint32"},
      {"five dimensions",
       [](Spec& s) {
         s.tensors[0].ne = {4, 1, 1, 1, 2};
       },
       "dimension count"},
      {"huge dimension count", [](Spec& s) { s.tensors[0].n_dims = 1 << 30; }, "dimension count"},
      {"negative dimension",
       [](Spec& s) {
         s.tensors[0].ne = {4, -2};
       },
       "dimension 1"},
      {"element count overflow",
       [](Spec& s) {
         s.tensors[0].ne = {1 << 30, 1 << 30, 1 << 30};
       },
       "2^63"},
      {"unknown ggml type", [](Spec& s) { s.tensors[0].type = 99; }, "ggml type 99"},
      {"ggml type qround lacks", [](Spec& s) { s.tensors[0].type = 9; }, "ggml type 9"},
      {"row not a multiple of the block", [](Spec& s) { s.tensors[1].ne = {16}; }, "block 32"},
      {"duplicate tensor name", [](Spec& s) { s.tensors[1].name = "a"; }, "twice"},
      {"empty tensor name", [](Spec& s) { s.tensors[1].name = ""; }, "empty"},
      {"tensor name of 64 bytes", [](Spec& s) { s.tensors[1].name = std::string(64, 'x'); },
       "GGML_MAX_NAME"},
      {"huge tensor name length",
       [](Spec& s) {
         s.tensors.resize(1);
         s.n_tensors = 2;
         s.after_infos = Builder().u64(kHuge).b;
       },
       "tensor 1 name"},
      {"unaligned offset", [](Spec& s) { s.tensors[1].offset = 36; }, "multiple of the alignment"},
      {"offset past the end", [](Spec& s) { s.tensors[1].offset = 64; }, "outside the data"},
      {"huge offset", [](Spec& s) { s.tensors[1].offset = ~std::uint64_t{31}; },
       "outside the data"},
      {"overlapping tensors", [](Spec& s) { s.tensors[1].offset = 0; }, "overlaps"},
      {"huge tensor, small file",
       [](Spec& s) {
         s.tensors[0].ne = {1 << 20, 1 << 20};
       },
       "outside the data"},
      {"no data section", [](Spec& s) { s.data_bytes = 0; }, "outside the data"},
  };
  const auto start = std::chrono::steady_clock::now();
  for (const Case& c : cases) {
    Spec s;
    c.mutate(s);
    Bytes image = s.build();
    if (std::string(c.what) == "huge key length") {  // the only key length is 2^60
      Builder b;
      b.u64(kHuge);
      image.insert(image.begin() + 24, b.b.begin(), b.b.end());
    }
    try {
      parse_gguf(image, "hostile");
      ADD_FAILURE() << c.what << ": parsed";
    } catch (const IoError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
      EXPECT_NE(msg.find("hostile"), std::string::npos) << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.what << ": not an IoError: " << e.what();
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0) << "hostile counts must be refused before allocating";
}

TEST(GgufHostile, TruncationAtEveryByteIsAnIoError) {
  GgufFile f;
  set_standard_metadata(f, "llama");
  f.set("tokens", GgufValue::array<std::string>({"a", "bc"}));
  f.set("scores", GgufValue::array<float>({0.5f, -1.0f}));
  const Bytes block(18, 3);
  f.add_tensor("q", GgmlType::kQ4_0, {32}, block.data(), block.size());
  const Bytes image = serialize_gguf(f);
  // The last tensor's padding is not needed to read it; anything shorter than its end fails.
  const std::size_t needed = image.size() - 32 + 18;
  for (std::size_t n = 0; n < image.size(); ++n) {
    const Bytes cut(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(n));
    if (n >= needed) {
      EXPECT_NO_THROW(parse_gguf(cut, "cut")) << n;
      continue;
    }
    try {
      parse_gguf(cut, "cut");
      ADD_FAILURE() << "truncated to " << n << " bytes parsed";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("cut"), std::string::npos);
    }
  }
}

TEST(GgufHostile, RandomByteFlipsNeverCrash) {
  GgufFile f;
  set_standard_metadata(f, "llama");
  f.set("tokens", GgufValue::array<std::string>({"a", "bc", "def"}));
  const Bytes data(2 * 144, 7);
  f.add_tensor("k", GgmlType::kQ4_K, {256, 2}, data.data(), data.size());
  const Bytes image = serialize_gguf(f);
  detail::Rng rng(7);
  int refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    Bytes m = image;
    for (int k = 0; k < 3; ++k) m[rng.next() % m.size()] = static_cast<unsigned char>(rng.next());
    try {
      const GgufFile r = parse_gguf(m, "flip");
      for (const GgufTensor& t : r.tensors()) EXPECT_LE(t.offset + t.bytes(), m.size());
    } catch (const IoError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST(GgufHostile, FileSizeLimitAndMissingFile) {
  qround::testing::TempDir dir;
  GgufFile f;
  set_standard_metadata(f, "llama");
  const std::string path = dir.file("x.gguf");
  write_gguf(path, f);
  GgufReadOptions small;
  small.max_file_bytes = 16;
  EXPECT_THROW(read_gguf(path, small), IoError);
  EXPECT_THROW(read_gguf(dir.file("absent.gguf")), IoError);
}

}  // namespace
}  // namespace qround::io
