// Matrix aliases and small shared types. Weights are `out × in`, activations `tokens × in`, both
// row-major so PyTorch / safetensors / npy buffers map without a transpose.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <string_view>

namespace qround {

using Index = Eigen::Index;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

using MatrixF = RowMatrix<float>;
using MatrixD = RowMatrix<double>;
using MatrixI8 = RowMatrix<std::int8_t>;
using MatrixI32 = RowMatrix<std::int32_t>;
using VectorF = Eigen::VectorXf;
using VectorD = Eigen::VectorXd;

// Read-only views accepted by the public API: any row-major float buffer (e.g. Eigen::Map over a
// tensor) binds without a copy; other expressions are evaluated into a temporary.
using MatrixFRef = Eigen::Ref<const MatrixF>;
using MatrixDRef = Eigen::Ref<const MatrixD>;
using MatrixI8Ref = Eigen::Ref<const MatrixI8>;

// Progress of long work: fraction in [0, 1] and a short message. Returning false cancels; the
// callee then throws qround::Cancelled after leaving every output untouched.
using ProgressFn = std::function<bool(double fraction, std::string_view message)>;

}  // namespace qround
