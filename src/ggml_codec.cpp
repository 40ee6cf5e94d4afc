// ggml block codecs. Every layout fact below is from ggml/src/ggml-common.h (the block_* structs,
// field order; block_iq4_nl and kvalues_iq4nl, see format.hpp) and ggml/src/ggml-quants.c
// (dequantize_row_*, get_scale_min_k4: which bits of which byte hold input e); the code is qround's
// own. Each block goes through one neutral form, Block, so encode, decode and dequantize share a
// single pack / unpack per type.
#include "qround/ggml_codec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "qround/error.hpp"

namespace qround {
namespace {

constexpr int kQK = 256;  // QK_K

// One block as the level formula sees it: codes n, fp16 bit patterns of d and dmin (q4_1 / q5_1:
// m), the integer sub-block scales and mins exactly as stored (q3_k: 0..63, q6_k: −128..127).
struct Block {
  std::int32_t n[kQK];
  std::uint16_t d = 0, dmin = 0;
  std::int32_t sc[16], m[16];
};

inline void put_half(std::uint8_t* p, std::uint16_t h) {
  p[0] = static_cast<std::uint8_t>(h & 0xffu);
  p[1] = static_cast<std::uint8_t>(h >> 8);
}
inline std::uint16_t get_half(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

// Nibbles of 32-blocks: qs[j] low = input j, high = input j + 16 (dequantize_row_q4_0).
void pack_nibbles32(const std::int32_t* u, std::uint8_t* qs) {
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<std::uint8_t>((u[j] & 0xf) | ((u[j + 16] & 0xf) << 4));
}
void unpack_nibbles32(const std::uint8_t* qs, std::int32_t* u) {
  for (int j = 0; j < 16; ++j) {
    u[j] = qs[j] & 0xf;
    u[j + 16] = qs[j] >> 4;
  }
}
// q5_0 / q5_1 fifth bits: qh as a little-endian uint32, bit e = bit 4 of input e.
void pack_qh32(const std::int32_t* u, std::uint8_t* qh) {
  for (int b = 0; b < 4; ++b) qh[b] = 0;
  for (int e = 0; e < 32; ++e) qh[e / 8] |= static_cast<std::uint8_t>(((u[e] >> 4) & 1) << (e % 8));
}
void unpack_qh32(const std::uint8_t* qh, std::int32_t* u) {
  for (int e = 0; e < 32; ++e) u[e] |= ((qh[e / 8] >> (e % 8)) & 1) << 4;
}

// The 2-bit planes of q2_K / q3_K: input e = 128·h + 32·j + l sits in qs[32·h + l] at bits 2j.
void pack_planes2(const std::int32_t* n, std::uint8_t* qs) {
  std::memset(qs, 0, 64);
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    qs[32 * h + l] |= static_cast<std::uint8_t>((n[e] & 3) << (2 * j));
  }
}
void unpack_planes2(const std::uint8_t* qs, std::int32_t* n) {
  for (int e = 0; e < kQK; ++e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    n[e] = (qs[32 * h + l] >> (2 * j)) & 3;
  }
}

// q4_K / q5_K low nibbles: input e = 64·c + 32·half + l sits in qs[32·c + l], low nibble for the
// first half, high for the second.
void pack_nibbles256(const std::int32_t* n, std::uint8_t* qs) {
  std::memset(qs, 0, 128);
  for (int e = 0; e < kQK; ++e) {
    const int c = e / 64, half = (e % 64) / 32, l = e % 32;
    qs[32 * c + l] |= static_cast<std::uint8_t>((n[e] & 0xf) << (4 * half));
  }
}
void unpack_nibbles256(const std::uint8_t* qs, std::int32_t* n) {
  for (int e = 0; e < kQK; ++e) {
    const int c = e / 64, half = (e % 64) / 32, l = e % 32;
    n[e] = (qs[32 * c + l] >> (4 * half)) & 0xf;
  }
}

// The 12 bytes of 6-bit scales and mins of q4_K / q5_K, get_scale_min_k4's inverse: sub-block
// j < 4 keeps sc in q[j] & 63 and m in q[j + 4] & 63; j >= 4 keeps the low nibbles in q[j + 4]
// (sc low, m high) and the top two bits in q[j − 4] >> 6 (sc) and q[j] >> 6 (m).
void pack_scales_k4(const std::int32_t* sc, const std::int32_t* m, std::uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<std::uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<std::uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<std::uint8_t>((sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4));
  }
}
void unpack_scales_k4(const std::uint8_t* q, std::int32_t* sc, std::int32_t* m) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63;
    m[j] = q[j + 4] & 63;
    sc[j + 4] = (q[j + 8] & 0xf) | ((q[j] >> 6) << 4);
    m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
  }
}

// q3_K's 12 bytes of 6-bit scales (the aux shuffle of dequantize_row_q3_K): scale k keeps its low
// nibble in b[k] (k < 8, low nibble) or b[k − 8] (high nibble), its top two bits in b[8 + k % 4] at
// bits 2·(k / 4).
void pack_scales_q3(const std::int32_t* sc, std::uint8_t* b) {
  std::memset(b, 0, 12);
  for (int k = 0; k < 16; ++k) {
    const int lo = sc[k] & 0xf, hi = sc[k] >> 4;
    if (k < 8)
      b[k] |= static_cast<std::uint8_t>(lo);
    else
      b[k - 8] |= static_cast<std::uint8_t>(lo << 4);
    b[8 + k % 4] |= static_cast<std::uint8_t>(hi << (2 * (k / 4)));
  }
}
void unpack_scales_q3(const std::uint8_t* b, std::int32_t* sc) {
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (b[k] & 0xf) : (b[k - 8] >> 4);
    sc[k] = lo | (((b[8 + k % 4] >> (2 * (k / 4))) & 3) << 4);
  }
}

void pack(GgmlType type, const Block& x, std::uint8_t* p) {
  std::int32_t u[kQK];
  switch (type) {
    case GgmlType::kQ4_0:  // d, qs[16]; stored n + 8
      put_half(p, x.d);
      for (int e = 0; e < 32; ++e) u[e] = x.n[e] + 8;
      pack_nibbles32(u, p + 2);
      return;
    case GgmlType::kQ4_1:  // d, m, qs[16]
      put_half(p, x.d);
      put_half(p + 2, x.dmin);
      pack_nibbles32(x.n, p + 4);
      return;
    case GgmlType::kQ5_0:  // d, qh[4], qs[16]; stored n + 16
      put_half(p, x.d);
      for (int e = 0; e < 32; ++e) u[e] = x.n[e] + 16;
      pack_qh32(u, p + 2);
      pack_nibbles32(u, p + 6);
      return;
    case GgmlType::kQ5_1:  // d, m, qh[4], qs[16]
      put_half(p, x.d);
      put_half(p + 2, x.dmin);
      pack_qh32(x.n, p + 4);
      pack_nibbles32(x.n, p + 8);
      return;
    case GgmlType::kIQ4_NL:  // block_iq4_nl: d, qs[16]; n = the kvalues_iq4nl index itself
      put_half(p, x.d);
      pack_nibbles32(x.n, p + 2);
      return;
    case GgmlType::kQ8_0:  // d, int8 qs[32]
      put_half(p, x.d);
      for (int e = 0; e < 32; ++e) p[2 + e] = static_cast<std::uint8_t>(x.n[e] & 0xff);
      return;
    case GgmlType::kQ2_K:  // scales[16] (low nibble sc, high m), qs[64], d, dmin
      for (int k = 0; k < 16; ++k) p[k] = static_cast<std::uint8_t>(x.sc[k] | (x.m[k] << 4));
      pack_planes2(x.n, p + 16);
      put_half(p + 80, x.d);
      put_half(p + 82, x.dmin);
      return;
    case GgmlType::kQ3_K: {  // hmask[32], qs[64], scales[12], d
      // n = low2 − (high bit ? 0 : 4): low2 = n & 3, high bit set for n >= 0. Input
      // 128·h + 32·j + l has its high bit in hmask[l] at bit 4h + j.
      std::uint8_t* hmask = p;
      std::memset(hmask, 0, 32);
      for (int e = 0; e < kQK; ++e) {
        const int h = e / 128, j = (e % 128) / 32, l = e % 32;
        if (x.n[e] >= 0) hmask[l] |= static_cast<std::uint8_t>(1u << (4 * h + j));
      }
      pack_planes2(x.n, p + 32);
      pack_scales_q3(x.sc, p + 96);
      put_half(p + 108, x.d);
      return;
    }
    case GgmlType::kQ4_K:  // d, dmin, scales[12], qs[128]
      put_half(p, x.d);
      put_half(p + 2, x.dmin);
      pack_scales_k4(x.sc, x.m, p + 4);
      pack_nibbles256(x.n, p + 16);
      return;
    case GgmlType::kQ5_K: {  // d, dmin, scales[12], qh[32], qs[128]
      put_half(p, x.d);
      put_half(p + 2, x.dmin);
      pack_scales_k4(x.sc, x.m, p + 4);
      // Fifth bit of input 64·c + 32·half + l: qh[l] at bit 2c + half.
      std::uint8_t* qh = p + 16;
      std::memset(qh, 0, 32);
      for (int e = 0; e < kQK; ++e) {
        const int c = e / 64, half = (e % 64) / 32, l = e % 32;
        qh[l] |= static_cast<std::uint8_t>(((x.n[e] >> 4) & 1) << (2 * c + half));
      }
      pack_nibbles256(x.n, p + 48);
      return;
    }
    case GgmlType::kQ6_K: {  // ql[128], qh[64], int8 scales[16], d; stored n + 32
      // Input 128·h + 32·q + l: low nibble in ql[64h + l + 32·(q & 1)] (low for q < 2, high
      // otherwise), top two bits in qh[32h + l] at bits 2q.
      std::uint8_t* ql = p;
      std::uint8_t* qh = p + 128;
      std::memset(p, 0, 192);
      for (int e = 0; e < kQK; ++e) {
        const int h = e / 128, q = (e % 128) / 32, l = e % 32;
        const int v = x.n[e] + 32;
        ql[64 * h + l + 32 * (q & 1)] |= static_cast<std::uint8_t>((v & 0xf) << (4 * (q >> 1)));
        qh[32 * h + l] |= static_cast<std::uint8_t>((v >> 4) << (2 * q));
      }
      for (int k = 0; k < 16; ++k) p[192 + k] = static_cast<std::uint8_t>(x.sc[k] & 0xff);
      put_half(p + 208, x.d);
      return;
    }
    default:
      throw InvalidArgument(fmt::format("{} has no block codec", to_string(type)));
  }
}

void unpack(GgmlType type, const std::uint8_t* p, Block& x) {
  switch (type) {
    case GgmlType::kQ4_0:
      x.d = get_half(p);
      unpack_nibbles32(p + 2, x.n);
      for (int e = 0; e < 32; ++e) x.n[e] -= 8;
      return;
    case GgmlType::kQ4_1:
      x.d = get_half(p);
      x.dmin = get_half(p + 2);
      unpack_nibbles32(p + 4, x.n);
      return;
    case GgmlType::kQ5_0:
      x.d = get_half(p);
      unpack_nibbles32(p + 6, x.n);
      unpack_qh32(p + 2, x.n);
      for (int e = 0; e < 32; ++e) x.n[e] -= 16;
      return;
    case GgmlType::kQ5_1:
      x.d = get_half(p);
      x.dmin = get_half(p + 2);
      unpack_nibbles32(p + 8, x.n);
      unpack_qh32(p + 4, x.n);
      return;
    case GgmlType::kIQ4_NL:
      x.d = get_half(p);
      unpack_nibbles32(p + 2, x.n);
      return;
    case GgmlType::kQ8_0:
      x.d = get_half(p);
      for (int e = 0; e < 32; ++e) x.n[e] = static_cast<std::int8_t>(p[2 + e]);
      return;
    case GgmlType::kQ2_K:
      for (int k = 0; k < 16; ++k) {
        x.sc[k] = p[k] & 0xf;
        x.m[k] = p[k] >> 4;
      }
      unpack_planes2(p + 16, x.n);
      x.d = get_half(p + 80);
      x.dmin = get_half(p + 82);
      return;
    case GgmlType::kQ3_K:
      unpack_planes2(p + 32, x.n);
      for (int e = 0; e < kQK; ++e) {
        const int h = e / 128, j = (e % 128) / 32, l = e % 32;
        if (!((p[l] >> (4 * h + j)) & 1)) x.n[e] -= 4;
      }
      unpack_scales_q3(p + 96, x.sc);
      x.d = get_half(p + 108);
      return;
    case GgmlType::kQ4_K:
      x.d = get_half(p);
      x.dmin = get_half(p + 2);
      unpack_scales_k4(p + 4, x.sc, x.m);
      unpack_nibbles256(p + 16, x.n);
      return;
    case GgmlType::kQ5_K:
      x.d = get_half(p);
      x.dmin = get_half(p + 2);
      unpack_scales_k4(p + 4, x.sc, x.m);
      unpack_nibbles256(p + 48, x.n);
      for (int e = 0; e < kQK; ++e) {
        const int c = e / 64, half = (e % 64) / 32, l = e % 32;
        x.n[e] |= ((p[16 + l] >> (2 * c + half)) & 1) << 4;
      }
      return;
    case GgmlType::kQ6_K:
      for (int e = 0; e < kQK; ++e) {
        const int h = e / 128, q = (e % 128) / 32, l = e % 32;
        const int lo = (p[64 * h + l + 32 * (q & 1)] >> (4 * (q >> 1))) & 0xf;
        const int hi = (p[128 + 32 * h + l] >> (2 * q)) & 3;
        x.n[e] = (lo | (hi << 4)) - 32;
      }
      for (int k = 0; k < 16; ++k) x.sc[k] = static_cast<std::int8_t>(p[192 + k]);
      x.d = get_half(p + 208);
      return;
    default:
      throw InvalidArgument(fmt::format("{} has no block codec", to_string(type)));
  }
}

// Refuses a byte count that is not the tensor's size (bytes from a file: an IoError).
void check_bytes(GgmlType type, std::size_t bytes, Index rows, Index cols) {
  const std::uint64_t expect = ggml_tensor_bytes(type, rows, cols);
  if (expect != bytes)
    throw IoError(fmt::format("a {}×{} {} tensor is {} bytes, but {} bytes were given", rows, cols,
                              to_string(type), expect, bytes));
}

const GgmlTypeTraits& quantized_traits(GgmlType type, const char* what) {
  const GgmlTypeTraits& t = ggml_traits(type);
  if (!t.quantized())
    throw InvalidArgument(fmt::format("{}: {} is a float type and has no codes", what, t.name));
  return t;
}

}  // namespace

std::uint64_t ggml_tensor_bytes(GgmlType type, Index rows, Index cols) {
  if (rows < 0 || cols < 0)
    throw InvalidArgument(fmt::format("a {} tensor cannot be {}×{}", to_string(type), rows, cols));
  const std::uint64_t row = ggml_row_bytes(type, static_cast<std::uint64_t>(cols));
  const auto r = static_cast<std::uint64_t>(rows);
  if (row != 0 && r > std::numeric_limits<std::uint64_t>::max() / row)
    throw InvalidArgument(
        fmt::format("a {}×{} {} tensor is too large", rows, cols, to_string(type)));
  return r * row;
}

Grid empty_format_grid(GgmlType type, Index rows, Index cols) {
  const GgmlTypeTraits& t = quantized_traits(type, "empty_format_grid");
  ggml_tensor_bytes(type, rows, cols);  // shape check
  Grid g;
  g.format = type;
  g.bits = t.bits;
  g.symmetric = t.signed_codes();
  g.level_table = t.levels;
  g.restricted = false;
  g.granularity = Granularity::kPerGroup;
  g.group_size = t.sub_block;
  g.rows = rows;
  g.cols = cols;
  const Index blocks = cols / t.block, groups = cols / t.sub_block;
  g.zeros = MatrixI32::Zero(rows, groups);
  g.scales = MatrixF::Zero(rows, groups);
  if (t.has_offset) g.offsets = MatrixF::Zero(rows, groups);
  g.stored.d = MatrixF::Zero(rows, blocks);
  if (t.has_offset) g.stored.dmin = MatrixF::Zero(rows, blocks);
  if (t.super_block) g.stored.sc = MatrixI32::Zero(rows, groups);
  if (t.super_block && t.has_offset) g.stored.m = MatrixI32::Zero(rows, groups);
  return g;
}

std::vector<std::uint8_t> encode_ggml(const MatrixI8Ref& codes, const Grid& grid) {
  if (!grid.format)
    throw InvalidArgument("encode_ggml: the grid has no storage format (GridSpec::format)");
  const GgmlTypeTraits& t = quantized_traits(*grid.format, "encode_ggml");
  grid.validate(codes.rows(), codes.cols());
  const Index rows = codes.rows(), cols = codes.cols();
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c)
      if (codes(r, c) < t.qmin || codes(r, c) > t.qmax)
        throw InvalidArgument(
            fmt::format("encode_ggml: code {} at ({}, {}) is outside the {} "
                        "range [{}, {}]",
                        codes(r, c), r, c, t.name, t.qmin, t.qmax));
  const std::uint64_t row_bytes = ggml_row_bytes(*grid.format, static_cast<std::uint64_t>(cols));
  std::vector<std::uint8_t> out(ggml_tensor_bytes(*grid.format, rows, cols));
  const Index blocks = cols / t.block, per = t.block / t.sub_block;
  const FormatParams& p = grid.stored;
  Block x;
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < blocks; ++b) {
      for (int e = 0; e < t.block; ++e) x.n[e] = codes(r, b * t.block + e);
      x.d = fp32_to_fp16(p.d(r, b));
      if (t.has_offset) x.dmin = fp32_to_fp16(p.dmin(r, b));
      if (t.super_block)
        for (Index k = 0; k < per; ++k) {
          x.sc[k] = p.sc(r, b * per + k);
          x.m[k] = t.has_offset ? p.m(r, b * per + k) : 0;
        }
      pack(*grid.format, x, out.data() + r * row_bytes + b * t.block_bytes);
    }
  return out;
}

QuantizedLayer decode_ggml_codes(GgmlType type, const std::uint8_t* data, std::size_t bytes,
                                 Index rows, Index cols) {
  const GgmlTypeTraits& t = quantized_traits(type, "decode_ggml_codes");
  check_bytes(type, bytes, rows, cols);
  QuantizedLayer layer;
  layer.grid = empty_format_grid(type, rows, cols);
  layer.codes.resize(rows, cols);
  layer.report.method = "ggml";
  layer.report.bits = t.bits;
  layer.report.group_size = t.sub_block;
  layer.report.symmetric = t.signed_codes();
  FormatParams& p = layer.grid.stored;
  const Index blocks = cols / t.block, per = t.block / t.sub_block;
  Block x;
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < blocks; ++b) {
      unpack(type, data + (r * blocks + b) * t.block_bytes, x);
      for (int e = 0; e < t.block; ++e)
        layer.codes(r, b * t.block + e) = static_cast<std::int8_t>(x.n[e]);
      const float d = fp16_to_fp32(x.d), dmin = fp16_to_fp32(x.dmin);
      if (!std::isfinite(d) || (t.has_offset && !std::isfinite(dmin)))
        throw IoError(fmt::format("{} block {} of row {} stores a non-finite {} ({})", t.name, b, r,
                                  std::isfinite(d) ? (t.super_block ? "dmin" : "m") : "d",
                                  std::isfinite(d) ? dmin : d));
      p.d(r, b) = d;
      if (t.has_offset) p.dmin(r, b) = dmin;
      if (t.super_block)
        for (Index k = 0; k < per; ++k) {
          p.sc(r, b * per + k) = x.sc[k];
          if (t.has_offset) p.m(r, b * per + k) = x.m[k];
        }
    }
  derive_format_levels(layer.grid);
  return layer;
}

std::vector<std::uint8_t> encode_ggml_float(GgmlType type, const MatrixFRef& w) {
  if (type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16)
    throw InvalidArgument(fmt::format("encode_ggml_float: {} is not a float type (f32, f16, bf16)",
                                      to_string(type)));
  const std::size_t width = type == GgmlType::kF32 ? 4 : 2;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(w.size()) * width);
  std::uint8_t* q = out.data();
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c, q += width) {
      const float v = w(r, c);
      std::uint32_t bits;
      if (type == GgmlType::kF32) {
        bits = float_bits(v);
      } else if (type == GgmlType::kF16) {
        bits = fp32_to_fp16(v);
        if (std::isfinite(v) && !std::isfinite(fp16_to_fp32(static_cast<std::uint16_t>(bits))))
          throw InvalidArgument(fmt::format(
              "encode_ggml_float: weight ({}, {}) = {} is outside f16's range (|w| ≤ 65504)", r, c,
              v));
      } else {
        bits = fp32_to_bf16(v);
      }
      for (std::size_t b = 0; b < width; ++b) q[b] = static_cast<std::uint8_t>(bits >> (8 * b));
    }
  return out;
}

MatrixF dequantize_ggml(GgmlType type, const std::uint8_t* data, std::size_t bytes, Index rows,
                        Index cols) {
  const GgmlTypeTraits& t = ggml_traits(type);
  check_bytes(type, bytes, rows, cols);
  MatrixF out(rows, cols);
  float* y = out.data();
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  switch (type) {
    case GgmlType::kF32:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* q = data + 4 * i;
        y[i] = bits_float(
            static_cast<std::uint32_t>(q[0]) | (static_cast<std::uint32_t>(q[1]) << 8) |
            (static_cast<std::uint32_t>(q[2]) << 16) | (static_cast<std::uint32_t>(q[3]) << 24));
      }
      return out;
    case GgmlType::kF16:
      for (std::size_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(get_half(data + 2 * i));
      return out;
    case GgmlType::kBF16:
      for (std::size_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(get_half(data + 2 * i));
      return out;
    default:
      break;
  }
  const std::size_t blocks = n / static_cast<std::size_t>(t.block);
  const int per = t.block / t.sub_block;
  Block x;
  for (std::size_t b = 0; b < blocks; ++b, y += t.block) {
    unpack(type, data + b * t.block_bytes, x);
    const float d = fp16_to_fp32(x.d), dmin = fp16_to_fp32(x.dmin);
    if (!t.super_block) {
      // q4_0 / q5_0 / q8_0: n·d; q4_1 / q5_1: n·d + m; iq4_nl: d·kvalues_iq4nl[n].
      if (t.levels)
        for (int e = 0; e < t.block; ++e) y[e] = d * static_cast<float>(t.levels[x.n[e]]);
      else if (t.has_offset)
        for (int e = 0; e < t.block; ++e) y[e] = static_cast<float>(x.n[e]) * d + dmin;
      else
        for (int e = 0; e < t.block; ++e) y[e] = static_cast<float>(x.n[e]) * d;
      continue;
    }
    for (int k = 0; k < per; ++k) {
      const std::int32_t* nk = x.n + k * t.sub_block;
      float* yk = y + k * t.sub_block;
      if (t.has_offset) {
        // q2_K / q4_K / q5_K: dl = d·sc, ml = dmin·m, y = dl·n − ml.
        const float dl = d * static_cast<float>(x.sc[k]);
        const float ml = dmin * static_cast<float>(x.m[k]);
        for (int e = 0; e < t.sub_block; ++e) yk[e] = dl * static_cast<float>(nk[e]) - ml;
      } else {
        // q3_K: dl = d·(sc − 32); q6_K: (d·sc)·n, in ggml's order.
        const std::int32_t sc = type == GgmlType::kQ3_K ? x.sc[k] - 32 : x.sc[k];
        const float dl = d * static_cast<float>(sc);
        for (int e = 0; e < t.sub_block; ++e) yk[e] = dl * static_cast<float>(nk[e]);
      }
    }
  }
  return out;
}

}  // namespace qround
