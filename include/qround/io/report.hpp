// JSON form of a RoundingReport (what `qround quantize` writes as report.json).
#pragma once

#include "qround/io/json.hpp"
#include "qround/quantized.hpp"

namespace qround::io {

json::Value to_json(const RoundingReport& report);

}  // namespace qround::io
