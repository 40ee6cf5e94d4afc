#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/io/safetensors.hpp"
#include "qround/scale_search.hpp"

namespace qround::io {
namespace {

std::string temp(const char* name) { return ::testing::TempDir() + "/qround_st_" + name; }

std::vector<unsigned char> with_header(const std::string& json, std::size_t data_bytes) {
  std::vector<unsigned char> out(8 + json.size() + data_bytes, 0);
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}

TEST(Safetensors, FloatDtypesRoundTripAndConvert) {
  SafetensorsWriter w;
  MatrixF m(2, 3);
  m << 1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f;
  w.add_float("a.weight", m);
  const std::uint16_t f16[4] = {0x3C00, 0xC000, 0x3800, 0x7C00};  // 1, −2, 0.5, +inf
  w.add("h", SafetensorsDtype::kF16, {4}, f16, sizeof f16);
  const std::uint16_t bf16[2] = {0x3F80, 0xC0A0};  // 1, −5
  w.add("b", SafetensorsDtype::kBF16, {1, 2}, bf16, sizeof bf16);
  w.set_metadata("note", "hello");
  const std::string path = temp("float.safetensors");
  w.write(path);
  const SafetensorsFile f = SafetensorsFile::load(path);
  EXPECT_EQ(f.read_float("a.weight"), m);
  const MatrixF h = f.read_float("h");
  ASSERT_EQ(h.rows(), 1);
  EXPECT_EQ(h(0, 0), 1.0f);
  EXPECT_EQ(h(0, 1), -2.0f);
  EXPECT_EQ(h(0, 2), 0.5f);
  EXPECT_TRUE(std::isinf(h(0, 3)));
  const MatrixF b = f.read_float("b");
  EXPECT_EQ(b(0, 0), 1.0f);
  EXPECT_EQ(b(0, 1), -5.0f);
  EXPECT_EQ(f.metadata().at("note"), "hello");
  EXPECT_THROW(f.tensor("missing"), IoError);
  std::remove(path.c_str());
}

Grid grid_for(const MatrixF& w, int bits, int group, bool symmetric) {
  GridSpec spec = GridSpec::with_group_size(bits, group, symmetric);
  if (bits == 8 && symmetric) spec.restricted = true;
  return make_grid(w, spec);
}

TEST(Safetensors, QuantizedLayersLoadBackBitForBit) {
  detail::Rng rng(5);
  std::vector<NamedPackedLayer> layers;
  struct Case {
    int rows, cols, bits, group;
    bool symmetric, nupes;
  };
  const Case cases[] = {{17, 64, 4, 32, false, false}, {9, 70, 3, 0, true, false},
                        {33, 48, 8, 16, true, false},  {16, 64, 6, 32, false, false},
                        {5, 40, 4, 8, true, true}};
  for (const Case& c : cases) {
    MatrixF w(c.rows, c.cols);
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(rng.normal());
    Grid g = grid_for(w, c.bits, c.group, c.symmetric);
    if (c.nupes) {
      g.exponent = VectorF::Constant(c.rows, 0.75f);
      g.exponent[0] = 1.25f;
    }
    NamedPackedLayer l{"layers." + std::to_string(layers.size()) + ".w", PackedMatrix(quantize(w, g), g), "test"};
    layers.push_back(std::move(l));
  }
  const std::string path = temp("q.safetensors");
  save_quantized(path, layers, {{"model", "toy"}});
  const auto back = load_quantized(path);
  ASSERT_EQ(back.size(), layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const PackedMatrix &a = layers[i].packed, &b = back[i].packed;
    EXPECT_EQ(back[i].name, layers[i].name);
    EXPECT_EQ(back[i].method, "test");
    EXPECT_EQ(a.container(), b.container());
    ASSERT_EQ(a.bytes(), b.bytes());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.bytes()), 0);
    EXPECT_EQ(a.grid().scales, b.grid().scales);
    EXPECT_EQ(a.grid().zeros, b.grid().zeros);
    EXPECT_EQ(a.grid().exponent, b.grid().exponent);
    EXPECT_EQ(a.grid().granularity, b.grid().granularity);
    EXPECT_EQ(a.grid().group_size, b.grid().group_size);
    EXPECT_EQ(a.unpack_codes(), b.unpack_codes());
  }
  EXPECT_EQ(SafetensorsFile::load(path).metadata().at("model"), "toy");
  // Flipping a padding byte of the first layer (row 17..31 of its second block are padding)
  // makes the packed bytes non-canonical.
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  std::uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), 8);
  const auto end = SafetensorsFile::load(path).tensor(layers[0].name + ".qweight").end;
  f.seekp(static_cast<std::streamoff>(8 + header + end - 1));
  f.put(static_cast<char>(0x11));
  f.close();
  EXPECT_THROW(load_quantized(path), IoError);
  std::remove(path.c_str());
}

TEST(Safetensors, MalformedFilesRaiseIoError) {
  auto bad = [](const std::vector<unsigned char>& bytes, const char* why) {
    EXPECT_THROW(SafetensorsFile::parse(bytes, "test"), IoError) << why;
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(SafetensorsFile::parse(with_header(ok, 8), "test"));
  // Truncation anywhere: inside the length, the header, the data.
  const auto full = with_header(ok, 8);
  for (std::size_t cut : {0ul, 4ul, 8ul, 20ul, full.size() - 1})
    bad(std::vector<unsigned char>(full.begin(), full.begin() + cut), "truncated");
  auto huge = full;
  const std::uint64_t big = ~std::uint64_t{0} - 3;
  std::memcpy(huge.data(), &big, 8);
  bad(huge, "header length beyond the file");
  auto longer = full;
  const std::uint64_t more = ok.size() + 9;
  std::memcpy(longer.data(), &more, 8);
  bad(longer, "header length one past the data");
  bad(with_header("not json", 0), "header not JSON");
  bad(with_header("[1,2]", 0), "header not an object");
  bad(with_header(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", 16), "F64");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
      "offsets do not match the shape");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "past the end");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "end < begin");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "negative");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],)"
                  R"("data_offsets":[0,8]}})",
                  8),
      "element count overflow");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  12),
      "overlapping offsets");
  bad(with_header(R"({"__metadata__":{"k":1}})", 0), "metadata value not a string");
  bad(with_header(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "missing data_offsets");
  // A well-formed tensor read as the wrong type.
  const auto f = SafetensorsFile::parse(
      with_header(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", 8), "test");
  EXPECT_THROW(f.read_float("i"), IoError);
  EXPECT_THROW(f.raw("i", SafetensorsDtype::kU8), IoError);
  EXPECT_NO_THROW(f.raw("i", SafetensorsDtype::kI32));
  EXPECT_THROW(SafetensorsFile::load(temp("does_not_exist")), IoError);
  EXPECT_THROW(load_quantized(temp("does_not_exist")), IoError);
}

// Regression (issue 15): tensor() looked names up by a linear scan. Many tensors, each found by
// name (and a repeated name in the header refused).
TEST(Safetensors, ManyTensorsAreFoundByName) {
  constexpr int kTensors = 20000;
  std::string header = "{";
  for (int i = 0; i < kTensors; ++i)
    header += fmt::format("{}\"t{}\":{{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[{},{}]}}",
                          i ? "," : "", i, i, i + 1);
  std::vector<unsigned char> bytes = with_header(header + "}", kTensors);
  const std::size_t data = bytes.size() - kTensors;
  for (int i = 0; i < kTensors; ++i) bytes[data + i] = static_cast<unsigned char>(i % 251);
  const auto f = SafetensorsFile::parse(bytes, "test");
  ASSERT_EQ(f.tensors().size(), static_cast<std::size_t>(kTensors));
  for (int i = 0; i < kTensors; i += 997) {
    const std::string name = fmt::format("t{}", i);
    EXPECT_TRUE(f.has(name));
    EXPECT_EQ(f.tensor(name).name, name);
    EXPECT_EQ(f.tensor(name).begin, static_cast<std::uint64_t>(i));
    EXPECT_EQ(*f.raw(name, SafetensorsDtype::kI8), static_cast<unsigned char>(i % 251));
  }
  EXPECT_FALSE(f.has("t-1"));
  EXPECT_THROW(f.tensor("missing"), IoError);
  EXPECT_THROW(
      SafetensorsFile::parse(with_header(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},)"
                                         R"("a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})",
                                         2),
                             "test"),
      IoError);
}

}  // namespace
}  // namespace qround::io
