#include "qround/model/calibration_imatrix.hpp"

#include <fmt/format.h>

#include "qround/error.hpp"
#include "qround/model/gguf_llama.hpp"

namespace qround::model {

io::Imatrix collect_imatrix(const LlamaModel& model, const std::vector<std::vector<int>>& windows,
                            const CollectImatrixOptions& options, const ProgressFn& progress) {
  if (windows.empty())
    throw InvalidArgument("collect_imatrix: no calibration windows (expected at least one)");
  const int linears = model.num_linear();
  const int observed = linears + (options.process_output ? 1 : 0);
  std::vector<VectorD> sums(static_cast<std::size_t>(observed));
  for (int i = 0; i < linears; ++i) sums[i] = VectorD::Zero(model.linear(i).cols());
  if (options.process_output) sums[linears] = VectorD::Zero(model.config().dim);
  std::int64_t tokens = 0;
  for (std::size_t w = 0; w < windows.size(); ++w) {
    if (windows[w].empty())
      throw InvalidArgument(fmt::format("collect_imatrix: calibration window {} is empty", w));
    model.forward(
        windows[w],
        [&](int index, const MatrixFRef& x) {
          if (index >= observed) return true;
          VectorD& s = sums[static_cast<std::size_t>(index)];
          for (Index r = 0; r < x.rows(); ++r)
            for (Index c = 0; c < x.cols(); ++c) {
              const double v = x(r, c);
              s[c] += v * v;
            }
          return true;
        },
        options.process_output);
    tokens += static_cast<std::int64_t>(windows[w].size());
    if (progress && !progress(static_cast<double>(w + 1) / static_cast<double>(windows.size()),
                              fmt::format("imatrix: window {}/{}", w + 1, windows.size())))
      throw Cancelled();
  }
  std::vector<std::string> names;
  for (int i = 0; i < linears; ++i) names.push_back(gguf_linear_name(i));
  if (options.process_output)
    names.push_back(model.config().shared_classifier ? kGgufTokenEmbedding : kGgufOutput);
  io::ImatrixFromStatisticsOptions o;
  o.chunk_size = options.chunk_size > 0 ? options.chunk_size : model.config().seq_len;
  o.datasets = options.datasets;
  return io::imatrix_from_statistics(names, sums, std::vector<std::int64_t>(names.size(), tokens),
                                     o);
}

}  // namespace qround::model
