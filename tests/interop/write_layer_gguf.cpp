// Writes a layer directory the interop check reads: DIR/layer.gguf (one tensor "weight" of a float
// ggml type, written by qround's GGUF writer) and DIR/dequant.npy (the float32 values qround says
// the file holds, converted by qround's own fp16/bf16 conversions). scripts/interop.sh compares
// llama.cpp's dequantization of the GGUF with dequant.npy bit for bit, as it does for the layers
// `qround quantize --format TYPE` writes.
//
//   write_layer_gguf f32|f16|bf16 SOURCE DIR
//     SOURCE: an .npy matrix, or synthetic:ROWSxCOLS:SEED (normal values at scales from 2^-30 to
//     2^20, with ±0, subnormals, fp16-overflowing values and exact ties for the rounding)
//   write_layer_gguf metadata OUT.gguf
//     a file with metadata of every GGUF value type and tensors of five ggml types (opaque bytes);
//     prints what qround's reader sees, in the format of `engine_check info`, for the comparison
//   write_layer_gguf importance COLS SEED OUT.npy
//     a 1 × COLS row of positive importance weights (mean x², as llama.cpp's imatrix holds)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "qround/detail/rng.hpp"
#include "qround/error.hpp"
#include "qround/format.hpp"
#include "qround/io/gguf.hpp"
#include "qround/io/npy.hpp"

namespace {

using qround::GgmlType;
using qround::MatrixF;

MatrixF synthetic(const std::string& spec) {
  long rows = 0, cols = 0;
  unsigned long long seed = 0;
  if (std::sscanf(spec.c_str(), "synthetic:%ldx%ld:%llu", &rows, &cols, &seed) != 3 || rows <= 0 ||
      cols <= 0)
    throw qround::InvalidArgument("SOURCE '" + spec + "': expected synthetic:ROWSxCOLS:SEED");
  qround::detail::Rng rng(seed);
  MatrixF m(rows, cols);
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols; ++c)
      m(r, c) = static_cast<float>(rng.normal() * std::ldexp(1.0, static_cast<int>(r % 51) - 30));
  // Values whose conversion is easy to get wrong: signed zeros, fp16/bf16 subnormals and the
  // smallest normals, ties to even, the edge of fp16's range and beyond (→ ±Inf in both).
  const float special[] = {0.0f,        -0.0f,       5.96e-8f,         -2.98e-8f, 6.1035e-5f,
                           1.00048828f, 1.00146484f, 65504.0f,         65519.0f,  65520.0f,
                           -1e6f,       1e-40f,      -1.17549435e-38f, 3.4e38f,   1.0f + 0x1p-8f};
  long k = 0;
  for (float v : special) {
    if (k >= m.size()) break;
    m(k / cols, k % cols) = v;
    ++k;
  }
  return m;
}

// One value, as engine_check prints it (floats in %a: exact).
void print_value(const qround::io::GgufValue& v) {
  std::visit(
      [](const auto& values) {
        using T = typename std::decay_t<decltype(values)>::value_type;
        for (const auto& x : values) {
          if constexpr (std::is_same_v<T, std::string>)
            std::printf(" %s", x.c_str());
          else if constexpr (std::is_floating_point_v<T>)
            std::printf(" %a", static_cast<double>(x));
          else if constexpr (std::is_signed_v<T>)
            std::printf(" %lld", static_cast<long long>(x));
          else
            std::printf(" %llu", static_cast<unsigned long long>(x));
        }
      },
      v.storage());
}

int write_metadata_file(const std::string& path) {
  using qround::io::GgufValue;
  qround::io::GgufFile f;
  qround::io::set_standard_metadata(f, "qround-test");
  f.set("t.u8", GgufValue::scalar<std::uint8_t>(255));
  f.set("t.i8", GgufValue::scalar<std::int8_t>(-128));
  f.set("t.u16", GgufValue::scalar<std::uint16_t>(65535));
  f.set("t.i16", GgufValue::scalar<std::int16_t>(-32768));
  f.set("t.u32", GgufValue::scalar<std::uint32_t>(4294967295u));
  f.set("t.i32", GgufValue::scalar<std::int32_t>(-2147483647 - 1));
  f.set("t.f32", GgufValue::scalar<float>(-1.17549435e-38f));
  f.set("t.bool", GgufValue::scalar<bool>(true));
  f.set("t.str", GgufValue::string("token\xe2\x96\x81"));
  f.set("t.u64", GgufValue::scalar<std::uint64_t>(18446744073709551615ull));
  f.set("t.i64", GgufValue::scalar<std::int64_t>(-9223372036854775807ll - 1));
  f.set("t.f64", GgufValue::scalar<double>(1e-310));
  f.set("a.u8", GgufValue::array<std::uint8_t>({0, 1, 255}));
  f.set("a.i16", GgufValue::array<std::int16_t>({-7, 8}));
  f.set("a.f32", GgufValue::array<float>({1.5f, -0.0f, 3e38f}));
  f.set("a.bool", GgufValue::array<bool>({true, false, true}));
  f.set("a.str", GgufValue::array<std::string>({"x", "yz", "<s>"}));
  f.set("a.i64", GgufValue::array<std::int64_t>({-5, 6}));
  f.set("a.f64", GgufValue::array<double>({3.25, -1e300}));
  f.set("a.empty", GgufValue::array<std::int32_t>({}));
  struct T {
    const char* name;
    GgmlType type;
    std::vector<std::int64_t> shape;
  };
  const T tensors[] = {{"f32", GgmlType::kF32, {5, 3}},
                       {"f16", GgmlType::kF16, {7, 2, 2}},
                       {"bf16", GgmlType::kBF16, {3}},
                       {"blk.0.q4_0", GgmlType::kQ4_0, {64, 3}},
                       {"blk.0.q4_k", GgmlType::kQ4_K, {512, 2, 1, 2}}};
  qround::detail::Rng rng(5);
  for (const T& t : tensors) {
    std::uint64_t rows = 1;
    for (std::size_t d = 1; d < t.shape.size(); ++d) rows *= static_cast<std::uint64_t>(t.shape[d]);
    std::vector<unsigned char> bytes(
        qround::ggml_row_bytes(t.type, static_cast<std::uint64_t>(t.shape[0])) * rows);
    // Opaque bytes; fp16 scales are kept finite so every type dequantizes to numbers.
    for (auto& b : bytes) b = static_cast<unsigned char>(rng.next() & 0x3b);
    f.add_tensor(t.name, t.type, t.shape, bytes.data(), bytes.size());
  }
  qround::io::write_gguf(path, f);

  const qround::io::GgufFile r = qround::io::read_gguf(path);
  std::printf("version %u alignment %u\n", r.version, r.alignment());
  for (const auto& [key, value] : r.metadata()) {
    std::printf("kv %s %u", key.c_str(), static_cast<unsigned>(value.type()));
    if (value.is_array())
      std::printf(" %u %zu", static_cast<unsigned>(value.element_type()), value.size());
    print_value(value);
    std::printf("\n");
  }
  for (const auto& t : r.tensors()) {
    std::printf("tensor %s %u", t.name.c_str(), static_cast<unsigned>(t.type));
    for (std::size_t d = 0; d < 4; ++d)
      std::printf(" %lld", static_cast<long long>(d < t.shape.size() ? t.shape[d] : 1));
    std::printf(" %llu\n", static_cast<unsigned long long>(t.offset));
  }
  return 0;
}

int write_importance(const char* cols_s, const char* seed_s, const char* out) {
  const long cols = std::atol(cols_s);
  if (cols <= 0)
    throw qround::InvalidArgument(std::string("COLS '") + cols_s + "' is not positive");
  qround::detail::Rng rng(std::strtoull(seed_s, nullptr, 10));
  MatrixF m(1, cols);
  for (long c = 0; c < cols; ++c) m(0, c) = static_cast<float>(std::exp(2.0 * rng.normal()));
  qround::io::save_npy(out, m);
  return 0;
}

// An LLM-like layer for `qround quantize`: DIR/W.npy (rows × cols, N(0, 0.02²) with a few large
// weights) and DIR/X.npy (tokens × cols, correlated inputs with outlier channels).
int write_problem(const char* rows_s, const char* cols_s, const char* tokens_s, const char* seed_s,
                  const char* dir) {
  const long rows = std::atol(rows_s), cols = std::atol(cols_s), tokens = std::atol(tokens_s);
  if (rows <= 0 || cols <= 0 || tokens <= 0)
    throw qround::InvalidArgument("ROWS, COLS and TOKENS must be positive");
  qround::detail::Rng rng(std::strtoull(seed_s, nullptr, 10));
  MatrixF w(rows, cols), x(tokens, cols);
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols; ++c)
      w(r, c) = static_cast<float>(0.02 * rng.normal() * (rng.below(97) == 0 ? 8.0 : 1.0));
  std::vector<double> shared(static_cast<size_t>(tokens));
  for (auto& v : shared) v = rng.normal();
  for (long t = 0; t < tokens; ++t)
    for (long c = 0; c < cols; ++c)
      x(t, c) = static_cast<float>((rng.normal() + 0.5 * shared[size_t(t)]) * (c % 61 == 0 ? 10 : 1));
  std::filesystem::create_directories(dir);
  qround::io::save_npy((std::filesystem::path(dir) / "W.npy").string(), w);
  qround::io::save_npy((std::filesystem::path(dir) / "X.npy").string(), x);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::string(argv[1]) == "problem") {
    try {
      return write_problem(argv[2], argv[3], argv[4], argv[5], argv[6]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "write_layer_gguf: %s\n", e.what());
      return 1;
    }
  }
  if ((argc == 5 && std::string(argv[1]) == "importance") ||
      (argc == 3 && std::string(argv[1]) == "metadata")) {
    try {
      return argc == 3 ? write_metadata_file(argv[2]) : write_importance(argv[2], argv[3], argv[4]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "write_layer_gguf: %s\n", e.what());
      return 1;
    }
  }
  if (argc != 4) {
    std::fprintf(stderr,
                 "usage: write_layer_gguf f32|f16|bf16 SOURCE.npy|synthetic:RxC:SEED DIR\n"
                 "       write_layer_gguf metadata OUT.gguf\n"
                 "       write_layer_gguf importance COLS SEED OUT.npy\n"
                 "       write_layer_gguf problem ROWS COLS TOKENS SEED DIR\n");
    return 2;
  }
  try {
    const GgmlType type = qround::parse_ggml_type(argv[1]);
    if (type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16)
      throw qround::InvalidArgument(std::string("type '") + argv[1] +
                                    "': expected f32, f16 or bf16");
    const std::string source = argv[2];
    const MatrixF w =
        source.rfind("synthetic:", 0) == 0 ? synthetic(source) : qround::io::load_npy_f32(source);
    const std::filesystem::path dir = argv[3];
    std::filesystem::create_directories(dir);

    // Row-major bytes of the stored type, and the float32 values they mean.
    std::vector<unsigned char> bytes;
    MatrixF simulated(w.rows(), w.cols());
    for (long r = 0; r < w.rows(); ++r)
      for (long c = 0; c < w.cols(); ++c) {
        const float x = w(r, c);
        float back = x;
        if (type == GgmlType::kF32) {
          const auto* p = reinterpret_cast<const unsigned char*>(&x);
          bytes.insert(bytes.end(), p, p + 4);
        } else {
          const std::uint16_t h =
              type == GgmlType::kF16 ? qround::fp32_to_fp16(x) : qround::fp32_to_bf16(x);
          back = type == GgmlType::kF16 ? qround::fp16_to_fp32(h) : qround::bf16_to_fp32(h);
          bytes.push_back(static_cast<unsigned char>(h & 0xff));
          bytes.push_back(static_cast<unsigned char>(h >> 8));
        }
        simulated(r, c) = back;
      }

    qround::io::GgufFile file;
    qround::io::set_standard_metadata(file, "qround-layer");
    file.add_tensor("weight", type, {w.cols(), w.rows()}, bytes.data(), bytes.size());
    qround::io::write_gguf((dir / "layer.gguf").string(), file);
    qround::io::save_npy((dir / "dequant.npy").string(), simulated);
    std::printf("%s: %ld x %ld %s\n", dir.c_str(), static_cast<long>(w.rows()),
                static_cast<long>(w.cols()), qround::to_string(type));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "write_layer_gguf: %s\n", e.what());
    return 1;
  }
}
