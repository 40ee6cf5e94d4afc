// Umbrella header: everything a user of the library needs.
#pragma once

#include "qround/error.hpp"
#include "qround/types.hpp"
#include "qround/version.hpp"

// Grids and the layer problem.
#include "qround/ggml_codec.hpp"
#include "qround/grid.hpp"
#include "qround/problem.hpp"
#include "qround/quantized.hpp"
#include "qround/scale_search.hpp"
#include "qround/synthetic.hpp"

// Rounding methods.
#include "qround/adaround.hpp"
#include "qround/flexround.hpp"
#include "qround/gptq.hpp"
#include "qround/mixed_precision.hpp"
#include "qround/nearest.hpp"
#include "qround/nupes.hpp"
#include "qround/round_layer.hpp"

// Packed weights, kernels and the inference check.
#include "qround/check.hpp"
#include "qround/isa.hpp"
#include "qround/packed.hpp"
#include "qround/qgemm.hpp"

// Files.
#include "qround/io/imatrix.hpp"
#include "qround/io/json.hpp"
#include "qround/io/npy.hpp"
#include "qround/io/report.hpp"
#include "qround/io/safetensors.hpp"

// Whole models.
#include "qround/model/evaluation.hpp"
#include "qround/model/llama.hpp"
#include "qround/model/llama2c.hpp"
#include "qround/model/llama_adapter.hpp"
#include "qround/model/tokenizer.hpp"
#include "qround/pipeline.hpp"
