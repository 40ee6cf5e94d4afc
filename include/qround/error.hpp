// Error types. Every failure the library reports is a qround::Error; the subclass says whose fault
// it was (caller, file, numerics) and the message names the offending shape or value.
#pragma once

#include <stdexcept>
#include <string>

namespace qround {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The caller passed something outside the documented contract (shape, range, option).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A file could not be read or written, or its contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

// The numbers themselves are unusable: NaN/Inf, a Hessian no damping could make definite.
class NumericalError : public Error {
 public:
  using Error::Error;
};

// A declared shape would need more memory than the limit allows (qround/memory_limit.hpp);
// refused before allocating anything.
class MemoryLimitError : public Error {
 public:
  using Error::Error;
};

// The user's progress callback asked to stop.
class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled by the progress callback") {}
};

}  // namespace qround
