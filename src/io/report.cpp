#include "qround/io/report.hpp"

namespace qround::io {

json::Value to_json(const RoundingReport& r) {
  json::Value v = json::Value::object();
  v.set("method", r.method);
  v.set("bits", r.bits);
  v.set("group_size", static_cast<long long>(r.group_size));
  v.set("symmetric", r.symmetric);
  v.set("scale_search", r.scale_search);
  v.set("loss", r.loss);
  v.set("loss_rtn", r.loss_rtn);
  v.set("relative_loss", r.relative_loss);
  v.set("relative_loss_rtn", r.relative_loss_rtn);
  v.set("seconds", r.seconds);
  v.set("iterations", r.iterations);
  json::Value curve = json::Value::array();
  for (const auto& [it, loss] : r.loss_curve) curve.push_back(json::Value::Array{it, loss});
  v.set("loss_curve", std::move(curve));
  json::Value notes = json::Value::array();
  for (const auto& n : r.notes) notes.push_back(n);
  v.set("notes", std::move(notes));
  return v;
}

}  // namespace qround::io
