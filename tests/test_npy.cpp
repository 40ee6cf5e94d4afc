// npy reader/writer: round trips, fixtures written byte by byte (so the test does not depend on
// our own writer), and malformed files that must raise IoError without crashing or allocating.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/io/npy.hpp"
#include "test_helpers.hpp"

namespace qround {
namespace {

using io::load_npy_f32;
using io::load_npy_i32;
using io::load_npy_i8;
using io::save_npy;
using testing::TempDir;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A complete .npy file: magic, version major.0, header length (2 bytes for 1.0, 4 otherwise), the
// dict padded with spaces and '\n' to a multiple of 64 (when `pad`), then `data`.
std::string npy_file(int major, const std::string& dict, const std::string& data, bool pad = true) {
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  if (pad) {
    const std::size_t unpadded = 8 + len_bytes + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
  }
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < len_bytes; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T>
std::string le_bytes(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    out.append(buf, sizeof(T));
  }
  return out;
}

std::string dict(const std::string& descr, bool fortran, const std::string& shape) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

// ---- round trips ------------------------------------------------------------------------------

TEST(Npy, RoundTripFloat32OddShapes) {
  TempDir dir;
  for (auto [rows, cols] : {std::pair<Index, Index>{1, 1}, {3, 5}, {17, 1}, {1, 33}, {64, 172}}) {
    MatrixF m = testing::random_matrix(rows, cols, static_cast<std::uint64_t>(rows * 100 + cols));
    m(0, 0) = -0.0f;
    if (m.size() > 1) m(rows - 1, cols - 1) = std::numeric_limits<float>::denorm_min();
    const std::string path = dir.file("m.npy");
    save_npy(path, m);
    const MatrixF back = load_npy_f32(path);
    ASSERT_EQ(back.rows(), rows);
    ASSERT_EQ(back.cols(), cols);
    EXPECT_EQ(std::memcmp(back.data(), m.data(), sizeof(float) * m.size()), 0)
        << rows << "x" << cols;
    EXPECT_TRUE(std::signbit(back(0, 0)));
  }
}

TEST(Npy, RoundTripInt8AndInt32) {
  TempDir dir;
  MatrixI8 codes(3, 4);
  MatrixI32 zeros(2, 5);
  for (Index i = 0; i < codes.size(); ++i) codes.data()[i] = static_cast<std::int8_t>(i * 23 - 128);
  codes(2, 3) = 127;
  for (Index i = 0; i < zeros.size(); ++i) zeros.data()[i] = static_cast<std::int32_t>(i * 99991);
  zeros(0, 0) = std::numeric_limits<std::int32_t>::min();
  zeros(1, 4) = std::numeric_limits<std::int32_t>::max();
  save_npy(dir.file("c.npy"), codes);
  save_npy(dir.file("z.npy"), zeros);
  EXPECT_EQ(load_npy_i8(dir.file("c.npy")), codes);
  EXPECT_EQ(load_npy_i32(dir.file("z.npy")), zeros);
  EXPECT_EQ(load_npy_i32(dir.file("c.npy")), codes.cast<std::int32_t>());
  EXPECT_EQ(load_npy_f32(dir.file("c.npy")), codes.cast<float>());
  // int32 values read as float: exact up to 2^24.
  MatrixI32 small(1, 3);
  small << -(1 << 24), 12345, 1 << 24;
  save_npy(dir.file("s.npy"), small);
  EXPECT_EQ(load_npy_f32(dir.file("s.npy")), small.cast<float>());
}

TEST(Npy, RoundTripEmptyAndStridedViews) {
  TempDir dir;
  save_npy(dir.file("e.npy"), MatrixF(0, 3));
  const MatrixF e = load_npy_f32(dir.file("e.npy"));
  EXPECT_EQ(e.rows(), 0);
  EXPECT_EQ(e.cols(), 3);
  // A block of a larger matrix (outer stride != cols) is written as its own values.
  const MatrixF big = testing::random_matrix(6, 9, 7);
  save_npy(dir.file("b.npy"), big.block(1, 2, 4, 5));
  EXPECT_EQ(load_npy_f32(dir.file("b.npy")), MatrixF(big.block(1, 2, 4, 5)));
}

TEST(Npy, WrittenHeaderIsWhatNumpyWrites) {
  TempDir dir;
  MatrixF m(2, 3);
  m << 1, 2, 3, 4, 5, 6;
  save_npy(dir.file("m.npy"), m);
  const std::string bytes = read_all(dir.file("m.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t header_len =
      static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_len + 6 * sizeof(float));
  const std::string header = bytes.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u)
      << header;
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(bytes.substr(10 + header_len), le_bytes<float>({1, 2, 3, 4, 5, 6}));
  // The same bytes as the independent fixture builder produces.
  EXPECT_EQ(bytes, npy_file(1, dict("<f4", false, "(2, 3)"), le_bytes<float>({1, 2, 3, 4, 5, 6})));

  save_npy(dir.file("c.npy"), MatrixI8::Constant(1, 2, -3));
  EXPECT_EQ(read_all(dir.file("c.npy")),
            npy_file(1, dict("|i1", false, "(1, 2)"), std::string("\xfd\xfd", 2)));
}

// ---- fixtures written byte by byte ----------------------------------------------------------

TEST(Npy, ReadsFloat16IncludingSpecialValues) {
  TempDir dir;
  // 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, +inf, NaN
  const std::string data =
      le_bytes<std::uint16_t>({0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x7e00});
  write_all(dir.file("h.npy"), npy_file(1, dict("<f2", false, "(2, 4)"), data));
  const MatrixF m = load_npy_f32(dir.file("h.npy"));
  ASSERT_EQ(m.rows(), 2);
  ASSERT_EQ(m.cols(), 4);
  EXPECT_EQ(m(0, 0), 1.0f);
  EXPECT_EQ(m(0, 1), -2.0f);
  EXPECT_EQ(m(0, 2), 0.5f);
  EXPECT_EQ(m(0, 3), 65504.0f);
  EXPECT_EQ(m(1, 0), std::ldexp(1.0f, -24));
  EXPECT_EQ(m(1, 1), 0.0f);
  EXPECT_TRUE(std::signbit(m(1, 1)));
  EXPECT_EQ(m(1, 2), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(m(1, 3)));
  // Every finite half converts to the value its fields define.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 31) continue;
    const double mag = exp == 0 ? std::ldexp(static_cast<double>(mant), -24)
                                : std::ldexp(1.0 + mant / 1024.0, static_cast<int>(exp) - 15);
    const double expect = (h & 0x8000) ? -mag : mag;
    ASSERT_EQ(io::half_to_float(static_cast<std::uint16_t>(h)), static_cast<float>(expect)) << h;
  }
}

TEST(Npy, ReadsFloat64) {
  TempDir dir;
  write_all(dir.file("d.npy"),
            npy_file(1, dict("<f8", false, "(1, 3)"), le_bytes<double>({0.1, -1e30, 3.0})));
  const MatrixF m = load_npy_f32(dir.file("d.npy"));
  EXPECT_EQ(m(0, 0), static_cast<float>(0.1));
  EXPECT_EQ(m(0, 1), static_cast<float>(-1e30));
  EXPECT_EQ(m(0, 2), 3.0f);
  write_all(dir.file("big.npy"),
            npy_file(1, dict("<f8", false, "(1,)"), le_bytes<double>({1e300})));
  EXPECT_THROW(load_npy_f32(dir.file("big.npy")), IoError);
}

TEST(Npy, ReadsFortranOrder) {
  TempDir dir;
  // 2 × 3 matrix [[1, 2, 3], [4, 5, 6]] stored column by column.
  write_all(dir.file("f.npy"),
            npy_file(1, dict("<f4", true, "(2, 3)"), le_bytes<float>({1, 4, 2, 5, 3, 6})));
  MatrixF expect(2, 3);
  expect << 1, 2, 3, 4, 5, 6;
  EXPECT_EQ(load_npy_f32(dir.file("f.npy")), expect);
  write_all(dir.file("fi.npy"), npy_file(1, dict("<i4", true, "(3, 2)"),
                                         le_bytes<std::int32_t>({1, 2, 3, -4, -5, -6})));
  MatrixI32 expect_i(3, 2);
  expect_i << 1, -4, 2, -5, 3, -6;
  EXPECT_EQ(load_npy_i32(dir.file("fi.npy")), expect_i);
  const io::NpyArray raw = io::read_npy(dir.file("fi.npy"));
  EXPECT_TRUE(raw.fortran_order);
  EXPECT_EQ(raw.dtype, io::NpyDtype::kInt32);
  EXPECT_EQ(raw.shape, (std::vector<Index>{3, 2}));
  EXPECT_EQ(raw.bytes.size(), 24u);
}

TEST(Npy, ReadsVersions2And3AndOddSpacing) {
  TempDir dir;
  const std::string data = le_bytes<float>({1.5f, -2.5f});
  MatrixF expect(1, 2);
  expect << 1.5f, -2.5f;
  write_all(dir.file("v2.npy"), npy_file(2, dict("<f4", false, "(1, 2)"), data));
  EXPECT_EQ(load_npy_f32(dir.file("v2.npy")), expect);
  write_all(dir.file("v3.npy"), npy_file(3, dict("<f4", false, "(1, 2)"), data));
  EXPECT_EQ(load_npy_f32(dir.file("v3.npy")), expect);
  // Spacing, key order, double quotes, no trailing comma, Python 2 long suffix, no padding.
  const char* variants[] = {
      "{ \"shape\" : ( 1 , 2 , ) , \"descr\" : \"<f4\" , \"fortran_order\" : False }",
      "{'descr':'<f4','fortran_order':False,'shape':(1L,2L)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n"};
  for (const char* v : variants) {
    write_all(dir.file("s.npy"), npy_file(1, v, data, /*pad=*/false));
    EXPECT_EQ(load_npy_f32(dir.file("s.npy")), expect) << v;
  }
}

TEST(Npy, OneAndZeroDimensionalArraysAreMatrices) {
  TempDir dir;
  write_all(dir.file("v.npy"), npy_file(1, dict("<f4", false, "(3,)"), le_bytes<float>({1, 2, 3})));
  const MatrixF v = load_npy_f32(dir.file("v.npy"));
  EXPECT_EQ(v.rows(), 1);
  EXPECT_EQ(v.cols(), 3);
  EXPECT_EQ(v(0, 2), 3.0f);
  write_all(dir.file("s.npy"), npy_file(1, dict("<i4", false, "()"), le_bytes<std::int32_t>({-7})));
  const MatrixI32 s = load_npy_i32(dir.file("s.npy"));
  ASSERT_EQ(s.rows(), 1);
  ASSERT_EQ(s.cols(), 1);
  EXPECT_EQ(s(0, 0), -7);
}

TEST(Npy, Int8FromInt32OnlyInRange) {
  TempDir dir;
  write_all(dir.file("ok.npy"),
            npy_file(1, dict("<i4", false, "(1, 3)"), le_bytes<std::int32_t>({-128, 0, 127})));
  MatrixI8 expect(1, 3);
  expect << -128, 0, 127;
  EXPECT_EQ(load_npy_i8(dir.file("ok.npy")), expect);
  write_all(dir.file("bad.npy"),
            npy_file(1, dict("<i4", false, "(1, 3)"), le_bytes<std::int32_t>({-128, 128, 0})));
  try {
    load_npy_i8(dir.file("bad.npy"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("128"), std::string::npos) << e.what();
  }
}

// ---- malformed files --------------------------------------------------------------------------

struct Malformed {
  const char* name;
  std::string bytes;
  const char* message;  // a word the error must contain
};

std::vector<Malformed> malformed_files() {
  const std::string good_dict = dict("<f4", false, "(2, 3)");
  const std::string data6 = le_bytes<float>({1, 2, 3, 4, 5, 6});
  const std::string good = npy_file(1, good_dict, data6);
  std::string bad_magic = good;
  bad_magic[1] = 'X';
  std::string bad_version = good;
  bad_version[6] = 4;
  std::string bad_minor = good;
  bad_minor[7] = 1;
  std::string long_header = good.substr(0, 10);
  long_header[8] = static_cast<char>(0xff);
  long_header[9] = static_cast<char>(0xff);
  long_header += "{'descr': '<f4'";
  return {
      {"empty", "", "too short"},
      {"preamble only", good.substr(0, 7), "too short"},
      {"truncated header length", std::string("\x93NUMPY\x02\x00\x10\x00\x00", 11), "truncated"},
      {"truncated header", good.substr(0, 40), "header"},
      {"header length beyond file", long_header, "exceeds"},
      {"huge header length", std::string("\x93NUMPY\x02\x00\x00\x00\x00\x40", 12) + "{}", "limit"},
      {"truncated data", good.substr(0, good.size() - 1), "truncated"},
      {"trailing bytes", good + "x", "trailing"},
      {"bad magic", bad_magic, "magic"},
      {"bad version", bad_version, "version"},
      {"bad minor version", bad_minor, "version"},
      {"huge shape overflowing", npy_file(1, dict("<f4", false, "(4294967296, 4294967296)"), data6),
       "overflow"},
      {"huge shape entry", npy_file(1, dict("<f4", false, "(99999999999999999999999,)"), data6),
       "overflow"},
      {"huge shape not in file", npy_file(1, dict("<f4", false, "(1073741824, 1073741824)"), data6),
       "needs"},
      // Regression (issue 15): zero-size arrays with a huge other dimension made consumers spin.
      {"empty array with a huge dimension",
       npy_file(1, dict("<f4", false, "(4611686018427387904, 0)"), ""), "holds no elements"},
      {"empty array with a huge second dimension",
       npy_file(1, dict("<f4", false, "(0, 4611686018427387904)"), ""), "holds no elements"},
      {"empty array whose other dimensions multiply past the cap",
       npy_file(1, dict("<f4", false, "(65536, 0, 65536)"), ""), "(65536, 0, 65536)"},
      {"shape/size mismatch", npy_file(1, dict("<f4", false, "(3, 3)"), data6), "needs"},
      {"big-endian", npy_file(1, dict(">f4", false, "(2, 3)"), data6), "big-endian"},
      {"big-endian int", npy_file(1, dict(">i4", false, "(2, 3)"), data6), "big-endian"},
      {"unknown dtype", npy_file(1, dict("<c8", false, "(3,)"), data6), "unsupported dtype"},
      {"object dtype", npy_file(1, dict("|O", false, "(6,)"), data6), "unsupported dtype"},
      {"3-D", npy_file(1, dict("<f4", false, "(1, 2, 3)"), data6), "3-D"},
      {"negative shape", npy_file(1, dict("<f4", false, "(-2, 3)"), data6), "non-negative"},
      {"missing key", npy_file(1, "{'descr': '<f4', 'shape': (2, 3), }", data6), "keys"},
      {"extra key",
       npy_file(1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), "
                "'x': 1}",
                data6),
       "unexpected key"},
      {"duplicate key",
       npy_file(1,
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                "'shape': (2, 3)}",
                data6),
       "duplicate"},
      {"fortran_order not bool",
       npy_file(1,
                "{'descr': '<f4', 'fortran_order': 0, "
                "'shape': (2, 3)}",
                data6),
       "True or False"},
      {"unterminated string", npy_file(1, "{'descr: <f4}", data6), "unterminated"},
      {"not a dict", npy_file(1, "[1, 2]", data6), "expected '{'"},
      {"text after dict", npy_file(1, good_dict + " x", data6), "after the closing"},
      {"binary garbage header", npy_file(1, std::string("\0\xff\x01{", 4), data6), "header"},
  };
}

TEST(Npy, MalformedFilesRaiseIoError) {
  TempDir dir;
  for (const Malformed& m : malformed_files()) {
    const std::string path = dir.file("bad.npy");
    write_all(path, m.bytes);
    for (int loader = 0; loader < 2; ++loader) {
      try {
        if (loader == 0)
          load_npy_f32(path);
        else
          io::read_npy(path);
        if (loader == 1 && std::string(m.name) == "3-D") continue;  // read_npy takes any rank
        ADD_FAILURE() << m.name << ": no error";
      } catch (const IoError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path), std::string::npos) << m.name << ": " << what;
        EXPECT_NE(what.find(m.message), std::string::npos) << m.name << ": " << what;
      }
    }
  }
}

TEST(Npy, EmptyArraysWithModestDimensionsStillRead) {
  TempDir dir;
  const std::string path = dir.file("empty.npy");
  write_all(path, npy_file(1, dict("<f4", false, "(0, 16777216)"), ""));
  const MatrixF m = load_npy_f32(path);
  EXPECT_EQ(m.rows(), 0);
  EXPECT_EQ(m.cols(), 16777216);
  write_all(path, npy_file(1, dict("<f4", false, "(4096, 0)"), ""));
  EXPECT_EQ(load_npy_f32(path).rows(), 4096);
}

TEST(Npy, WrongDtypeForTheLoaderRaisesIoError) {
  TempDir dir;
  save_npy(dir.file("f.npy"), MatrixF::Ones(2, 2));
  EXPECT_THROW(load_npy_i8(dir.file("f.npy")), IoError);
  EXPECT_THROW(load_npy_i32(dir.file("f.npy")), IoError);
  try {
    load_npy_i32(dir.file("f.npy"));
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("expected <i4"), std::string::npos) << e.what();
  }
}

TEST(Npy, MissingFileAndDirectoryRaiseIoError) {
  TempDir dir;
  EXPECT_THROW(load_npy_f32(dir.file("nope.npy")), IoError);
  EXPECT_THROW(load_npy_f32(dir.path().string()), IoError);
  EXPECT_THROW(save_npy(dir.file("no/such/dir/x.npy"), MatrixF::Ones(1, 1)), IoError);
}

TEST(Npy, ReadsRealLayerFiles) {
  const auto path = testing::layers_dir() / "layers.0.w2.W.npy";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "real data not found at " << path;
  const MatrixF w = load_npy_f32(path.string());
  EXPECT_EQ(w.rows(), 64);
  EXPECT_EQ(w.cols(), 172);
  EXPECT_TRUE(w.allFinite());
  EXPECT_GT(w.cwiseAbs().maxCoeff(), 0.0f);
}

// ---- atomic writes ----------------------------------------------------------------------------

TEST(AtomicFile, ReplacesTheDestinationOnlyOnCommit) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  io::write_file_atomic(path, "old");
  {
    io::AtomicFile f(path);
    f.write("new contents", 12);
    EXPECT_EQ(read_all(path), "old");  // not visible before commit
    EXPECT_EQ(dir.entries().size(), 2u);
  }  // abandoned: destination untouched, temporary removed
  EXPECT_EQ(read_all(path), "old");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
  io::write_file_atomic(path, "new");
  EXPECT_EQ(read_all(path), "new");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFile, FailedRenameLeavesNoTemporary) {
  TempDir dir;
  const std::string target = dir.file("occupied");
  std::filesystem::create_directory(target);
  std::filesystem::create_directory(target + "/keep");  // a non-empty directory cannot be replaced
  EXPECT_THROW(save_npy(target, MatrixF::Ones(2, 2)), IoError);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"occupied"});
}

}  // namespace
}  // namespace qround
