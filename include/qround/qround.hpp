// Umbrella header: everything a user of the library needs.
#pragma once

#include "qround/error.hpp"
#include "qround/grid.hpp"
#include "qround/nearest.hpp"
#include "qround/problem.hpp"
#include "qround/quantized.hpp"
#include "qround/round_layer.hpp"
#include "qround/scale_search.hpp"
#include "qround/synthetic.hpp"
#include "qround/types.hpp"
#include "qround/version.hpp"
#include "qround/io/json.hpp"
#include "qround/io/report.hpp"
