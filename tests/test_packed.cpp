// PackedMatrix: layout, unpack identity, the int4 nibble order, rejection of what does not fit,
// and the file format (round trip, truncation, hostile headers).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "qround/error.hpp"
#include "qround/packed.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

using testing_util::make_test_grid;
using testing_util::random_codes;

std::string temp_path(const char* name) { return ::testing::TempDir() + "/qround_packed_" + name; }

struct PackCase {
  int bits;
  bool symmetric;
  Index group;  // 0 = per row
};

class PackRoundTrip : public ::testing::TestWithParam<PackCase> {};

TEST_P(PackRoundTrip, UnpackGivesBackCodesAndGridAndWeights) {
  const PackCase pc = GetParam();
  std::mt19937 rng(7);
  for (Index rows : {1, 15, 16, 17, 33}) {
    for (Index cols : {8, 64, 100, 129}) {
      if (pc.group > cols) continue;
      const Grid g = make_test_grid(rows, cols, pc.bits, pc.symmetric, pc.group, rng);
      const MatrixI8 codes = random_codes(g, rng);
      const PackedMatrix p(codes, g);
      EXPECT_EQ(p.container(), pc.bits <= 4 ? Container::kInt4 : Container::kInt8);
      const QuantizedLayer back = p.unpack();
      ASSERT_TRUE(back.codes == codes) << rows << "×" << cols;
      EXPECT_TRUE(back.grid.scales == g.scales);
      EXPECT_TRUE(back.grid.zeros == g.zeros);
      for (Index r = 0; r < rows; ++r)
        for (Index c = 0; c < cols; ++c)
          ASSERT_EQ(p.weight(r, c), codes(r, c) - g.zeros(r, c / g.group_size));
      // Row sums are Σ d per group.
      const Index groups = p.groups();
      for (Index r = 0; r < rows; ++r)
        for (Index k = 0; k < groups; ++k) {
          std::int32_t sum = 0;
          for (Index c = k * g.group_size; c < std::min(cols, (k + 1) * g.group_size); ++c)
            sum += p.weight(r, c);
          ASSERT_EQ(p.block_row_sums()[((r / 16) * groups + k) * 16 + r % 16], sum);
        }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grids, PackRoundTrip,
                         ::testing::Values(PackCase{8, true, 0}, PackCase{8, true, 32},
                                           PackCase{7, false, 64}, PackCase{4, true, 32},
                                           PackCase{4, false, 128}, PackCase{4, false, 0},
                                           PackCase{3, true, 64}, PackCase{2, false, 32}));

TEST(PackedMatrix, Int4NibbleOrderGolden) {
  // 16 rows × 8 inputs, symmetric 4-bit: code(r, c) chosen so each nibble is recognisable.
  Grid g;
  g.bits = 4;
  g.symmetric = true;
  g.rows = 16;
  g.cols = 8;
  g.group_size = 8;
  g.granularity = Granularity::kPerRow;
  g.scales = MatrixF::Ones(16, 1);
  g.zeros = MatrixI32::Zero(16, 1);
  MatrixI8 codes(16, 8);
  for (Index r = 0; r < 16; ++r)
    for (Index c = 0; c < 8; ++c) codes(r, c) = static_cast<std::int8_t>((r + c) % 16 - 8);
  const PackedMatrix p(codes, g);
  ASSERT_EQ(p.bytes(), 64u);
  // Byte 4·r + i: low nibble = input i, high nibble = input 4 + i, stored as n = q + 8.
  const std::uint8_t* b = p.data();
  EXPECT_EQ(b[0], 0x40);   // row 0: input 0 → n 0, input 4 → n 4
  EXPECT_EQ(b[1], 0x51);   // row 0: inputs 1 / 5
  EXPECT_EQ(b[3], 0x73);   // row 0: inputs 3 / 7
  EXPECT_EQ(b[4], 0x51);   // row 1: input 0 → n 1, input 4 → n 5
  EXPECT_EQ(b[63], 0x62);  // row 15: input 3 → n (15 + 3) % 16 = 2, input 7 → n 6
  // An asymmetric grid stores n = q itself.
  g.symmetric = false;
  g.zeros.setConstant(3);
  MatrixI8 ucodes = MatrixI8::Zero(16, 8);
  ucodes(0, 0) = 15;
  ucodes(0, 4) = 1;
  ucodes(2, 5) = 9;
  const PackedMatrix u(ucodes, g);
  EXPECT_EQ(u.data()[0], 0x1F);
  EXPECT_EQ(u.data()[9], 0x90);
  EXPECT_EQ(u.weight(0, 0), 12);
  EXPECT_THROW(u.weight(16, 0), InvalidArgument);
  EXPECT_THROW(u.weight(0, 8), InvalidArgument);
}

TEST(PackedMatrix, Int8LayoutGolden) {
  std::mt19937 rng(3);
  const Grid g = make_test_grid(17, 6, 8, true, 0, rng);
  MatrixI8 codes = MatrixI8::Zero(17, 6);
  codes(0, 0) = -127;
  codes(1, 5) = 127;
  codes(16, 2) = 5;
  const PackedMatrix p(codes, g);
  EXPECT_EQ(p.padded_cols(), 8);
  EXPECT_EQ(p.blocks(), 2);
  ASSERT_EQ(p.bytes(), 2u * 16 * 8);
  EXPECT_EQ(p.data()[0], 0x81);               // −127, two's complement
  EXPECT_EQ(p.data()[64 + 1 * 4 + 1], 0x7F);  // row 1, input 5 → step 1, byte 4·1 + 1
  EXPECT_EQ(p.data()[128 + 2], 0x05);         // row 16 = block 1 row 0, input 2
  std::size_t nonzero = 0;
  for (std::size_t i = 0; i < p.bytes(); ++i) nonzero += p.data()[i] != 0;
  EXPECT_EQ(nonzero, 3u);  // padding (inputs 6, 7 and rows 17..31) is zero
}

TEST(PackedMatrix, RejectsWhatDoesNotFit) {
  std::mt19937 rng(5);
  // 8-bit symmetric, unrestricted: −128 is not an int8 kernel weight.
  Grid g = make_test_grid(4, 32, 8, true, 0, rng);
  g.restricted = false;
  MatrixI8 codes = MatrixI8::Zero(4, 32);
  codes(2, 3) = -128;
  EXPECT_THROW(PackedMatrix(codes, g), InvalidArgument);
  // 5 bits into int4.
  const Grid g5 = make_test_grid(4, 32, 5, false, 0, rng);
  EXPECT_THROW(PackedMatrix(random_codes(g5, rng), g5, PackOptions{Container::kInt4}),
               InvalidArgument);
  // Group size that is not a whole number of k-steps.
  const Grid g12 = make_test_grid(4, 48, 4, true, 12, rng);
  EXPECT_THROW(PackedMatrix(random_codes(g12, rng), g12), InvalidArgument);
  // … but fits the int8 container (steps of 4).
  EXPECT_NO_THROW(PackedMatrix(random_codes(g12, rng), g12, PackOptions{Container::kInt8}));
  // Codes outside the grid, shape mismatch.
  const Grid g4 = make_test_grid(4, 32, 4, true, 0, rng);
  MatrixI8 bad = MatrixI8::Zero(4, 32);
  bad(0, 0) = 9;
  EXPECT_THROW(PackedMatrix(bad, g4), InvalidArgument);
  EXPECT_THROW(PackedMatrix(MatrixI8::Zero(4, 31), g4), InvalidArgument);
}

TEST(PackedMatrix, SaveLoadRoundTripIncludingExponent) {
  std::mt19937 rng(11);
  for (const PackCase pc : {PackCase{4, false, 32}, PackCase{8, true, 0}, PackCase{3, true, 64}}) {
    Grid g = make_test_grid(19, 130, pc.bits, pc.symmetric, pc.group, rng);
    g.exponent = VectorF::Constant(19, 0.75f);
    const MatrixI8 codes = random_codes(g, rng);
    const PackedMatrix p(codes, g);
    const std::string path = temp_path("roundtrip.bin");
    p.save(path);
    const PackedMatrix q = PackedMatrix::load(path);
    EXPECT_EQ(q.container(), p.container());
    EXPECT_TRUE(q.unpack_codes() == codes);
    EXPECT_TRUE(q.grid().scales == g.scales);
    EXPECT_TRUE(q.grid().exponent == g.exponent);
    ASSERT_EQ(q.bytes(), p.bytes());
    EXPECT_EQ(std::memcmp(q.data(), p.data(), p.bytes()), 0);
    std::remove(path.c_str());
  }
}

std::vector<char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Regression (issue 15): save() wrote through the fixed name PATH.tmp, which two writers of the
// same path share and which a stale entry blocks. Now a unique temporary is used.
TEST(PackedMatrix, SaveUsesAUniqueTemporaryName) {
  std::mt19937 rng(5);
  const Grid g = make_test_grid(8, 64, 4, false, 32, rng);
  const PackedMatrix p(random_codes(g, rng), g);
  testing::TempDir dir;
  const std::string path = dir.file("layer.qpk");
  std::filesystem::create_directory(path + ".tmp");  // a stale or foreign ".tmp" in the way
  p.save(path);
  EXPECT_TRUE(std::filesystem::is_directory(path + ".tmp"));
  EXPECT_EQ(PackedMatrix::load(path).unpack_codes(), p.unpack_codes());
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"layer.qpk", "layer.qpk.tmp"}));
}

TEST(PackedMatrix, LoadRejectsTruncatedAndHostileFiles) {
  std::mt19937 rng(13);
  const Grid g = make_test_grid(20, 64, 4, true, 32, rng);
  const PackedMatrix p(random_codes(g, rng), g);
  const std::string path = temp_path("hostile.bin");
  p.save(path);
  const std::vector<char> good = read_all(path);
  // Every truncation point fails cleanly.
  for (std::size_t n = 0; n < good.size(); n += 7) {
    write_all(path, std::vector<char>(good.begin(), good.begin() + static_cast<long>(n)));
    EXPECT_THROW(PackedMatrix::load(path), IoError) << "truncated at " << n;
  }
  auto patched = [&](std::size_t offset, const void* v, std::size_t n) {
    std::vector<char> b = good;
    std::memcpy(b.data() + offset, v, n);
    write_all(path, b);
  };
  const std::int64_t huge = std::int64_t{1} << 40;
  patched(32, &huge, 8);  // rows
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  const std::int64_t rows21 = 21;  // a different but plausible shape: sizes no longer match
  patched(32, &rows21, 8);
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  const std::uint32_t v2 = 2;
  patched(8, &v2, 4);  // version
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  patched(0, "XXXX", 4);  // magic
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  const float negative = -1.0f;
  patched(56, &negative, 4);  // first scale
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  std::vector<char> pad = good;
  ASSERT_FALSE(pad.empty());
  pad[pad.size() - 1] = 0x11;  // a padded row (rows 20..31) gets a non-zero weight
  write_all(path, pad);
  EXPECT_THROW(PackedMatrix::load(path), IoError);
  EXPECT_THROW(PackedMatrix::load(temp_path("does_not_exist.bin")), IoError);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace qround
