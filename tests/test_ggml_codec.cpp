// ggml block codecs: golden bytes per block type (derived by hand from ggml-common.h's structs),
// an independent double-precision reading of the block structs (the loops of ggml-quants.c's
// dequantize_row_*, written plainly), encode → decode round trips and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/ggml_codec.hpp"
#include "qround/io/gguf.hpp"
#include "qround/nearest.hpp"
#include "qround/scale_search.hpp"

namespace qround {
namespace {

using Bytes = std::vector<std::uint8_t>;

// "00 3C F0 …" → bytes.
Bytes hex(const std::string& s) {
  Bytes out;
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == ' ') {
      ++i;
      continue;
    }
    out.push_back(static_cast<std::uint8_t>(std::stoul(s.substr(i, 2), nullptr, 16)));
    i += 2;
  }
  return out;
}
void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }
void append(Bytes& b, std::size_t count, std::uint8_t v) { b.insert(b.end(), count, v); }

// ---- an independent reading of the block structs, in double ------------------------------------
// Every product and the one sum are exact in double (fp16 significands times integers of at most
// 13 bits, offsets at most 2^52 apart), so casting to float rounds once, as float32 ggml does.

double half(const std::uint8_t* p) {
  const int h = p[0] | (p[1] << 8);
  const int e = (h >> 10) & 31, man = h & 1023;
  const double v = e == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, e - 25);
  return (h & 0x8000) ? -v : v;
}

// dequantize_row_* of one block, as ggml-quants.c loops over the struct fields.
std::vector<double> ref_block(GgmlType type, const std::uint8_t* x) {
  std::vector<double> y(ggml_traits(type).block);
  switch (type) {
    case GgmlType::kQ4_0: {  // {d; qs[16]}
      const double d = half(x);
      for (int j = 0; j < 16; ++j) {
        y[j] = ((x[2 + j] & 15) - 8) * d;
        y[j + 16] = ((x[2 + j] >> 4) - 8) * d;
      }
      break;
    }
    case GgmlType::kQ4_1: {  // {d; m; qs[16]}
      const double d = half(x), m = half(x + 2);
      for (int j = 0; j < 16; ++j) {
        y[j] = (x[4 + j] & 15) * d + m;
        y[j + 16] = (x[4 + j] >> 4) * d + m;
      }
      break;
    }
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1: {  // {d; [m;] qh[4]; qs[16]}
      const bool one = type == GgmlType::kQ5_1;
      const double d = half(x), m = one ? half(x + 2) : 0.0;
      const std::uint8_t* qh = x + (one ? 4 : 2);
      const std::uint8_t* qs = qh + 4;
      const std::uint32_t h = qh[0] | (qh[1] << 8) | (qh[2] << 16) | (std::uint32_t{qh[3]} << 24);
      for (int j = 0; j < 16; ++j) {
        const int x0 = (qs[j] & 15) | (((h >> j) & 1) << 4);
        const int x1 = (qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4);
        y[j] = one ? x0 * d + m : (x0 - 16) * d;
        y[j + 16] = one ? x1 * d + m : (x1 - 16) * d;
      }
      break;
    }
    case GgmlType::kIQ4_NL: {  // {d; qs[16]}: d · kvalues_iq4nl[nibble] (ggml-common.h)
      static const int kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                      1,    13,   25,  38,  53,  69,  89,  113};
      const double d = half(x);
      for (int j = 0; j < 16; ++j) {
        y[j] = d * kValues[x[2 + j] & 15];
        y[j + 16] = d * kValues[x[2 + j] >> 4];
      }
      break;
    }
    case GgmlType::kQ8_0: {  // {d; int8 qs[32]}
      const double d = half(x);
      for (int j = 0; j < 32; ++j) y[j] = static_cast<std::int8_t>(x[2 + j]) * d;
      break;
    }
    case GgmlType::kQ2_K: {  // {scales[16]; qs[64]; d; dmin}
      const double d = half(x + 80), dmin = half(x + 82);
      int i = 0, is = 0;
      for (int n = 0; n < 2; ++n)
        for (int shift = 0; shift < 8; shift += 2)
          for (int half16 = 0; half16 < 2; ++half16, ++is)
            for (int l = 0; l < 16; ++l) {
              const int q = (x[16 + 32 * n + 16 * half16 + l] >> shift) & 3;
              y[i++] = d * (x[is] & 15) * q - dmin * (x[is] >> 4);
            }
      break;
    }
    case GgmlType::kQ3_K: {  // {hmask[32]; qs[64]; scales[12]; d}
      const double d = half(x + 108);
      const std::uint8_t* s = x + 96;
      int sc[16];
      for (int k = 0; k < 4; ++k) {
        sc[k] = (s[k] & 15) | ((s[8 + k] & 3) << 4);
        sc[k + 4] = (s[4 + k] & 15) | (((s[8 + k] >> 2) & 3) << 4);
        sc[k + 8] = (s[k] >> 4) | (((s[8 + k] >> 4) & 3) << 4);
        sc[k + 12] = (s[4 + k] >> 4) | (((s[8 + k] >> 6) & 3) << 4);
      }
      int i = 0, is = 0, bit = 0;
      for (int n = 0; n < 2; ++n)
        for (int shift = 0; shift < 8; shift += 2, ++bit)
          for (int half16 = 0; half16 < 2; ++half16, ++is)
            for (int l = 16 * half16; l < 16 * half16 + 16; ++l) {
              const int q = ((x[32 + 32 * n + l] >> shift) & 3) - (((x[l] >> bit) & 1) ? 0 : 4);
              y[i++] = d * (sc[is] - 32) * q;
            }
      break;
    }
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: {  // {d; dmin; scales[12]; [qh[32];] qs[128]}
      const bool five = type == GgmlType::kQ5_K;
      const double d = half(x), dmin = half(x + 2);
      const std::uint8_t* s = x + 4;
      const std::uint8_t* qh = x + 16;
      const std::uint8_t* qs = x + (five ? 48 : 16);
      int i = 0;
      for (int j = 0; j < 8; ++j) {
        const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        for (int l = 0; l < 32; ++l) {
          int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
          if (five && ((qh[l] >> j) & 1)) q += 16;
          y[i++] = d * sc * q - dmin * m;
        }
      }
      break;
    }
    case GgmlType::kQ6_K: {  // {ql[128]; qh[64]; int8 scales[16]; d}
      const double d = half(x + 208);
      for (int n = 0; n < 2; ++n) {
        const std::uint8_t* ql = x + 64 * n;
        const std::uint8_t* qh = x + 128 + 32 * n;
        const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(x + 192 + 8 * n);
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[128 * n + l] = d * sc[is] * q1;
          y[128 * n + l + 32] = d * sc[is + 2] * q2;
          y[128 * n + l + 64] = d * sc[is + 4] * q3;
          y[128 * n + l + 96] = d * sc[is + 6] * q4;
        }
      }
      break;
    }
    default:
      ADD_FAILURE() << "no reference for " << to_string(type);
  }
  return y;
}

// The whole tensor through ref_block, as float.
MatrixF ref_dequantize(GgmlType type, const Bytes& bytes, Index rows, Index cols) {
  const GgmlTypeTraits& t = ggml_traits(type);
  MatrixF out(rows, cols);
  const Index blocks = cols / t.block;
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < blocks; ++b) {
      const auto y = ref_block(type, bytes.data() + (r * blocks + b) * t.block_bytes);
      for (int e = 0; e < t.block; ++e) out(r, b * t.block + e) = static_cast<float>(y[e]);
    }
  return out;
}

void expect_bits_equal(const MatrixF& a, const MatrixF& b, const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows());
  ASSERT_EQ(a.cols(), b.cols());
  for (Index r = 0; r < a.rows(); ++r)
    for (Index c = 0; c < a.cols(); ++c)
      if (float_bits(a(r, c)) != float_bits(b(r, c))) {
        ADD_FAILURE() << what << ": (" << r << ", " << c << ") " << a(r, c) << " vs " << b(r, c);
        return;
      }
}

MatrixF levels(const MatrixI8& codes, const Grid& grid) {
  MatrixF out(codes.rows(), codes.cols());
  for (Index r = 0; r < codes.rows(); ++r)
    for (Index c = 0; c < codes.cols(); ++c) out(r, c) = grid.level(r, c, codes(r, c));
  return out;
}

// ---- golden bytes ---------------------------------------------------------------------------

struct Golden {
  Grid grid;
  MatrixI8 codes;
};

Golden golden_block(GgmlType type) {
  const GgmlTypeTraits& t = ggml_traits(type);
  return {empty_format_grid(type, 1, t.block), MatrixI8::Zero(1, t.block)};
}

// Encodes, compares every byte, then decodes the expected bytes back to the same codes and grid.
void check_golden(Golden& g, const Bytes& expect) {
  derive_format_levels(g.grid);
  const GgmlType type = *g.grid.format;
  ASSERT_EQ(expect.size(), static_cast<std::size_t>(ggml_traits(type).block_bytes));
  const Bytes got = encode_ggml(g.codes, g.grid);
  ASSERT_EQ(got.size(), expect.size());
  for (std::size_t i = 0; i < expect.size(); ++i)
    EXPECT_EQ(int{got[i]}, int{expect[i]}) << to_string(type) << " byte " << i;
  const QuantizedLayer back = decode_ggml_codes(type, expect, 1, g.codes.cols());
  EXPECT_TRUE(back.codes == g.codes) << to_string(type);
  EXPECT_TRUE(back.grid.stored.d == g.grid.stored.d);
  EXPECT_TRUE(back.grid.stored.dmin == g.grid.stored.dmin);
  EXPECT_TRUE(back.grid.stored.sc == g.grid.stored.sc);
  EXPECT_TRUE(back.grid.stored.m == g.grid.stored.m);
  EXPECT_NO_THROW(back.grid.validate(1, g.codes.cols()));
  expect_bits_equal(dequantize_ggml(type, expect, 1, g.codes.cols()), levels(g.codes, g.grid),
                    std::string(to_string(type)) + " golden levels");
}

TEST(GgmlCodec, GoldenQ4_0) {
  Golden g = golden_block(GgmlType::kQ4_0);
  g.grid.stored.d(0, 0) = -0.5f;                                                      // fp16 0xB800
  for (int e = 0; e < 16; ++e) g.codes(0, e) = static_cast<std::int8_t>(e - 8);       // stored e
  for (int j = 0; j < 16; ++j) g.codes(0, 16 + j) = static_cast<std::int8_t>(7 - j);  // 15 − j
  // qs[j] = input j in the low nibble, input j + 16 in the high one.
  check_golden(g, hex("00 B8 F0 E1 D2 C3 B4 A5 96 87 78 69 5A 4B 3C 2D 1E 0F"));
}

TEST(GgmlCodec, GoldenQ4_1) {
  Golden g = golden_block(GgmlType::kQ4_1);
  g.grid.stored.d(0, 0) = 0.25f;     // 0x3400
  g.grid.stored.dmin(0, 0) = -3.0f;  // m, 0xC200
  for (int e = 0; e < 16; ++e) g.codes(0, e) = static_cast<std::int8_t>(e);
  for (int j = 0; j < 16; ++j) g.codes(0, 16 + j) = static_cast<std::int8_t>((j + 5) % 16);
  check_golden(g, hex("00 34 00 C2 50 61 72 83 94 A5 B6 C7 D8 E9 FA 0B 1C 2D 3E 4F"));
}

// Stored 5-bit values u for the q5 goldens: u[j] = j but u[5] = 21; u[16 + j] = 16 + (j + 3) % 16
// but u[18] = 5. Fifth bits: only input 5 below 16, every input from 16 up but 18:
// qh = 0xFFFB0020; qs[j] = j | (j + 3) % 16 << 4.
std::vector<int> q5_golden_values() {
  std::vector<int> u(32);
  for (int j = 0; j < 16; ++j) {
    u[j] = j;
    u[16 + j] = 16 + (j + 3) % 16;
  }
  u[5] = 21;
  u[18] = 5;
  return u;
}
const char* const kQ5Tail = "20 00 FB FF 30 41 52 63 74 85 96 A7 B8 C9 DA EB FC 0D 1E 2F";

TEST(GgmlCodec, GoldenQ5_0) {
  Golden g = golden_block(GgmlType::kQ5_0);
  g.grid.stored.d(0, 0) = 1.5f;  // 0x3E00
  const auto u = q5_golden_values();
  for (int e = 0; e < 32; ++e) g.codes(0, e) = static_cast<std::int8_t>(u[e] - 16);
  check_golden(g, hex(std::string("00 3E ") + kQ5Tail));
}

TEST(GgmlCodec, GoldenQ5_1) {
  Golden g = golden_block(GgmlType::kQ5_1);
  g.grid.stored.d(0, 0) = std::ldexp(1.0f, -10);    // 0x1400
  g.grid.stored.dmin(0, 0) = round_to_fp16(-0.1f);  // m, 0xAE66
  const auto u = q5_golden_values();
  for (int e = 0; e < 32; ++e) g.codes(0, e) = static_cast<std::int8_t>(u[e]);
  check_golden(g, hex(std::string("00 14 66 AE ") + kQ5Tail));
}

TEST(GgmlCodec, GoldenIQ4_NL) {
  Golden g = golden_block(GgmlType::kIQ4_NL);
  g.grid.stored.d(0, 0) = -0.75f;  // fp16 0xBA00: ggml's quantizer may store a negative d
  for (int e = 0; e < 16; ++e) g.codes(0, e) = static_cast<std::int8_t>(e);  // the table index
  for (int j = 0; j < 16; ++j) g.codes(0, 16 + j) = static_cast<std::int8_t>((j + 9) % 16);
  // qs[j] = input j in the low nibble, input j + 16 in the high one (dequantize_row_iq4_nl).
  check_golden(g, hex("00 BA 90 A1 B2 C3 D4 E5 F6 07 18 29 3A 4B 5C 6D 7E 8F"));
  // The levels themselves: d · kvalues_iq4nl[n], written out.
  const MatrixF y = dequantize_ggml(
      GgmlType::kIQ4_NL, hex("00 BA 90 A1 B2 C3 D4 E5 F6 07 18 29 3A 4B 5C 6D 7E 8F"), 1, 32);
  EXPECT_EQ(y(0, 0), -0.75f * -127);
  EXPECT_EQ(y(0, 8), -0.75f * 1);
  EXPECT_EQ(y(0, 15), -0.75f * 113);
  EXPECT_EQ(y(0, 16), -0.75f * 13);    // code 9
  EXPECT_EQ(y(0, 22), -0.75f * 113);   // code 15
  EXPECT_EQ(y(0, 23), -0.75f * -127);  // code 0
  // A block of d = 0 (what ggml stores for an all-zero block) decodes to zeros and is a valid
  // grid: iq4_nl has no zero level, so d = 0 is the only way to store exact zeros.
  const QuantizedLayer z = decode_ggml_codes(GgmlType::kIQ4_NL, Bytes(18, 0), 1, 32);
  EXPECT_NO_THROW(z.grid.validate(1, 32));
  EXPECT_EQ(z.grid.code(0, 5, 0.3f), 0);
  EXPECT_EQ(dequantize_ggml(GgmlType::kIQ4_NL, Bytes(18, 0), 1, 32).cwiseAbs().maxCoeff(), 0.0f);
}

TEST(GgmlCodec, GoldenQ8_0) {
  Golden g = golden_block(GgmlType::kQ8_0);
  g.grid.stored.d(0, 0) = 3.0f;  // 0x4200
  g.codes(0, 0) = -128;
  g.codes(0, 1) = 127;
  for (int e = 2; e < 32; ++e) g.codes(0, e) = static_cast<std::int8_t>(e - 16);
  check_golden(g, hex("00 42 80 7F F2 F3 F4 F5 F6 F7 F8 F9 FA FB FC FD FE FF 00 01 02 03 04 05 06 "
                      "07 08 09 0A 0B 0C 0D 0E 0F"));
}

// K-quant codes: a background that depends on where an input sits in the block, and a few inputs
// set apart, so every region of every plane is pinned.
void set_codes(Golden& g, int (*background)(int e),
               std::initializer_list<std::pair<int, int>> set) {
  for (int e = 0; e < 256; ++e) g.codes(0, e) = static_cast<std::int8_t>(background(e));
  for (const auto& [e, v] : set) g.codes(0, e) = static_cast<std::int8_t>(v);
}

TEST(GgmlCodec, GoldenQ2_K) {
  Golden g = golden_block(GgmlType::kQ2_K);
  g.grid.stored.d(0, 0) = 0.5f;      // 0x3800
  g.grid.stored.dmin(0, 0) = -1.0f;  // 0xBC00
  for (int k = 0; k < 16; ++k) {
    g.grid.stored.sc(0, k) = k % 15 + 1;
    g.grid.stored.m(0, k) = 15 - k;
  }
  // Input 128h + 32j + l sits in qs[32h + l] at bits 2j; background code j → every byte 0xE4.
  set_codes(g, [](int e) { return (e % 128) / 32; }, {{0, 3}, {47, 0}, {255, 0}, {130, 2}});
  Bytes expect = hex("F1 E2 D3 C4 B5 A6 97 88 79 6A 5B 4C 3D 2E 1F 01");  // sc | m << 4
  append(expect, 64, 0xE4);
  expect[16 + 0] = 0xE7;   // input 0 → 3 at bits 0-1
  expect[16 + 15] = 0xE0;  // input 47 (j 1, l 15) → 0 at bits 2-3
  expect[16 + 63] = 0x24;  // input 255 (h 1, j 3, l 31) → 0 at bits 6-7
  expect[16 + 34] = 0xE6;  // input 130 (h 1, j 0, l 2) → 2 at bits 0-1
  append(expect, hex("00 38 00 BC"));
  check_golden(g, expect);
}

TEST(GgmlCodec, GoldenQ3_K) {
  Golden g = golden_block(GgmlType::kQ3_K);
  g.grid.stored.d(0, 0) = 0.75f;  // 0x3A00
  const int sc[16] = {0, 1, 15, 16, 31, 33, 47, 48, 63, 62, 17, 2, 40, 20, 10, 5};
  for (int k = 0; k < 16; ++k) g.grid.stored.sc(0, k) = sc[k];
  // Background by j = (e % 128) / 32: 3, −4, −2, 1 → low bits 3, 0, 2, 1 (qs byte 0x63), high
  // bits 1, 0, 0, 1 (hmask bits j and 4 + j: 0x99).
  set_codes(g,
            [](int e) {
              return std::vector<int>{3, -4, -2, 1}[(e % 128) / 32];
            },
            {{0, -4}, {159, 0}, {101, -1}, {255, -4}});
  Bytes expect;
  append(expect, 32, 0x99);  // hmask
  expect[0] = 0x98;          // input 0 → −4: high bit 0 cleared
  expect[5] = 0x91;          // input 101 (h 0, j 3, l 5) → −1: bit 3 cleared
  expect[31] = 0x19;         // input 255 (h 1, j 3) → −4: bit 7 cleared; input 159 keeps bit 4
  append(expect, 64, 0x63);  // qs
  expect[32 + 0] = 0x60;     // input 0: low bits 0
  expect[32 + 5] = 0xE3;     // input 101: low bits 3 at bits 6-7
  expect[32 + 63] = 0x20;    // inputs 159 (bits 0-1 → 0) and 255 (bits 6-7 → 0)
  append(expect, hex("F0 E1 1F 20 8F 41 AF 50 B4 78 18 0D"));  // scales
  append(expect, hex("00 3A"));
  check_golden(g, expect);
}

// The q4_K / q5_K sub-block scales and mins and their 12 packed bytes:
//   q[j] = sc_j | (sc_{j+4} >> 4) << 6, q[j+4] = m_j | (m_{j+4} >> 4) << 6,
//   q[j+8] = (sc_{j+4} & 15) | (m_{j+4} & 15) << 4.
const int kK4Sc[8] = {1, 2, 3, 63, 16, 33, 47, 62};
const int kK4M[8] = {0, 63, 5, 7, 48, 17, 32, 15};
const char* const kK4Scales = "41 82 83 FF C0 7F 85 07 00 11 0F FE";

TEST(GgmlCodec, GoldenQ4_K) {
  Golden g = golden_block(GgmlType::kQ4_K);
  g.grid.stored.d(0, 0) = 1.0f;     // 0x3C00
  g.grid.stored.dmin(0, 0) = 0.5f;  // 0x3800
  for (int k = 0; k < 8; ++k) {
    g.grid.stored.sc(0, k) = kK4Sc[k];
    g.grid.stored.m(0, k) = kK4M[k];
  }
  // Sub-block k codes k + 1; qs[32c + l] = sub-block 2c low, 2c + 1 high.
  set_codes(g, [](int e) { return e / 32 + 1; }, {{0, 15}, {33, 0}, {255, 15}, {200, 0}});
  Bytes expect = hex(std::string("00 3C 00 38 ") + kK4Scales);
  for (std::uint8_t v : {0x21, 0x43, 0x65, 0x87}) append(expect, 32, v);
  expect[16 + 0] = 0x2F;    // input 0 → 15
  expect[16 + 1] = 0x01;    // input 33 (sub-block 1, l 1) → 0 in the high nibble
  expect[16 + 104] = 0x80;  // input 200 (c 3, low, l 8) → 0
  expect[16 + 127] = 0xF7;  // input 255 → 15 in the high nibble
  check_golden(g, expect);
}

TEST(GgmlCodec, GoldenQ5_K) {
  Golden g = golden_block(GgmlType::kQ5_K);
  g.grid.stored.d(0, 0) = -1.0f;    // 0xBC00
  g.grid.stored.dmin(0, 0) = 2.0f;  // 0x4000
  for (int k = 0; k < 8; ++k) {
    g.grid.stored.sc(0, k) = kK4Sc[k];
    g.grid.stored.m(0, k) = kK4M[k];
  }
  // Sub-block k codes 17 + k: fifth bit set everywhere (qh 0xFF), low nibbles k + 1.
  set_codes(g, [](int e) { return 17 + e / 32; }, {{0, 0}, {63, 31}, {100, 15}, {255, 16}});
  Bytes expect = hex(std::string("00 BC 00 40 ") + kK4Scales);
  append(expect, 32, 0xFF);  // qh: input 64c + 32·half + l at qh[l] bit 2c + half
  expect[16 + 0] = 0xFE;     // input 0 → 0: bit 0 of qh[0]
  expect[16 + 4] = 0xF7;     // input 100 (c 1, half 1, l 4) → 15: bit 3 of qh[4]
  for (std::uint8_t v : {0x21, 0x43, 0x65, 0x87}) append(expect, 32, v);
  expect[48 + 0] = 0x20;    // input 0: low nibble 0
  expect[48 + 31] = 0xF1;   // input 63 → 31: high nibble F of qs[31]
  expect[48 + 36] = 0xF3;   // input 100: high nibble F of qs[36]
  expect[48 + 127] = 0x07;  // input 255 → 16: high nibble 0 of qs[127]
  check_golden(g, expect);
}

TEST(GgmlCodec, GoldenQ6_K) {
  Golden g = golden_block(GgmlType::kQ6_K);
  g.grid.stored.d(0, 0) = -0.25f;  // 0xB400
  const int sc[16] = {-128, 127, -1, 1, 2, -2, 64, -64, 100, -100, 5, 6, 7, 8, 9, 10};
  for (int k = 0; k < 16; ++k) g.grid.stored.sc(0, k) = sc[k];
  // By quarter q = (e % 128) / 32 stored u = n + 32: 0x00, 0x3F, 0x15, 0x2A.
  // ql[64h + l] = u_q0 low | u_q2 low << 4 = 0x50, ql[64h + 32 + l] = 0xAF;
  // qh[32h + l] = u_q0 hi | u_q1 hi << 2 | u_q2 hi << 4 | u_q3 hi << 6 = 0x9C.
  set_codes(g,
            [](int e) {
              return std::vector<int>{-32, 31, -11, 10}[(e % 128) / 32];
            },
            {{0, 31}, {255, -32}, {70, 0}, {161, -1}});
  Bytes expect;
  for (int h = 0; h < 2; ++h) {
    append(expect, 32, 0x50);
    append(expect, 32, 0xAF);
  }
  append(expect, 64, 0x9C);
  expect[0] = 0x5F;         // input 0 → 31 (u 0x3F): low nibble F
  expect[128 + 0] = 0x9F;   //   and bits 0-1 of qh[0] → 3
  expect[127] = 0x0F;       // input 255 → −32 (u 0): high nibble of ql[127]
  expect[128 + 63] = 0x1C;  //   and bits 6-7 of qh[63]
  expect[6] = 0x00;         // input 70 (h 0, q 2, l 6) → 0 (u 0x20): high nibble of ql[6]
  expect[128 + 6] = 0xAC;   //   and bits 4-5 of qh[6] → 2
  expect[128 + 33] = 0x94;  // input 161 (h 1, q 1, l 1) → −1 (u 0x1F): bits 2-3 of qh[33] → 1
  append(expect, hex("80 7F FF 01 02 FE 40 C0 64 9C 05 06 07 08 09 0A"));  // int8 scales
  append(expect, hex("00 B4"));
  check_golden(g, expect);
}

TEST(GgmlCodec, FloatTypesDequantizeAsTheirBitsSay) {
  // 1.0, −2.5, the smallest fp16 subnormal, 65504 (f16); 1.0, −2.5 in bf16 and f32, little endian.
  const Bytes f16 = hex("00 3C 00 C1 01 00 FF 7B");
  const MatrixF a = dequantize_ggml(GgmlType::kF16, f16, 2, 2);
  EXPECT_EQ(a(0, 0), 1.0f);
  EXPECT_EQ(a(0, 1), -2.5f);
  EXPECT_EQ(a(1, 0), std::ldexp(1.0f, -24));
  EXPECT_EQ(a(1, 1), 65504.0f);
  const MatrixF b = dequantize_ggml(GgmlType::kBF16, hex("80 3F 20 C0"), 1, 2);
  EXPECT_EQ(b(0, 0), 1.0f);
  EXPECT_EQ(b(0, 1), -2.5f);
  const MatrixF c = dequantize_ggml(GgmlType::kF32, hex("00 00 80 3F 00 00 20 C0"), 2, 1);
  EXPECT_EQ(c(0, 0), 1.0f);
  EXPECT_EQ(c(1, 0), -2.5f);
}

// ---- random grids against the reference -----------------------------------------------------

// A nonzero finite fp16 value of either sign; a quarter of the time one of the extremes.
float random_half(detail::Rng& rng) {
  static const std::uint16_t kExtremes[] = {0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3C00};
  std::uint16_t h = rng.below(4) == 0 ? kExtremes[rng.below(5)]
                                      : static_cast<std::uint16_t>(1 + rng.below(0x7BFF));
  if (rng.below(2)) h |= 0x8000;
  return fp16_to_fp32(h);
}
// An integer in [lo, hi], a third of the time one of the ends.
std::int32_t random_int(detail::Rng& rng, std::int32_t lo, std::int32_t hi) {
  const auto k = rng.below(6);
  if (k == 0) return lo;
  if (k == 1) return hi;
  return lo + static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(hi - lo + 1)));
}

// A valid random grid (every level scale nonzero, so encode_ggml accepts it) and codes over the
// whole range, both ends included.
Golden random_layer(GgmlType type, Index rows, Index cols, std::uint64_t seed) {
  const GgmlTypeTraits& t = ggml_traits(type);
  detail::Rng rng(seed, static_cast<std::uint64_t>(type));
  Golden g{empty_format_grid(type, rows, cols), MatrixI8(rows, cols)};
  FormatParams& p = g.grid.stored;
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < p.d.cols(); ++b) {
      p.d(r, b) = random_half(rng);
      if (t.has_offset) p.dmin(r, b) = rng.below(8) == 0 ? 0.0f : random_half(rng);
    }
  const std::int32_t smax = (1 << t.scale_bits) - 1;
  for (Index r = 0; r < p.sc.rows(); ++r)
    for (Index k = 0; k < p.sc.cols(); ++k) {
      std::int32_t s = 0;
      if (type == GgmlType::kQ6_K) {
        while (s == 0) s = random_int(rng, -128, 127);
      } else if (type == GgmlType::kQ3_K) {
        for (s = 32; s == 32;) s = random_int(rng, 0, 63);
      } else {
        while (s == 0) s = random_int(rng, 0, smax);
      }
      p.sc(r, k) = s;
      if (t.has_offset) p.m(r, k) = random_int(rng, 0, smax);
    }
  derive_format_levels(g.grid);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      g.codes(r, c) = static_cast<std::int8_t>(random_int(rng, t.qmin, t.qmax));
  return g;
}

TEST(GgmlCodec, RandomGridsMatchTheReferenceAndTheGridLevels) {
  for (GgmlType type : ggml_quantized_types()) {
    SCOPED_TRACE(to_string(type));
    const Index cols = 2 * ggml_traits(type).block;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      const Golden g = random_layer(type, 3, cols, seed);
      const Bytes bytes = encode_ggml(g.codes, g.grid);
      ASSERT_EQ(bytes.size(), 3 * ggml_row_bytes(type, cols));
      const MatrixF ours = dequantize_ggml(type, bytes, 3, cols);
      expect_bits_equal(ours, ref_dequantize(type, bytes, 3, cols), "dequantize_ggml vs reference");
      expect_bits_equal(ours, levels(g.codes, g.grid), "dequantize_ggml vs Grid::level");
      if (HasFailure()) return;
    }
  }
}

TEST(GgmlCodec, EncodeDecodeRoundTripsCodesAndStoredParameters) {
  for (GgmlType type : ggml_quantized_types()) {
    SCOPED_TRACE(to_string(type));
    const Index rows = 5, cols = 3 * ggml_traits(type).block;
    const Golden g = random_layer(type, rows, cols, 99);
    const Bytes bytes = encode_ggml(QuantizedLayer{g.codes, g.grid, {}});
    const QuantizedLayer back = decode_ggml_codes(type, bytes, rows, cols);
    EXPECT_TRUE(back.codes == g.codes);
    EXPECT_TRUE(back.grid.stored.d == g.grid.stored.d);
    EXPECT_TRUE(back.grid.stored.dmin == g.grid.stored.dmin);
    EXPECT_TRUE(back.grid.stored.sc == g.grid.stored.sc);
    EXPECT_TRUE(back.grid.stored.m == g.grid.stored.m);
    expect_bits_equal(back.grid.scales, g.grid.scales, "derived scales");
    if (g.grid.has_offsets()) expect_bits_equal(back.grid.offsets, g.grid.offsets, "offsets");
    EXPECT_NO_THROW(back.grid.validate(rows, cols));
    EXPECT_TRUE(encode_ggml(back) == bytes);  // and back to the same bytes
  }
}

// Any bytes at all (finite fp16 parameters), including zero scales a grid would refuse to encode:
// dequantize_ggml is the reference's reading, and the decoded grid's levels.
TEST(GgmlCodec, ArbitraryBytesDequantizeAsTheReferenceAndTheDecodedGrid) {
  detail::Rng rng(7);
  for (GgmlType type : ggml_quantized_types()) {
    SCOPED_TRACE(to_string(type));
    const GgmlTypeTraits& t = ggml_traits(type);
    const Index rows = 4, cols = 2 * t.block;
    Bytes bytes(ggml_tensor_bytes(type, rows, cols));
    for (int trial = 0; trial < 10; ++trial) {
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.below(256));
      // Overwrite the fp16 fields with finite values (their offsets in each struct).
      std::vector<int> halves;
      switch (type) {
        case GgmlType::kQ4_1:
        case GgmlType::kQ5_1:
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K:
          halves = {0, 2};
          break;
        case GgmlType::kQ2_K:
          halves = {80, 82};
          break;
        case GgmlType::kQ3_K:
          halves = {108};
          break;
        case GgmlType::kQ6_K:
          halves = {208};
          break;
        default:
          halves = {0};
      }
      for (std::size_t blk = 0; blk < bytes.size() / t.block_bytes; ++blk)
        for (int off : halves) {
          const std::uint16_t h = fp32_to_fp16(random_half(rng));
          bytes[blk * t.block_bytes + off] = static_cast<std::uint8_t>(h & 0xff);
          bytes[blk * t.block_bytes + off + 1] = static_cast<std::uint8_t>(h >> 8);
        }
      const MatrixF ours = dequantize_ggml(type, bytes, rows, cols);
      expect_bits_equal(ours, ref_dequantize(type, bytes, rows, cols), "vs reference");
      const QuantizedLayer dec = decode_ggml_codes(type, bytes, rows, cols);
      expect_bits_equal(ours, levels(dec.codes, dec.grid), "vs decoded Grid::level");
      if (HasFailure()) return;
    }
  }
}

// iq4_nl through a whole GGUF file: searched grid and nearest codes → blocks → file bytes → parsed
// → decoded: the same codes, stored d and levels (Grid::level of the original == dequantize_ggml).
TEST(GgmlCodec, Iq4NlThroughAGgufFileKeepsCodesAndLevels) {
  detail::Rng rng(21);
  const Index rows = 6, cols = 128;
  MatrixF w(rows, cols);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) w(r, c) = static_cast<float>(0.05 * rng.normal());
  w.block(2, 32, 1, 32).setZero();  // an all-zero block: d = 0
  const Grid g = make_grid(w, GridSpec::for_format(GgmlType::kIQ4_NL, ScaleSearch::kMinMax));
  const MatrixI8 codes = quantize(w, g);
  EXPECT_EQ(g.stored.d(2, 1), 0.0f);
  const Bytes blocks = encode_ggml(codes, g);
  io::GgufFile f;
  io::set_standard_metadata(f, "test");
  f.add_tensor("blk.0.w", GgmlType::kIQ4_NL, {cols, rows}, blocks.data(), blocks.size());
  const io::GgufFile back = io::parse_gguf(io::serialize_gguf(f), "iq4_nl file");
  const io::GgufTensor& t = back.tensor("blk.0.w");
  ASSERT_EQ(t.type, GgmlType::kIQ4_NL);
  ASSERT_EQ(t.bytes(), static_cast<std::size_t>(rows * (cols / 32) * 18));
  const QuantizedLayer dec = decode_ggml_codes(t.type, t.data(), t.bytes(), t.rows(), t.cols());
  EXPECT_TRUE(dec.codes == codes);
  EXPECT_TRUE(dec.grid.stored.d == g.stored.d);
  EXPECT_NO_THROW(dec.grid.validate(rows, cols));
  const MatrixF engine = dequantize_ggml(t.type, t.data(), t.bytes(), t.rows(), t.cols());
  expect_bits_equal(engine, levels(codes, g), "file levels vs Grid::level");
  expect_bits_equal(engine, fake_quant(w, g), "file levels vs fake_quant");
  expect_bits_equal(engine, ref_dequantize(GgmlType::kIQ4_NL, blocks, rows, cols), "vs reference");
}

// ---- bad input ---------------------------------------------------------------------------------

template <typename E, typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << " lacks " << p;
  }
}

TEST(GgmlCodec, WrongByteCountsAreIoErrorsNamingBothSizes) {
  const Bytes short_q4(2 * 18 * 2 - 1);  // 2 rows of 64 q4_0 inputs need 72 bytes
  expect_error<IoError>([&] { dequantize_ggml(GgmlType::kQ4_0, short_q4, 2, 64); },
                        {"72", "71", "q4_0"});
  expect_error<IoError>([&] { decode_ggml_codes(GgmlType::kQ4_0, short_q4, 2, 64); }, {"72", "71"});
  expect_error<IoError>([&] { dequantize_ggml(GgmlType::kF16, Bytes(7), 2, 2); }, {"8", "7"});
  expect_error<IoError>([&] { dequantize_ggml(GgmlType::kF32, Bytes(17), 2, 2); }, {"16", "17"});
  expect_error<IoError>([&] { dequantize_ggml(GgmlType::kQ6_K, Bytes(211), 1, 256); },
                        {"210", "211"});
}

TEST(GgmlCodec, RowsThatAreNotWholeBlocksAreRefused) {
  expect_error<InvalidArgument>([] { dequantize_ggml(GgmlType::kQ4_K, Bytes(144), 1, 100); },
                                {"100", "256"});
  expect_error<InvalidArgument>([] { decode_ggml_codes(GgmlType::kQ8_0, Bytes(34), 1, 33); },
                                {"33", "32"});
  expect_error<InvalidArgument>([] { empty_format_grid(GgmlType::kQ5_0, 1, 48); }, {"48"});
  expect_error<InvalidArgument>([] { ggml_tensor_bytes(GgmlType::kQ4_0, -1, 32); }, {"-1"});
}

TEST(GgmlCodec, CodesOutsideTheFormatAreRefusedWithTheirPosition) {
  Golden g = random_layer(GgmlType::kQ4_0, 2, 64, 3);
  g.codes(1, 37) = 8;
  expect_error<InvalidArgument>([&] { encode_ggml(g.codes, g.grid); },
                                {"8", "(1, 37)", "q4_0", "[-8, 7]"});
  Golden k = random_layer(GgmlType::kQ3_K, 1, 256, 3);
  k.codes(0, 255) = -5;
  expect_error<InvalidArgument>([&] { encode_ggml(k.codes, k.grid); }, {"-5", "(0, 255)"});
  Golden six = random_layer(GgmlType::kQ6_K, 1, 256, 3);
  six.codes(0, 0) = 32;
  expect_error<InvalidArgument>([&] { encode_ggml(six.codes, six.grid); }, {"32", "(0, 0)"});
}

TEST(GgmlCodec, GridsWithoutAFormatOrOfTheWrongShapeAreRefused) {
  Golden g = random_layer(GgmlType::kQ4_K, 2, 256, 5);
  Grid plain = g.grid;
  plain.format.reset();
  expect_error<InvalidArgument>([&] { encode_ggml(g.codes, plain); }, {"no storage format"});
  expect_error<InvalidArgument>([&] { encode_ggml(MatrixI8::Zero(3, 256), g.grid); }, {"2", "3"});
  Grid stale = g.grid;
  stale.scales(0, 0) *= 2.0f;  // levels no longer what the stored parameters give
  expect_error<InvalidArgument>([&] { encode_ggml(g.codes, stale); }, {"stored"});
  expect_error<InvalidArgument>([] { decode_ggml_codes(GgmlType::kF16, Bytes(4), 1, 2); },
                                {"f16", "float"});
  expect_error<InvalidArgument>([] { empty_format_grid(GgmlType::kBF16, 1, 2); }, {"bf16"});
}

TEST(GgmlCodec, NonFiniteStoredParametersInBytesAreIoErrors) {
  Bytes bytes(18, 0);
  bytes[1] = 0x7C;  // d = +Inf
  expect_error<IoError>([&] { decode_ggml_codes(GgmlType::kQ4_0, bytes, 1, 32); },
                        {"q4_0", "block 0", "row 0", "d"});
  Bytes k(144, 0);
  k[0] = 0x00;
  k[1] = 0x3C;
  k[3] = 0x7E;  // dmin = NaN
  expect_error<IoError>([&] { decode_ggml_codes(GgmlType::kQ4_K, k, 1, 256); }, {"dmin"});
}

}  // namespace
}  // namespace qround
