#include "qround/detail/dense.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/gemm_f64.hpp"
#include "qround/error.hpp"
#include "qround/isa.hpp"

namespace qround::detail {
namespace {

using kernels::kGemmMr;
using kernels::kGemmNr;

// Cache blocking: a kc × nc block of B (panels of kGemmNr columns) is shared by all threads; each
// work item packs an mc × kc block of A (panels of kGemmMr rows, L2-sized) and sweeps a chunk of
// kJrChunk B panels with it.
constexpr Index kKc = 256;
constexpr Index kMc = 96;
constexpr Index kNc = 2400;
constexpr Index kJrChunk = 8;
// With at least this many row blocks there is parallelism enough over rows alone: a work item then
// sweeps all B panels of the block, so its packed A block is not repacked per column chunk.
constexpr Index kRowBlocksForWholeChunks = 8;
// Below this many multiply-adds (well under a millisecond of work) the product runs on one thread:
// its barriers would cost more, far more when the cores are oversubscribed.
constexpr double kParallelWork = 3e7;

static_assert(kMc % kGemmMr == 0 && kNc % kGemmNr == 0, "blocks must hold whole panels");

struct KernelChoice {
  kernels::GemmF64Kernel fn;
  kernels::GemmF64DotKernel dot;
  const char* name;
  Isa isa;  // the project ISA whose kernels this one runs beside (caps it, keys gemm_sub)
};

// Kernels compiled in and runnable on this CPU, narrowest first.
const std::vector<KernelChoice>& runnable_kernels() {
  static const std::vector<KernelChoice> list = [] {
    std::vector<KernelChoice> out{
        {kernels::gemm_f64_kernel_scalar, kernels::gemm_f64_dot_kernel_scalar, "scalar", Isa::kScalar}};
#ifdef QROUND_HAVE_AVX2
    if (isa_supported(Isa::kAvx2))
      out.push_back(
          {kernels::gemm_f64_kernel_avx2, kernels::gemm_f64_dot_kernel_avx2, "avx2", Isa::kAvx2});
#endif
#ifdef QROUND_HAVE_AVX512VNNI
    // That translation unit is compiled with the avx512vnni folder's flags.
    if (isa_supported(Isa::kAvx512Vnni))
      out.push_back(
          {kernels::gemm_f64_kernel_avx512, kernels::gemm_f64_dot_kernel_avx512, "avx512",
           Isa::kAvx512Vnni});
#endif
    return out;
  }();
  return list;
}

// The best runnable kernel no wider than the project's active ISA (so QROUND_ISA and
// ScopedIsaOverride steer these products too), unless a ScopedDenseKernel forces one.
std::atomic<const KernelChoice*> kernel_override{nullptr};

const KernelChoice& kernel() {
  if (const KernelChoice* forced = kernel_override.load()) return *forced;
  // The best kernel per cap, worked out once; a call only reads the active ISA.
  static const std::vector<const KernelChoice*> best_for_cap = [] {
    std::vector<const KernelChoice*> best(static_cast<size_t>(Isa::kAvx512Vnni) + 1);
    for (size_t cap = 0; cap < best.size(); ++cap)
      for (const KernelChoice& k : runnable_kernels())
        if (static_cast<size_t>(k.isa) <= cap) best[cap] = &k;
    return best;
  }();
  return *best_for_cap[static_cast<size_t>(active_isa())];
}

template <typename T>
double element(const T* p, Index r, Index c, const DenseView& v) {
  return static_cast<double>(p[r * v.row_stride + c * v.col_stride]);
}

// Packs rows [i0, i0 + mc) × k [p0, p0 + kc) of `a` as kGemmMr-row panels: panel q holds
// dst[q·kc·MR + k·MR + r] = a(i0 + q·MR + r, p0 + k), zero past the last row.
template <typename T>
void pack_a(const T* p, const DenseView& a, Index i0, Index mc, Index p0, Index kc, double* dst) {
  for (Index q = 0; q < mc; q += kGemmMr) {
    const Index rows = std::min<Index>(kGemmMr, mc - q);
    double* panel = dst + q * kc;
    if (rows < kGemmMr) std::fill(panel, panel + kc * kGemmMr, 0.0);
    if (a.col_stride == 1) {  // rows contiguous in k
      for (Index r = 0; r < rows; ++r)
        for (Index k = 0; k < kc; ++k) panel[k * kGemmMr + r] = element(p, i0 + q + r, p0 + k, a);
    } else {
      for (Index k = 0; k < kc; ++k)
        for (Index r = 0; r < rows; ++r) panel[k * kGemmMr + r] = element(p, i0 + q + r, p0 + k, a);
    }
  }
}

// Packs k [p0, p0 + kc) × columns [j0, j0 + width) of `b` as one kGemmNr-column panel:
// dst[k·NR + j] = b(p0 + k, j0 + j), zero past the last column.
template <typename T>
void pack_b(const T* p, const DenseView& b, Index p0, Index kc, Index j0, Index width,
            double* dst) {
  if (width < kGemmNr) std::fill(dst, dst + kc * kGemmNr, 0.0);
  if (b.col_stride == 1) {
    for (Index k = 0; k < kc; ++k)
      for (Index j = 0; j < width; ++j) dst[k * kGemmNr + j] = element(p, p0 + k, j0 + j, b);
  } else {
    for (Index j = 0; j < width; ++j)
      for (Index k = 0; k < kc; ++k) dst[k * kGemmNr + j] = element(p, p0 + k, j0 + j, b);
  }
}

void pack_a_any(const DenseView& a, Index i0, Index mc, Index p0, Index kc, double* dst) {
  if (a.f32)
    pack_a(a.f32, a, i0, mc, p0, kc, dst);
  else
    pack_a(a.f64, a, i0, mc, p0, kc, dst);
}

void pack_b_any(const DenseView& b, Index p0, Index kc, Index j0, Index width, double* dst) {
  if (b.f32)
    pack_b(b.f32, b, p0, kc, j0, width, dst);
  else
    pack_b(b.f64, b, p0, kc, j0, width, dst);
}

void check_view(const DenseView& v, const char* what) {
  if ((v.f32 == nullptr) == (v.f64 == nullptr) && v.rows * v.cols != 0)
    throw InvalidArgument(fmt::format("dense view {} must have exactly one data pointer", what));
}

}  // namespace

DenseView view(const MatrixFRef& m) {
  return {m.data(), nullptr, m.rows(), m.cols(), m.outerStride(), 1};
}
DenseView view(const MatrixDRef& m) {
  return {nullptr, m.data(), m.rows(), m.cols(), m.outerStride(), 1};
}

const char* dense_kernel_name() { return kernel().name; }
Isa dense_kernel_isa() { return kernel().isa; }

std::vector<std::string> dense_kernels() {
  std::vector<std::string> names;
  for (const KernelChoice& k : runnable_kernels()) names.push_back(k.name);
  return names;
}

ScopedDenseKernel::ScopedDenseKernel(const std::string& name) {
  for (const KernelChoice& k : runnable_kernels())
    if (name == k.name) {
      previous_ = kernel_override.exchange(&k);
      return;
    }
  throw InvalidArgument(fmt::format("dense kernel '{}' is not available on this machine", name));
}

ScopedDenseKernel::~ScopedDenseKernel() {
  kernel_override.store(static_cast<const KernelChoice*>(previous_));
}

namespace {

// B panels per work item for an m-row product.
Index jr_chunk_for(Index m) {
  return (m + kMc - 1) / kMc >= kRowBlocksForWholeChunks ? kNc / kGemmNr : kJrChunk;
}

// The blocked loop nest shared by every product. For each tile it calls
//   sink(kc, a_panel, b_panel, i, j0, mr, nr, chunk)
// where `chunk` numbers the column chunk globally. A (row block, chunk) pair belongs to one work
// item per k block, and k blocks run in order, so every sink sees its tiles in a fixed order
// whatever the number of threads.
template <typename Sink>
void blocked_product(const DenseView& a, const DenseView& b, bool upper_only, Sink sink) {
  const Index m = a.rows, n = b.cols, k = a.cols;
  const Index nc_max = std::min(kNc, n);
  const Index panels_max = (nc_max + kGemmNr - 1) / kGemmNr;
  const Index jr_chunk = jr_chunk_for(m);  // depends on the shape only, never on threads
  const Index chunks_per_block = (kNc / kGemmNr + jr_chunk - 1) / jr_chunk;
  std::vector<double> bpack(static_cast<size_t>(panels_max * kGemmNr * std::min(kKc, k)));
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);

#pragma omp parallel if (work > kParallelWork)
  {
    std::vector<double> apack(static_cast<size_t>(kMc * std::min(kKc, k)));
    for (Index jc = 0; jc < n; jc += kNc) {
      const Index nc = std::min(kNc, n - jc);
      const Index panels = (nc + kGemmNr - 1) / kGemmNr;
      const Index chunks = (panels + jr_chunk - 1) / jr_chunk;
      const Index row_blocks = (m + kMc - 1) / kMc;
      for (Index pc = 0; pc < k; pc += kKc) {
        const Index kc = std::min(kKc, k - pc);
#pragma omp for schedule(static)
        for (Index q = 0; q < panels; ++q)
          pack_b_any(b, pc, kc, jc + q * kGemmNr, std::min<Index>(kGemmNr, nc - q * kGemmNr),
                     bpack.data() + q * kGemmNr * kc);
#pragma omp for schedule(dynamic, 1)
        for (Index item = 0; item < row_blocks * chunks; ++item) {
          const Index i0 = (item / chunks) * kMc, mc = std::min(kMc, m - i0);
          const Index chunk = item % chunks;
          const Index q0 = chunk * jr_chunk, q1 = std::min(panels, q0 + jr_chunk);
          if (upper_only && jc + std::min(nc, q1 * kGemmNr) <= i0) continue;
          pack_a_any(a, i0, mc, pc, kc, apack.data());
          for (Index q = q0; q < q1; ++q) {
            const Index j0 = jc + q * kGemmNr;
            const int nr = static_cast<int>(std::min<Index>(kGemmNr, jc + nc - j0));
            for (Index r = 0; r < mc; r += kGemmMr) {
              const Index i = i0 + r;
              if (upper_only && j0 + nr <= i) continue;  // tile entirely below the diagonal
              sink(kc, apack.data() + r * kc, bpack.data() + q * kGemmNr * kc, i, j0,
                   static_cast<int>(std::min<Index>(kGemmMr, m - i)), nr,
                   (jc / kNc) * chunks_per_block + chunk);
            }
          }
        }
      }
    }
  }
}

Index total_chunks(Index m, Index n) {
  const Index jr_chunk = jr_chunk_for(m);
  const Index chunks_per_block = (kNc / kGemmNr + jr_chunk - 1) / jr_chunk;
  return ((n + kNc - 1) / kNc) * chunks_per_block;
}

}  // namespace

void gemm_accumulate(const DenseView& a, const DenseView& b, Eigen::Ref<MatrixD> c,
                     bool upper_only) {
  check_view(a, "a");
  check_view(b, "b");
  if (a.cols != b.rows || c.rows() != a.rows || c.cols() != b.cols)
    throw InvalidArgument(fmt::format("gemm shapes do not agree: {}×{} · {}×{} into {}×{}", a.rows,
                                      a.cols, b.rows, b.cols, c.rows(), c.cols()));
  if (a.rows == 0 || b.cols == 0 || a.cols == 0) return;
  const kernels::GemmF64Kernel kern = kernel().fn;
  double* const cdata = c.data();
  const Index ldc = c.outerStride();
  blocked_product(a, b, upper_only,
                  [&](Index kc, const double* ap, const double* bp, Index i, Index j0, int mr,
                      int nr, Index) { kern(kc, ap, bp, cdata + i * ldc + j0, ldc, mr, nr); });
}

VectorD rowwise_dot_of_product(const DenseView& a, const DenseView& b, const MatrixDRef& d) {
  check_view(a, "a");
  check_view(b, "b");
  if (a.cols != b.rows || d.rows() != a.rows || d.cols() != b.cols)
    throw InvalidArgument(fmt::format("product shapes do not agree: {}×{} · {}×{} against {}×{}",
                                      a.rows, a.cols, b.rows, b.cols, d.rows(), d.cols()));
  VectorD out = VectorD::Zero(a.rows);
  if (a.rows == 0 || b.cols == 0 || a.cols == 0) return out;
  const kernels::GemmF64DotKernel kern = kernel().dot;
  // One partial sum per (row, column chunk), each owned by one work item; summed in chunk order.
  const Index chunks = total_chunks(a.rows, b.cols);
  MatrixD partial = MatrixD::Zero(a.rows, chunks);
  const double* const ddata = d.data();
  const Index ldd = d.outerStride();
  blocked_product(a, b, false,
                  [&](Index kc, const double* ap, const double* bp, Index i, Index j0, int mr,
                      int nr, Index chunk) {
                    double sums[kGemmMr] = {};
                    kern(kc, ap, bp, ddata + i * ldd + j0, ldd, mr, nr, sums);
                    for (int r = 0; r < mr; ++r) partial(i + r, chunk) += sums[r];
                  });
  for (Index i = 0; i < a.rows; ++i) {
    double s = 0.0;
    for (Index c = 0; c < chunks; ++c) s += partial(i, c);
    out[i] = s;
  }
  return out;
}

MatrixD multiply(const DenseView& a, const DenseView& b) {
  MatrixD c = MatrixD::Zero(a.rows, b.cols);
  gemm_accumulate(a, b, c);
  return c;
}

void mirror_upper_to_lower(Eigen::Ref<MatrixD> h) {
  const Index n = h.rows();
  constexpr Index kBlock = 64;  // transpose block by block to stay in cache
  const Index blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) if (static_cast <double>(n) * n > kParallelWork)
  for (Index bi = 0; bi < blocks; ++bi)
    for (Index bj = 0; bj <= bi; ++bj)
      for (Index i = bi * kBlock; i < std::min(n, (bi + 1) * kBlock); ++i)
        for (Index j = bj * kBlock; j < std::min(i, (bj + 1) * kBlock); ++j) h(i, j) = h(j, i);
}

void syrk_accumulate(const DenseView& x, Eigen::Ref<MatrixD> h) {
  gemm_accumulate(x.transposed(), x, h, /*upper_only=*/true);
  mirror_upper_to_lower(h);
}

}  // namespace qround::detail
