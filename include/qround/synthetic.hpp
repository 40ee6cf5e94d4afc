// LLM-like synthetic layers for demos, tests and benchmarks: inputs with correlated features and a
// few outlier channels (as the inputs of real transformer projections have), weights that are
// mostly Gaussian with rare large values. Deterministic for a seed.
#pragma once

#include <cstdint>

#include "qround/types.hpp"

namespace qround {

struct SyntheticLayerOptions {
  Index out = 256;
  Index in = 512;
  Index tokens = 2048;
  std::uint64_t seed = 1;
  Index latent_factors = 16;      // low-rank part that correlates the input features
  double outlier_fraction = 0.01; // input channels with a much larger scale
  double outlier_scale = 20.0;
  double heavy_weight_fraction = 0.002;  // weights drawn 8× wider
  void validate() const;
};

struct SyntheticLayer {
  MatrixF weights;  // out × in
  MatrixF inputs;   // tokens × in
};

SyntheticLayer make_synthetic_layer(const SyntheticLayerOptions& options = {});

}  // namespace qround
