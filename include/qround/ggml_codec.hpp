// ggml block codecs: codes on a format grid ↔ the bytes of llama.cpp's block structs, and ggml's
// dequantization of every supported tensor type to float32. dequantize_ggml is the one reader of
// ggml tensor bytes in qround: everything that needs a GGUF tensor's values goes through it.
//
// A tensor of `type` with rows × cols (cols a multiple of the block) is its rows one after another,
// row r starting at r · ggml_row_bytes(type, cols), each row its blocks in input order, each block
// byte for byte ggml's block_* struct (ggml-common.h), fp16 fields little endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qround/format.hpp"
#include "qround/grid.hpp"
#include "qround/quantized.hpp"
#include "qround/types.hpp"

namespace qround {

// Bytes of a rows × cols tensor of `type`; InvalidArgument unless rows, cols >= 0 and cols is a
// whole number of blocks.
std::uint64_t ggml_tensor_bytes(GgmlType type, Index rows, Index cols);

// A rows × cols grid of the quantized format `type` with every stored parameter zero and no levels
// derived: fill grid.stored, then call derive_format_levels(grid).
Grid empty_format_grid(GgmlType type, Index rows, Index cols);

// The codes of a layer on a format grid as ggml block bytes. InvalidArgument when the grid has no
// format or fails grid.validate(codes.rows(), codes.cols()), or a code lies outside the format's
// range (the message names its position and value).
std::vector<std::uint8_t> encode_ggml(const MatrixI8Ref& codes, const Grid& grid);
inline std::vector<std::uint8_t> encode_ggml(const QuantizedLayer& layer) {
  return encode_ggml(layer.codes, layer.grid);
}

// Float weights as a float ggml type's bytes: f32 as they are, f16 and bf16 rounded to nearest
// even as ggml converts them. InvalidArgument for a quantized type or a non-finite value in f16
// (out of its range: it would store Inf).
std::vector<std::uint8_t> encode_ggml_float(GgmlType type, const MatrixFRef& w);

// The inverse of encode_ggml for a quantized type: the codes (as the level formula sees them) and
// the format grid (stored parameters, derived scales and offsets). The grid is exactly what the
// bytes hold; a file may store parameters Grid::validate refuses to encode (d = 0, a zero
// sub-block scale), so the grid is not validated. IoError when `bytes` is not the tensor's size or
// a stored fp16 parameter is Inf/NaN; InvalidArgument for a float type or a bad shape.
QuantizedLayer decode_ggml_codes(GgmlType type, const std::uint8_t* data, std::size_t bytes,
                                 Index rows, Index cols);
inline QuantizedLayer decode_ggml_codes(GgmlType type, const std::vector<std::uint8_t>& data,
                                        Index rows, Index cols) {
  return decode_ggml_codes(type, data.data(), data.size(), rows, cols);
}

// ggml's to_float of a rows × cols tensor of any supported type (f32, f16, bf16 and every
// quantized type), bit for bit (same formulas, same float32 evaluation order as ggml-quants.c's
// dequantize_row_*). For a quantized type it equals Grid::level of decode_ggml_codes' grid.
// IoError naming the expected and given sizes when `bytes` is not the tensor's size.
MatrixF dequantize_ggml(GgmlType type, const std::uint8_t* data, std::size_t bytes, Index rows,
                        Index cols);
inline MatrixF dequantize_ggml(GgmlType type, const std::vector<std::uint8_t>& data, Index rows,
                               Index cols) {
  return dequantize_ggml(type, data.data(), data.size(), rows, cols);
}

}  // namespace qround
