// GPTQ (Frantar et al. 2022, the IST-DASLab reference code): rounds one column at a time and
// spreads each column's rounding error over the columns not yet rounded, through the upper
// Cholesky factor U of H⁻¹ (error e = (w − q)/U_jj, then w_k −= e·U_jk for k > j).
//
// Exactly the reference's algorithm, on our grids:
//   * H is the problem's hessian() (= X̃ᵀX̃ of the inputs the quantized layer sees). With an
//     asymmetric target this is the reference's "sequential" convention: it reconstructs W on the
//     quantized upstream's inputs and ignores the float target (the reported loss still uses it).
//     The reference's H = 2XᵀX/n scaling does not change the solution; damping is relative to
//     mean(diag H), so it is scale-free too.
//   * dead inputs (H_jj = 0) get H_jj = 1 and their weight column is zeroed (after the per-row /
//     per-tensor grid was fitted, as in the reference);
//   * damping + damp·mean(diag H)·I; if the Cholesky factorisation fails the damping is multiplied
//     by 10 (up to max_damping_retries times) and the damping used goes to report.notes;
//   * columns in blocks: quantize a column, propagate inside the block, one GEMM per block for the
//     columns after it (lazy batch updates).
//   * grids: per-row / per-tensor grids are fitted on the original weights (make_grid with the
//     spec's scale search). Per group, either static groups (every group fitted on the original
//     weights before GPTQ starts: the result is an ordinary Grid, inference needs no index) or
//     dynamic groups (the reference's default: each group's grid is fitted when GPTQ reaches its
//     first column, on the weights as updated by the preceding blocks' GEMMs — like the reference,
//     updates from earlier columns of the *current* block are not yet visible there).
//   * act-order: columns processed by descending H_jj; codes are returned in the original order.
//     With dynamic groups, groups are then runs of consecutive *processed* columns, so the group of
//     an original column is given by an index (the reference's g_idx): gptq() cannot express that
//     in a Grid and refuses the combination; gptq_indexed() returns it (see GptqIndexedLayer).
//
// Precision: the column loop and the block GEMMs run in float, as the reference (float32); H, the
// damping and the factorisation U run in double and U is then rounded to float. Codes match a plain
// double-precision reimplementation of the reference on the test problems (a code can only differ
// where the float and double updated weight straddle a rounding tie).
//
// Report (without an asymmetric target): loss comes free from GPTQ's own errors (W − Ŵ = E·U and
// UᵀU = (H + λI)⁻¹ give ΔW H ΔWᵀ = ‖E‖² − λ‖ΔW‖²); the output energy and the RTN loss are symmetric
// quadratic forms through the float GEMM kernel (≈ 2·out·in² flops, more than GPTQ itself). With
// a target the problem's own double evaluation is used.
#pragma once

#include <cstdint>
#include <vector>

#include "qround/problem.hpp"
#include "qround/quantized.hpp"

namespace qround {

struct GptqOptions {
  double damp = 0.01;           // fraction of mean(diag H) added to the diagonal
  Index block = 128;            // columns per lazy batch update
  bool act_order = false;       // process columns by descending H_jj
  bool static_groups = false;   // per-group grids fitted on the original weights up front
  int max_damping_retries = 4;  // each retry multiplies the damping by 10
  // Per output row, keep RTN's codes (on the RTN grid of the report) where they give a lower loss,
  // so the result is never worse than round-to-nearest. false: the reference algorithm's codes.
  bool rtn_guard = true;
  int threads = 0;              // 0: OpenMP's default; the result never depends on it

  void validate() const;  // throws InvalidArgument naming the bad field
};

// The layer, with codes in the original column order. Throws InvalidArgument for act-order with
// dynamic groups (use static_groups, or gptq_indexed()). report.loss_rtn is RTN on the returned
// grid for per-row/per-tensor/static grids; for dynamic groups (whose grid depends on GPTQ's own
// updates) it is RTN on make_grid(problem, spec), the grid RTN would have used.
QuantizedLayer gptq(const LayerProblem& problem, const GridSpec& spec,
                    const GptqOptions& options = {}, const ProgressFn& progress = {});

// GPTQ with act-order and dynamic groups, in the reference's storage convention: codes in the
// original column order; scales/zeros per (row, group) where group g holds the processed columns
// [g·G, (g+1)·G) of the act-order permutation; group_index[c] is the group of original column c
// (the reference's g_idx). `grid` is an ordinary Grid over the *processed* column order (column k
// of it is original column permutation[k]), so grid.level(r, k, q) dequantizes original column
// permutation[k]. Without act-order (or without dynamic groups) permutation is the identity.
struct GptqIndexedLayer {
  MatrixI8 codes;                         // out × in, original column order
  Grid grid;                              // over the processed column order, see above
  std::vector<Index> permutation;         // processed position k → original column
  std::vector<std::int32_t> group_index;  // original column → group (g_idx)
  RoundingReport report;

  MatrixF dequantized() const;  // out × in, original column order
};

GptqIndexedLayer gptq_indexed(const LayerProblem& problem, const GridSpec& spec,
                              const GptqOptions& options = {}, const ProgressFn& progress = {});

}  // namespace qround
