#include "qround/io/imatrix.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "file_bytes.hpp"
#include "qround/error.hpp"
#include "qround/io/atomic_file.hpp"
#include "qround/io/gguf.hpp"

namespace qround::io {
namespace {

// Key and tensor names: common/imatrix-loader.h (LLM_KV_IMATRIX_*), tools/imatrix/imatrix.cpp.
constexpr const char* kKeyType = "general.type";
constexpr const char* kKeyDatasets = "imatrix.datasets";
constexpr const char* kKeyChunkCount = "imatrix.chunk_count";
constexpr const char* kKeyChunkSize = "imatrix.chunk_size";
constexpr const char* kSumsSuffix = ".in_sum2";
constexpr const char* kCountsSuffix = ".counts";
constexpr std::uint64_t kMaxFileBytes = std::uint64_t{1} << 40;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string name_list(const Imatrix& m) {
  std::string out;
  const std::size_t shown = std::min<std::size_t>(m.entries.size(), 20);
  for (std::size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + m.entries[i].name;
  if (shown < m.entries.size()) out += fmt::format(", … ({} in all)", m.entries.size());
  return out.empty() ? "none" : out;
}

// What is wrong with one entry (empty when fine): shared by the readers (IoError) and validate().
std::string entry_problem(const ImatrixEntry& e) {
  if (e.name.empty()) return "an entry has an empty tensor name";
  if (e.name.find('\0') != std::string::npos)
    return fmt::format("tensor name '{}' contains a NUL byte", e.name.c_str());
  if (e.counts.empty()) return fmt::format("'{}' has no count: expected one per matrix", e.name);
  if (e.sums.empty()) return fmt::format("'{}' has no values: expected at least one", e.name);
  if (e.sums.size() % e.counts.size() != 0)
    return fmt::format("'{}' has {} values for {} counts: expected a multiple of the counts",
                       e.name, e.sums.size(), e.counts.size());
  for (std::size_t i = 0; i < e.sums.size(); ++i)
    if (!std::isfinite(e.sums[i]) || e.sums[i] < 0.0f)
      return fmt::format("'{}' value {} is {}: expected a finite sum of squares >= 0", e.name, i,
                         e.sums[i]);
  for (std::size_t i = 0; i < e.counts.size(); ++i)
    if (e.counts[i] < 0)
      return fmt::format("'{}' count {} is {}: expected >= 0", e.name, i, e.counts[i]);
  return {};
}

std::string order_problem(const std::vector<ImatrixEntry>& entries) {
  for (std::size_t i = 1; i < entries.size(); ++i)
    if (!(entries[i - 1].name < entries[i].name))
      return entries[i - 1].name == entries[i].name
                 ? fmt::format("tensor '{}' appears twice", entries[i].name)
                 : fmt::format("entries are not sorted by name ('{}' before '{}')",
                               entries[i - 1].name, entries[i].name);
  return {};
}

void finish_read(Imatrix& m, const std::string& what) {
  if (m.entries.empty()) throw IoError(fmt::format("{} holds no imatrix entries", what));
  std::sort(m.entries.begin(), m.entries.end(),
            [](const ImatrixEntry& a, const ImatrixEntry& b) { return a.name < b.name; });
  for (const ImatrixEntry& e : m.entries) {
    const std::string p = entry_problem(e);
    if (!p.empty()) throw IoError(fmt::format("{}: {}", what, p));
  }
  const std::string p = order_problem(m.entries);
  if (!p.empty()) throw IoError(fmt::format("{}: {}", what, p));
}

// ---- legacy .dat (save_imatrix_legacy / common_imatrix_load_legacy) ----

std::int32_t read_i32(io_detail::ByteCursor& cur, const std::string& field) {
  return cur.read<std::int32_t>(field.c_str());
}

Imatrix parse_legacy(const std::vector<unsigned char>& bytes, const std::string& what) {
  io_detail::ByteCursor cur(bytes.data(), bytes.size(), what);
  Imatrix m;
  m.form = ImatrixForm::kLegacy;
  const std::int32_t n_entries = read_i32(cur, "the entry count");
  // Each entry takes at least 4 + 1 + 4 + 4 + 4 bytes: refuse a count the file cannot hold.
  if (n_entries < 1 || static_cast<std::uint64_t>(n_entries) > cur.remaining() / 17)
    throw IoError(fmt::format("{}: entry count is {}: expected 1 to {} for a file of {} bytes",
                              what, n_entries, cur.remaining() / 17, bytes.size()));
  m.entries.reserve(static_cast<std::size_t>(n_entries));
  for (std::int32_t i = 0; i < n_entries; ++i) {
    const std::string where = fmt::format("entry {}", i);
    const std::int32_t len = read_i32(cur, where + " name length");
    if (len < 1 || static_cast<std::uint64_t>(len) > cur.remaining())
      throw IoError(fmt::format("{}: {} name length is {}: expected 1 to the {} bytes left", what,
                                where, len, cur.remaining()));
    ImatrixEntry e;
    const unsigned char* name = cur.take(static_cast<std::size_t>(len), "name");
    e.name.assign(reinterpret_cast<const char*>(name), static_cast<std::size_t>(len));
    const std::string field = fmt::format("entry {} ('{}')", i, e.name.c_str());
    const std::int32_t ncall = read_i32(cur, field + " ncall");
    // save_imatrix_legacy's ceiling division never stores less than 1 for an entry it keeps.
    if (ncall < 1)
      throw IoError(fmt::format("{}: {} ncall is {}: expected >= 1", what, field, ncall));
    const std::int32_t nval = read_i32(cur, field + " value count");
    if (nval < 1 || static_cast<std::uint64_t>(nval) > cur.remaining() / 4)
      throw IoError(fmt::format("{}: {} value count is {}: expected 1 to {} (the bytes left / 4)",
                                what, field, nval, cur.remaining() / 4));
    e.sums.resize(static_cast<std::size_t>(nval));
    std::memcpy(e.sums.data(), cur.take(static_cast<std::size_t>(nval) * 4, "values"),
                static_cast<std::size_t>(nval) * 4);
    e.counts = {ncall};
    m.entries.push_back(std::move(e));
  }
  // The trailer is optional (older files end here), then the chunk count, then the dataset name.
  if (cur.remaining() > 0) {
    m.chunk_count = read_i32(cur, "the chunk count");
    if (m.chunk_count < 0)
      throw IoError(fmt::format("{}: chunk count is {}: expected >= 0", what, m.chunk_count));
    if (cur.remaining() > 0) {
      const std::int32_t len = read_i32(cur, "the dataset name length");
      if (len < 0 || static_cast<std::uint64_t>(len) != cur.remaining())
        throw IoError(
            fmt::format("{}: dataset name length is {}: expected the {} bytes that end the file",
                        what, len, cur.remaining()));
      if (len > 0) {
        const unsigned char* p = cur.take(static_cast<std::size_t>(len), "the dataset name");
        m.datasets.emplace_back(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
      }
    }
  }
  finish_read(m, what);
  return m;
}

// ---- GGUF (save_imatrix / common_imatrix_load) ----

Imatrix parse_gguf_imatrix(std::vector<unsigned char> bytes, const std::string& what) {
  const GgufFile file = parse_gguf(std::move(bytes), what);
  Imatrix m;
  m.form = ImatrixForm::kGguf;
  if (const GgufValue* type = file.find(kKeyType)) {
    if (type->type() != GgufType::kString || type->get<std::string>() != "imatrix")
      throw IoError(fmt::format("{}: {} is {}: expected the string \"imatrix\" (is this a model?)",
                                what, kKeyType, type->describe()));
  }
  // llama-quantize refuses a GGUF imatrix without these three keys ("missing imatrix metadata").
  auto require = [&](const char* key, GgufType type, const char* expected) -> const GgufValue& {
    const GgufValue* v = file.find(key);
    if (!v)
      throw IoError(
          fmt::format("{}: metadata key {} is missing: expected {}", what, key, expected));
    const bool ok = type == GgufType::kArray
                        ? v->is_array() && v->element_type() == GgufType::kString
                        : v->type() == type;
    if (!ok)
      throw IoError(fmt::format("{}: {} is {}: expected {}", what, key, v->describe(), expected));
    return *v;
  };
  m.datasets =
      require(kKeyDatasets, GgufType::kArray, "an array of string").get_array<std::string>();
  // Read with gguf_get_val_u32, so they must be u32; kept as i32 as the loader keeps them.
  const std::uint32_t chunk_count =
      require(kKeyChunkCount, GgufType::kUint32, "a uint32").get<std::uint32_t>();
  const std::uint32_t chunk_size =
      require(kKeyChunkSize, GgufType::kUint32, "a uint32").get<std::uint32_t>();
  constexpr auto kI32Max = static_cast<std::uint32_t>(std::numeric_limits<std::int32_t>::max());
  if (chunk_count > kI32Max || chunk_size > kI32Max)
    throw IoError(fmt::format("{}: {} = {} and {} = {}: expected each below 2^31", what,
                              kKeyChunkCount, chunk_count, kKeyChunkSize, chunk_size));
  m.chunk_count = static_cast<std::int32_t>(chunk_count);
  m.chunk_size = static_cast<std::int32_t>(chunk_size);

  // Pair "<name>.in_sum2" with "<name>.counts"; other tensors are not imatrix data (the loader
  // ignores them too).
  const std::string sums_suffix = kSumsSuffix, counts_suffix = kCountsSuffix;
  for (const GgufTensor& t : file.tensors()) {
    if (!ends_with(t.name, sums_suffix)) continue;
    ImatrixEntry e;
    e.name = t.name.substr(0, t.name.size() - sums_suffix.size());
    const std::string counts_name = e.name + counts_suffix;
    if (!file.has_tensor(counts_name))
      throw IoError(fmt::format("{}: '{}' has no '{}': expected sums and counts in pairs", what,
                                t.name, counts_name));
    const GgufTensor& c = file.tensor(counts_name);
    if (t.type != GgmlType::kF32 || c.type != GgmlType::kF32)
      throw IoError(fmt::format("{}: '{}' is {} and '{}' is {}: expected both f32", what, t.name,
                                to_string(t.type), c.name, to_string(c.type)));
    // save_imatrix: in_sum2 {cols, matrices}, counts {1, matrices}.
    if (c.cols() != 1 || t.cols() < 1 || c.rows() != t.rows() || c.rows() < 1)
      throw IoError(fmt::format(
          "{}: '{}' has {} columns × {} matrices and '{}' {} × {}: expected {{cols, n}} and "
          "{{1, n}} with cols, n >= 1",
          what, t.name, t.cols(), t.rows(), c.name, c.cols(), c.rows()));
    e.sums.resize(static_cast<std::size_t>(t.elements()));
    std::memcpy(e.sums.data(), t.data(), e.sums.size() * sizeof(float));
    std::vector<float> counts(static_cast<std::size_t>(c.elements()));
    std::memcpy(counts.data(), c.data(), counts.size() * sizeof(float));
    for (std::size_t j = 0; j < counts.size(); ++j) {
      // The loader rounds with lround; the tool only ever stores whole token counts.
      const float v = counts[j];
      if (!std::isfinite(v) || v < 0.0f || v > 9.0e18f || v != std::nearbyint(v))
        throw IoError(fmt::format("{}: '{}' count {} is {}: expected a whole number >= 0", what,
                                  c.name, j, v));
      e.counts.push_back(static_cast<std::int64_t>(v));
    }
    m.entries.push_back(std::move(e));
  }
  for (const GgufTensor& t : file.tensors())
    if (ends_with(t.name, counts_suffix) &&
        !file.has_tensor(t.name.substr(0, t.name.size() - counts_suffix.size()) + sums_suffix))
      throw IoError(fmt::format("{}: '{}' has no matching '{}' tensor", what, t.name, sums_suffix));
  finish_read(m, what);
  return m;
}

Imatrix parse_any(std::vector<unsigned char> bytes, const std::string& what) {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0)
    return parse_gguf_imatrix(std::move(bytes), what);
  return parse_legacy(bytes, what);
}

// ---- writing ----

void put_i32(std::vector<unsigned char>& out, std::int32_t v) {
  unsigned char b[4];
  std::memcpy(b, &v, 4);
  out.insert(out.end(), b, b + 4);
}

std::int32_t to_i32(std::int64_t v, const std::string& what) {
  if (v < 0 || v > std::numeric_limits<std::int32_t>::max())
    throw InvalidArgument(fmt::format("{} is {}: the legacy format stores it as int32", what, v));
  return static_cast<std::int32_t>(v);
}

void require_chunk_size(const Imatrix& m, const char* conversion) {
  if (m.chunk_size < 1)
    throw InvalidArgument(
        fmt::format("converting an imatrix {} needs chunk_size (tokens per chunk) >= 1, got {}",
                    conversion, m.chunk_size));
}

std::vector<unsigned char> serialize_legacy(const Imatrix& m) {
  std::vector<unsigned char> out;
  put_i32(out, to_i32(static_cast<std::int64_t>(m.entries.size()), "the entry count"));
  if (m.form != ImatrixForm::kLegacy) require_chunk_size(m, "from GGUF to legacy");
  for (const ImatrixEntry& e : m.entries) {
    put_i32(out, to_i32(static_cast<std::int64_t>(e.name.size()), "a name length"));
    out.insert(out.end(), e.name.begin(), e.name.end());
    std::vector<float> values = e.sums;
    std::int64_t ncall = 0;
    if (m.form == ImatrixForm::kLegacy) {
      ncall = *std::max_element(e.counts.begin(), e.counts.end());
    } else {
      // save_imatrix_legacy: ceiling division "to avoid accidental zeros", then
      // (value / count) · ncall in float, a matrix with no tokens storing 1 · ncall.
      const std::int64_t most = *std::max_element(e.counts.begin(), e.counts.end());
      ncall = (most + (m.chunk_size - 1)) / m.chunk_size;
      const std::size_t cols = values.size() / e.counts.size();
      for (std::size_t i = 0; i < values.size(); ++i) {
        float count = static_cast<float>(e.counts[i / cols]);
        float value = e.sums[i];
        if (count == 0.0f) value = count = 1.0f;
        values[i] = (value / count) * static_cast<float>(ncall);
      }
    }
    if (ncall < 1)
      throw InvalidArgument(fmt::format(
          "imatrix entry '{}' has no tokens: the legacy format cannot store it (llama-imatrix "
          "skips such entries)",
          e.name));
    put_i32(out, to_i32(ncall, fmt::format("'{}' ncall", e.name)));
    put_i32(out, to_i32(static_cast<std::int64_t>(values.size()), "a value count"));
    const auto* p = reinterpret_cast<const unsigned char*>(values.data());
    out.insert(out.end(), p, p + values.size() * sizeof(float));
  }
  put_i32(out, m.chunk_count);
  // save_imatrix_legacy stores one dataset name: the last one.
  const std::string dataset = m.datasets.empty() ? std::string() : m.datasets.back();
  put_i32(out, to_i32(static_cast<std::int64_t>(dataset.size()), "the dataset name length"));
  out.insert(out.end(), dataset.begin(), dataset.end());
  return out;
}

std::vector<unsigned char> serialize_gguf_imatrix(const Imatrix& m) {
  if (m.form != ImatrixForm::kGguf) require_chunk_size(m, "from legacy to GGUF");
  if (m.chunk_count < 0 || m.chunk_size < 0)
    throw InvalidArgument(fmt::format("imatrix chunk_count {} and chunk_size {}: expected >= 0",
                                      m.chunk_count, m.chunk_size));
  GgufFile file;
  file.set(kGgufKeyAlignment, GgufValue::scalar<std::uint32_t>(kGgufAlignment));
  file.set(kKeyType, GgufValue::string("imatrix"));
  file.set(kKeyDatasets, GgufValue::array<std::string>(m.datasets));
  file.set(kKeyChunkCount,
           GgufValue::scalar<std::uint32_t>(static_cast<std::uint32_t>(m.chunk_count)));
  file.set(kKeyChunkSize,
           GgufValue::scalar<std::uint32_t>(static_cast<std::uint32_t>(m.chunk_size)));
  for (const ImatrixEntry& e : m.entries) {
    const std::int64_t n = e.matrices(), cols = e.cols();
    if (e.name.size() + std::strlen(kSumsSuffix) > kGgufMaxNameBytes)
      throw InvalidArgument(
          fmt::format("imatrix entry '{}' has a {}-byte name: with '{}' it exceeds GGUF's {} bytes",
                      e.name, e.name.size(), kSumsSuffix, kGgufMaxNameBytes));
    std::vector<float> sums = e.sums, counts(e.counts.size());
    for (std::size_t j = 0; j < counts.size(); ++j) counts[j] = static_cast<float>(e.counts[j]);
    if (m.form == ImatrixForm::kLegacy) {
      // IMatrixCollector::load_imatrix on a legacy file: sums · chunk_size, ncall · chunk_size.
      for (float& s : sums) s *= static_cast<float>(m.chunk_size);
      for (std::size_t j = 0; j < counts.size(); ++j)
        counts[j] = static_cast<float>(e.counts[j] * m.chunk_size);
    }
    // gguf.cpp stores ggml_n_dims dimensions: trailing 1s are dropped.
    using Shape = std::vector<std::int64_t>;
    file.add_tensor(e.name + kSumsSuffix, GgmlType::kF32, n == 1 ? Shape{cols} : Shape{cols, n},
                    sums.data(), sums.size() * sizeof(float));
    file.add_tensor(e.name + kCountsSuffix, GgmlType::kF32, n == 1 ? Shape{1} : Shape{1, n},
                    counts.data(), counts.size() * sizeof(float));
  }
  return serialize_gguf(file);
}

}  // namespace

const char* to_string(ImatrixForm form) { return form == ImatrixForm::kGguf ? "gguf" : "legacy"; }

std::int64_t ImatrixEntry::cols() const {
  return counts.empty() ? 0 : static_cast<std::int64_t>(sums.size()) / matrices();
}

const ImatrixEntry* Imatrix::find(const std::string& name) const {
  auto it =
      std::lower_bound(entries.begin(), entries.end(), name,
                       [](const ImatrixEntry& e, const std::string& n) { return e.name < n; });
  if (it != entries.end() && it->name == name) return &*it;
  // Not sorted (built by hand): fall back to a scan.
  for (const ImatrixEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

std::vector<std::string> Imatrix::names() const {
  std::vector<std::string> out;
  for (const ImatrixEntry& e : entries) out.push_back(e.name);
  return out;
}

std::vector<float> Imatrix::quantize_weights(const std::string& name) const {
  const ImatrixEntry* e = find(name);
  if (!e)
    throw InvalidArgument(
        fmt::format("the imatrix has no entry '{}' (it has: {})", name, name_list(*this)));
  const std::string p = entry_problem(*e);
  if (!p.empty()) throw InvalidArgument(fmt::format("imatrix: {}", p));
  // tools/quantize/quantize.cpp load_imatrix: GGUF sums / (float)count (1 where the count is 0);
  // legacy values / ncall, the int64 ncall converted to float by the division.
  const std::size_t cols = static_cast<std::size_t>(e->cols());
  std::vector<float> out(e->sums.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float count = static_cast<float>(e->counts[i / cols]);
    out[i] = count > 0.0f ? e->sums[i] / count : (form == ImatrixForm::kGguf ? 1.0f : e->sums[i]);
  }
  return out;
}

VectorD Imatrix::importance(const std::string& name, Index cols, Index matrix) const {
  const std::vector<float> w = quantize_weights(name);
  const ImatrixEntry& e = *find(name);
  if (e.cols() != cols)
    throw InvalidArgument(fmt::format(
        "imatrix entry '{}' has {} columns{}: expected {} (the layer's inputs)", name, e.cols(),
        e.matrices() > 1 ? fmt::format(" per matrix ({} matrices)", e.matrices()) : "", cols));
  if (matrix < 0 || matrix >= e.matrices())
    throw InvalidArgument(
        fmt::format("imatrix entry '{}' has {} matrices: matrix {} is out of range", name,
                    e.matrices(), matrix));
  VectorD out(cols);
  for (Index j = 0; j < cols; ++j) out[j] = w[static_cast<std::size_t>(matrix * cols + j)];
  return out;
}

void Imatrix::validate() const {
  for (const ImatrixEntry& e : entries) {
    const std::string p = entry_problem(e);
    if (!p.empty()) throw InvalidArgument(fmt::format("imatrix: {}", p));
  }
  const std::string p = order_problem(entries);
  if (!p.empty()) throw InvalidArgument(fmt::format("imatrix: {}", p));
  if (form == ImatrixForm::kLegacy)
    for (const ImatrixEntry& e : entries)
      if (e.counts.size() != 1)
        throw InvalidArgument(fmt::format(
            "imatrix entry '{}' has {} counts: a legacy imatrix has one ncall per entry", e.name,
            e.counts.size()));
  if (chunk_count < 0 || chunk_size < 0)
    throw InvalidArgument(fmt::format("imatrix chunk_count {} and chunk_size {}: expected >= 0",
                                      chunk_count, chunk_size));
}

Imatrix imatrix_from_statistics(const std::vector<std::string>& names,
                                const std::vector<VectorD>& hessian_diagonals,
                                const std::vector<std::int64_t>& tokens,
                                const ImatrixFromStatisticsOptions& options) {
  if (hessian_diagonals.size() != names.size() || tokens.size() != names.size())
    throw InvalidArgument(fmt::format(
        "imatrix_from_statistics: {} names, {} diagonals and {} token counts: expected one each",
        names.size(), hessian_diagonals.size(), tokens.size()));
  if (options.chunk_size < 1)
    throw InvalidArgument(fmt::format("imatrix chunk_size is {}: expected >= 1 tokens per chunk",
                                      options.chunk_size));
  Imatrix m;
  m.form = ImatrixForm::kGguf;
  m.datasets = options.datasets;
  m.chunk_size = options.chunk_size;
  std::int64_t most = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const VectorD& d = hessian_diagonals[i];
    if (tokens[i] < 1)
      throw InvalidArgument(fmt::format(
          "imatrix_from_statistics: '{}' has {} tokens: expected >= 1 (llama-imatrix has no entry "
          "for a tensor it never saw)",
          names[i], tokens[i]));
    if (d.size() < 1)
      throw InvalidArgument(
          fmt::format("imatrix_from_statistics: '{}' has an empty diagonal", names[i]));
    ImatrixEntry e;
    e.name = names[i];
    e.counts = {tokens[i]};
    e.sums.resize(static_cast<std::size_t>(d.size()));
    for (Index j = 0; j < d.size(); ++j) {
      if (!std::isfinite(d[j]) || d[j] < 0.0 ||
          d[j] > static_cast<double>(std::numeric_limits<float>::max()))
        throw InvalidArgument(fmt::format(
            "imatrix_from_statistics: '{}' diag(XᵀX)[{}] is {}: expected a finite sum of "
            "squares >= 0 that fits a float",
            names[i], j, d[j]));
      e.sums[static_cast<std::size_t>(j)] = static_cast<float>(d[j]);
    }
    most = std::max(most, tokens[i]);
    m.entries.push_back(std::move(e));
  }
  std::sort(m.entries.begin(), m.entries.end(),
            [](const ImatrixEntry& a, const ImatrixEntry& b) { return a.name < b.name; });
  m.validate();  // names: non-empty, unique
  // collect_imatrix: m_last_chunk = count / chunk_size (integer division) of the largest count.
  const std::int64_t chunks = most / options.chunk_size;
  if (chunks > std::numeric_limits<std::int32_t>::max())
    throw InvalidArgument(fmt::format("imatrix_from_statistics: {} chunks overflow int32", chunks));
  m.chunk_count = static_cast<std::int32_t>(chunks);
  return m;
}

Imatrix read_imatrix(const std::string& path) {
  const std::string what = fmt::format("imatrix '{}'", path);
  return parse_any(io_detail::read_file_bytes(path, "imatrix", kMaxFileBytes), what);
}

Imatrix parse_imatrix(const std::vector<unsigned char>& bytes, const std::string& what) {
  return parse_any(bytes, what);
}

std::vector<unsigned char> serialize_imatrix(const Imatrix& imatrix, ImatrixForm form) {
  imatrix.validate();
  if (imatrix.entries.empty())
    throw InvalidArgument("an imatrix with no entries: llama.cpp refuses such a file");
  return form == ImatrixForm::kGguf ? serialize_gguf_imatrix(imatrix) : serialize_legacy(imatrix);
}

void write_imatrix(const std::string& path, const Imatrix& imatrix, ImatrixForm form) {
  const std::vector<unsigned char> bytes = serialize_imatrix(imatrix, form);
  write_file_atomic(path,
                    std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace qround::io
