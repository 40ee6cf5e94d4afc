#include "qround/scale_search.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace qround {
namespace {

struct GroupFit {
  float scale;
  std::int32_t zero;
};

// (s, z) for the range [lo, hi] (lo ≤ 0 ≤ hi, not both 0).
GroupFit fit_range(double lo, double hi, const GridSpec& spec) {
  if (spec.symmetric) {
    const double amax = std::max(-lo, hi);
    return {static_cast<float>(amax / spec.qmax()), 0};
  }
  const double levels = static_cast<double>((std::int32_t{1} << spec.bits) - 1);
  const float s = static_cast<float>((hi - lo) / levels);
  const double z = std::round(-lo / static_cast<double>(s));
  return {s, static_cast<std::int32_t>(std::clamp(z, 0.0, levels))};
}

// Search metric of one candidate over the values v[i] (importance imp[i] for kHessian).
double candidate_error(const float* v, const double* imp, Index n, Index stride, GroupFit fit,
                       const GridSpec& spec) {
  const float lo = static_cast<float>(spec.qmin()), hi = static_cast<float>(spec.qmax());
  const float zf = static_cast<float>(fit.zero);
  double err = 0.0;
  for (Index i = 0; i < n; ++i) {
    const float w = v[i * stride];
    const float q = std::clamp(std::round(w / fit.scale) + zf, lo, hi);
    const double d = static_cast<double>(w) - static_cast<double>(fit.scale * (q - zf));
    if (spec.search == ScaleSearch::kHessian)
      err += imp[i] * d * d;
    else if (spec.search == ScaleSearch::kMse)
      err += std::pow(std::fabs(d), spec.mse_norm);
    else
      err += d * d;
  }
  return err;
}

// Best (s, z) for n values at v[0], v[stride], … under the spec's search.
GroupFit search_group(const float* v, const double* imp, Index n, Index stride,
                      const GridSpec& spec) {
  double lo = 0.0, hi = 0.0;
  for (Index i = 0; i < n; ++i) {
    lo = std::min(lo, static_cast<double>(v[i * stride]));
    hi = std::max(hi, static_cast<double>(v[i * stride]));
  }
  if (lo == 0.0 && hi == 0.0) {
    lo = -1.0;
    hi = 1.0;
  }
  GroupFit best = fit_range(lo, hi, spec);
  if (spec.search == ScaleSearch::kMinMax) return best;
  double best_err = candidate_error(v, imp, n, stride, best, spec);
  for (int i = 1; i < spec.shrink_steps; ++i) {
    const double p = 1.0 - i / 100.0;
    const GroupFit fit = fit_range(p * lo, p * hi, spec);
    if (!(fit.scale > 0.0f)) continue;
    const double err = candidate_error(v, imp, n, stride, fit, spec);
    if (err < best_err) {
      best_err = err;
      best = fit;
    }
  }
  return best;
}

Grid search(const MatrixFRef& w, const GridSpec& spec, const VectorD* importance) {
  spec.validate();
  if (spec.format) return make_format_grid(w, spec, importance);
  if (w.rows() == 0 || w.cols() == 0)
    throw InvalidArgument(fmt::format("cannot build a grid for an empty {}×{} matrix", w.rows(),
                                      w.cols()));
  require_finite(w, "weight matrix");
  if (spec.search == ScaleSearch::kHessian) {
    if (importance == nullptr)
      throw InvalidArgument("Hessian-weighted scale search needs diag(H): use the LayerProblem "
                            "overload or pass the importance vector");
    if (importance->size() != w.cols())
      throw InvalidArgument(fmt::format("importance has {} entries, expected {} (one per input)",
                                        importance->size(), w.cols()));
    for (Index j = 0; j < importance->size(); ++j)
      if (!((*importance)[j] >= 0.0) || !std::isfinite((*importance)[j]))
        throw InvalidArgument(fmt::format("importance[{}] = {} must be finite and >= 0", j,
                                          (*importance)[j]));
  }
  Grid grid;
  grid.bits = spec.bits;
  grid.symmetric = spec.symmetric;
  grid.restricted = spec.restricted;
  grid.granularity = spec.granularity;
  grid.rows = w.rows();
  grid.cols = w.cols();
  grid.group_size = spec.effective_group_size(w.cols());
  const Index groups = (w.cols() + grid.group_size - 1) / grid.group_size;
  grid.scales.resize(w.rows(), groups);
  grid.zeros.resize(w.rows(), groups);
  const double* imp = importance ? importance->data() : nullptr;

  if (spec.granularity == Granularity::kPerTensor) {
    // One group over the whole matrix, gathered contiguously (with importance repeated per row).
    std::vector<float> values(static_cast<size_t>(w.size()));
    std::vector<double> imps(imp ? values.size() : 0);
    for (Index r = 0; r < w.rows(); ++r)
      for (Index c = 0; c < w.cols(); ++c) {
        values[static_cast<size_t>(r * w.cols() + c)] = w(r, c);
        if (imp) imps[static_cast<size_t>(r * w.cols() + c)] = imp[c];
      }
    const GroupFit fit = search_group(values.data(), imp ? imps.data() : nullptr, w.size(), 1,
                                      spec);
    grid.scales.setConstant(fit.scale);
    grid.zeros.setConstant(fit.zero);
    return grid;
  }

  // Small matrices run on one thread: a parallel region costs more than it saves there, and far
  // more when the cores are oversubscribed (e.g. ctest -j running several OpenMP processes).
  const double work = static_cast<double>(w.size()) *
                      (spec.search == ScaleSearch::kMinMax ? 1.0 : spec.shrink_steps);
#pragma omp parallel for schedule(dynamic, 4) if (work > 2e6)
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index g = 0; g < groups; ++g) {
      const Index c0 = g * grid.group_size;
      const Index n = std::min(grid.group_size, w.cols() - c0);
      const GroupFit fit =
          search_group(w.data() + r * w.outerStride() + c0, imp ? imp + c0 : nullptr, n, w.innerStride(), spec);
      grid.scales(r, g) = fit.scale;
      grid.zeros(r, g) = fit.zero;
    }
  }
  return grid;
}

}  // namespace

Grid make_grid(const MatrixFRef& w, const GridSpec& spec) { return search(w, spec, nullptr); }

Grid make_grid(const MatrixFRef& w, const GridSpec& spec, const VectorD& importance) {
  return search(w, spec, &importance);
}

double grid_search_error(const MatrixFRef& w, const Grid& grid, const GridSpec& spec,
                         const VectorD* importance) {
  grid.validate(w.rows(), w.cols());
  double total = 0.0;
  for (Index r = 0; r < w.rows(); ++r)
    for (Index g = 0; g < grid.groups(); ++g) {
      const Index c0 = g * grid.group_size;
      const Index n = std::min(grid.group_size, w.cols() - c0);
      total += candidate_error(w.data() + r * w.outerStride() + c0, importance ? importance->data() + c0 : nullptr, n,
                               w.innerStride(), {grid.scales(r, g), grid.zeros(r, g)}, spec);
    }
  return total;
}

}  // namespace qround
