// llama.cpp importance-matrix files ("imatrix"), both forms llama-imatrix writes and
// llama-quantize --imatrix reads (facts from llama.cpp tools/imatrix/imatrix.cpp,
// common/imatrix-loader.cpp and tools/quantize/quantize.cpp).
//
// Per weight tensor the tool accumulates, for every input column j of every matrix (expert) e,
// the sum over tokens of x_j² (float), and the token count of each matrix:
//
//   GGUF form:   tensors "<name>.in_sum2" F32 {cols, matrices} (the raw sums) and "<name>.counts"
//                F32 {1, matrices} (tokens); metadata general.type = "imatrix",
//                imatrix.datasets (array of string), imatrix.chunk_count (u32, chunks processed),
//                imatrix.chunk_size (u32, tokens per chunk). Names sorted, in_sum2 before counts.
//   legacy .dat: i32 n_entries; per entry i32 name length, the name's bytes, i32 ncall,
//                i32 nval, nval × f32 values where value = (sum / count) · ncall and
//                ncall = ⌈max count / chunk_size⌉ (a matrix with count 0 stores 1);
//                then optionally i32 chunk count, i32 dataset name length, its bytes.
//                Little-endian, no padding.
//
// llama-quantize turns an entry into its per-column weights (ggml_quantize_chunk's imatrix) as
//   GGUF:    sums[e·cols + j] / (float)counts[e],  or 1 where counts[e] = 0;
//   legacy:  values[i] / ncall (float division).
// Both are "stored sums / stored count", which is how this type keeps them: a legacy file reads
// as sums = values and counts = {ncall}. The mean of x² over the calibration tokens is then
// diag(XᵀX) / tokens — qround's Hessian diagonal per token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qround/types.hpp"

namespace qround::io {

enum class ImatrixForm { kGguf, kLegacy };
const char* to_string(ImatrixForm form);  // "gguf" | "legacy"

struct ImatrixEntry {
  std::string name;                  // the weight tensor's GGUF name, e.g. "blk.0.attn_q.weight"
  std::vector<float> sums;           // matrices × cols, one matrix's columns contiguous
  std::vector<std::int64_t> counts;  // per matrix: tokens (GGUF) or ncall (legacy); >= 0

  std::int64_t matrices() const { return static_cast<std::int64_t>(counts.size()); }
  std::int64_t cols() const;  // sums.size() / matrices()
};

struct Imatrix {
  // The form the file was read in (or is meant for): says what `counts` count.
  ImatrixForm form = ImatrixForm::kGguf;
  std::vector<ImatrixEntry> entries;  // sorted by name, names unique
  std::vector<std::string> datasets;  // the calibration files it was computed on
  std::int32_t chunk_count = 0;       // chunks processed
  std::int32_t chunk_size = 0;        // tokens per chunk (GGUF only; 0 when a legacy file is read)

  const ImatrixEntry* find(const std::string& name) const;  // nullptr when absent
  std::vector<std::string> names() const;
  // All of an entry's per-column weights exactly as llama-quantize computes them from the file
  // (float, matrices × cols). InvalidArgument naming the tensor and the known names when absent.
  std::vector<float> quantize_weights(const std::string& name) const;
  // The importance of matrix `matrix` of tensor `name` for scale search: quantize_weights' slice,
  // widened to double. InvalidArgument naming the tensor when it is absent, when its column count
  // is not `cols`, or when `matrix` is out of range.
  VectorD importance(const std::string& name, Index cols, Index matrix = 0) const;
  // Throws InvalidArgument unless the contents could be written: names non-empty, unique, sorted;
  // every entry has at least one matrix and column, finite non-negative sums, counts >= 0.
  void validate() const;
};

// What the tool would have written for the same activations, from qround's statistics:
// per tensor diag(XᵀX) (the sum of x² over the tokens, length cols) and the token count (>= 1).
// Sums become float as the tool's float accumulators hold them (the tool adds in float, so its
// sums can differ from the correctly rounded double sum in the last bits). The result is in GGUF
// form; chunk_count = ⌊max tokens / chunk_size⌋ as the tool counts chunks.
struct ImatrixFromStatisticsOptions {
  std::int32_t chunk_size = 512;      // tokens per chunk (llama-imatrix: n_ctx / n_parallel)
  std::vector<std::string> datasets;  // recorded in the file
};
Imatrix imatrix_from_statistics(const std::vector<std::string>& names,
                                const std::vector<VectorD>& hessian_diagonals,
                                const std::vector<std::int64_t>& tokens,
                                const ImatrixFromStatisticsOptions& options = {});

// Reads either form, told apart by the GGUF magic. IoError naming the file, the field and what
// was expected for anything truncated, inconsistent or hostile (before allocating from a count).
Imatrix read_imatrix(const std::string& path);
Imatrix parse_imatrix(const std::vector<unsigned char>& bytes, const std::string& what);

// The file image of `imatrix` in `form`. Converting between forms follows llama-imatrix:
// GGUF → legacy: ncall = ⌈max count / chunk_size⌉, value = (sum / count) · ncall (float);
// legacy → GGUF: sums · chunk_size, counts · chunk_size (the tool's merge of a legacy file).
// Either needs chunk_size > 0 (InvalidArgument otherwise); the form it already has needs nothing.
std::vector<unsigned char> serialize_imatrix(const Imatrix& imatrix, ImatrixForm form);
// Writes serialize_imatrix(imatrix, form) atomically (temporary name, then rename).
void write_imatrix(const std::string& path, const Imatrix& imatrix, ImatrixForm form);

}  // namespace qround::io
