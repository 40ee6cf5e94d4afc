// Throttled progress reporting for long iterative methods: calls the user's ProgressFn at most
// about `updates` times over `total` steps (and always at the end), and turns a `false` answer into
// qround::Cancelled. Call it from one thread only (the one that owns the loop), never from inside
// a parallel region.
#pragma once

#include <string>

#include "qround/error.hpp"
#include "qround/types.hpp"

namespace qround::detail {

class ProgressThrottle {
 public:
  ProgressThrottle(const ProgressFn& fn, long total, std::string message, long updates = 200)
      : fn_(fn), total_(total), message_(std::move(message)),
        every_(total / (updates > 0 ? updates : 1) > 0 ? total / (updates > 0 ? updates : 1) : 1) {}

  // Reports `done` of `total` steps when due; throws Cancelled if the callback says stop.
  void update(long done) {
    if (!fn_) return;
    if (done != total_ && done % every_ != 0) return;
    const double fraction = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_)
                                       : 1.0;
    if (!fn_(fraction, message_)) throw Cancelled();
  }

 private:
  const ProgressFn& fn_;
  long total_;
  std::string message_;
  long every_;
};

}  // namespace qround::detail
