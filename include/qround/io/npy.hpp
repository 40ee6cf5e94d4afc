// NumPy .npy files: read f32 / f16 / f64 / i8 / i32 (little-endian, C or Fortran order, format
// versions 1.0, 2.0 and 3.0), write f32 / i8 / i32 (version 1.0, C order, header padded to 64 bytes
// as numpy does). Matrices are 2-D; a 1-D array reads as 1 × n and a 0-D one as 1 × 1.
//
// Everything is validated before any allocation: magic, version, header length, the header dict,
// the shape (no overflow; elements × item size must equal the bytes left in the file; a zero-size
// array's non-zero dimensions may multiply to at most 2^24, since no file size bounds them). A
// truncated, malformed or hostile file raises IoError naming the path and what was expected.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "qround/types.hpp"

namespace qround::io {

enum class NpyDtype { kFloat16, kFloat32, kFloat64, kInt8, kInt32 };

const char* to_string(NpyDtype dtype);  // the numpy descr, e.g. "<f4"
std::size_t item_size(NpyDtype dtype);

// A whole .npy file: its dtype, shape and raw little-endian element bytes in file order.
struct NpyArray {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<Index> shape;  // empty for a 0-D array
  bool fortran_order = false;
  std::vector<unsigned char> bytes;

  Index elements() const;
};

// Reads any supported array (any number of dimensions).
NpyArray read_npy(const std::string& path);

// Reads a 0-D, 1-D or 2-D array as a matrix. load_npy_f32 converts every dtype to float (integers
// exactly up to 2^24, f64 rounded; an f64 value outside the float range is an IoError).
// load_npy_i8 takes int8, or int32 values inside [-128, 127]; load_npy_i32 takes int8 or int32.
MatrixF load_npy_f32(const std::string& path);
MatrixI8 load_npy_i8(const std::string& path);
MatrixI32 load_npy_i32(const std::string& path);

// Writes a matrix as a 2-D C-order array, atomically (temporary file, then rename).
void save_npy(const std::string& path, const MatrixFRef& m);
void save_npy(const std::string& path, const Eigen::Ref<const MatrixI8>& m);
void save_npy(const std::string& path, const Eigen::Ref<const MatrixI32>& m);

// The half-precision → float conversion the reader uses (IEEE 754 binary16, all classes).
float half_to_float(std::uint16_t h);

}  // namespace qround::io
