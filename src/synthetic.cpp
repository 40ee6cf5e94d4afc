#include "qround/synthetic.hpp"

#include <fmt/format.h>

#include <cmath>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"

namespace qround {

void SyntheticLayerOptions::validate() const {
  if (out < 1 || in < 1 || tokens < 1)
    throw InvalidArgument(fmt::format("synthetic layer {}×{} with {} tokens: all must be >= 1",
                                      out, in, tokens));
  if (latent_factors < 0)
    throw InvalidArgument(fmt::format("latent_factors = {} must be >= 0", latent_factors));
  if (!(outlier_fraction >= 0.0 && outlier_fraction <= 1.0) ||
      !(heavy_weight_fraction >= 0.0 && heavy_weight_fraction <= 1.0))
    throw InvalidArgument("synthetic layer fractions must lie in [0, 1]");
}

SyntheticLayer make_synthetic_layer(const SyntheticLayerOptions& o) {
  o.validate();
  detail::Rng rng(o.seed);
  SyntheticLayer layer;
  // Inputs: X = Z·M + noise, Z tokens × k Gaussian, M k × in; then per-channel scales.
  MatrixF mixing(o.latent_factors, o.in);
  for (Index i = 0; i < mixing.size(); ++i) mixing.data()[i] = static_cast<float>(rng.normal());
  VectorF channel_scale(o.in);
  for (Index j = 0; j < o.in; ++j) {
    const bool outlier = rng.uniform() < o.outlier_fraction;
    channel_scale[j] =
        static_cast<float>((outlier ? o.outlier_scale : 1.0) * (0.5 + rng.uniform()));
  }
  MatrixF latent(o.tokens, o.latent_factors);
  for (Index i = 0; i < latent.size(); ++i) latent.data()[i] = static_cast<float>(rng.normal());
  layer.inputs.resize(o.tokens, o.in);
  if (o.latent_factors > 0)
    layer.inputs.noalias() = latent * mixing * (1.0f / std::sqrt(float(o.latent_factors)));
  else
    layer.inputs.setZero();
  for (Index t = 0; t < o.tokens; ++t)
    for (Index j = 0; j < o.in; ++j)
      layer.inputs(t, j) = (layer.inputs(t, j) + 0.5f * static_cast<float>(rng.normal())) *
                           channel_scale[j];
  // Weights: N(0, 1/in) with rare entries 8× wider.
  layer.weights.resize(o.out, o.in);
  const double sd = 1.0 / std::sqrt(static_cast<double>(o.in));
  for (Index i = 0; i < layer.weights.size(); ++i) {
    const double wide = rng.uniform() < o.heavy_weight_fraction ? 8.0 : 1.0;
    layer.weights.data()[i] = static_cast<float>(rng.normal() * sd * wide);
  }
  return layer;
}

}  // namespace qround
