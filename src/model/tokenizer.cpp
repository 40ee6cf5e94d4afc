#include "qround/model/tokenizer.hpp"

#include <fmt/format.h>

#include <cmath>
#include <queue>
#include <tuple>

#include "../io/file_bytes.hpp"
#include "qround/error.hpp"

namespace qround::model {
namespace {

constexpr std::int32_t kMaxTokenLength = 1 << 16;
constexpr int kMaxVocab = 1 << 24;

std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;  // a stray continuation or invalid byte stands alone (it will use byte fallback)
}

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores)
    : pieces_(std::move(pieces)), scores_(std::move(scores)) {
  if (pieces_.size() != scores_.size())
    throw InvalidArgument(fmt::format("tokenizer has {} pieces but {} scores", pieces_.size(),
                                      scores_.size()));
  if (pieces_.size() < static_cast<std::size_t>(kByteFallbackBase + 256))
    throw InvalidArgument(fmt::format(
        "tokenizer has {} tokens: expected at least 259 (unk, bos, eos and 256 byte tokens)",
        pieces_.size()));
  index_.reserve(pieces_.size());
  // The first id wins for a duplicated piece (llama2.c's binary search may return either).
  for (std::size_t i = 0; i < pieces_.size(); ++i)
    index_.emplace(pieces_[i], static_cast<int>(i));
}

Tokenizer Tokenizer::load(const std::string& path, int vocab_size) {
  if (vocab_size < kByteFallbackBase + 256 || vocab_size > kMaxVocab)
    throw InvalidArgument(fmt::format("vocabulary size {} must be in [259, {}]", vocab_size,
                                      kMaxVocab));
  const auto bytes = io_detail::read_file_bytes(
      path, "tokenizer", 4 + static_cast<std::uint64_t>(vocab_size) * (8 + kMaxTokenLength));
  io_detail::ByteCursor in(bytes.data(), bytes.size(), fmt::format("tokenizer '{}'", path));
  const auto max_len = in.read<std::int32_t>("max token length");
  if (max_len <= 0 || max_len > kMaxTokenLength)
    throw IoError(fmt::format("tokenizer '{}': max token length {} must be in [1, {}]", path,
                              max_len, kMaxTokenLength));
  std::vector<std::string> pieces(vocab_size);
  std::vector<float> scores(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    scores[i] = in.read<float>("token score");
    const auto len = in.read<std::int32_t>("token length");
    if (!std::isfinite(scores[i]))
      throw IoError(fmt::format("tokenizer '{}': token {} has a non-finite score", path, i));
    if (len < 0 || len > max_len)
      throw IoError(fmt::format("tokenizer '{}': token {} has length {}, expected 0..{}", path, i,
                                len, max_len));
    const unsigned char* p = in.take(static_cast<std::size_t>(len), "token bytes");
    pieces[i].assign(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
  }
  if (in.remaining() != 0)
    throw IoError(fmt::format("tokenizer '{}' has {} bytes after its {} tokens: wrong vocabulary "
                              "size or not a llama2.c tokenizer",
                              path, in.remaining(), vocab_size));
  return Tokenizer(std::move(pieces), std::move(scores));
}

const std::string& Tokenizer::piece(int id) const {
  if (id < 0 || id >= vocab_size())
    throw InvalidArgument(fmt::format("token id {} outside [0, {})", id, vocab_size()));
  return pieces_[id];
}

float Tokenizer::score(int id) const {
  piece(id);
  return scores_[id];
}

int Tokenizer::lookup(std::string_view s) const {
  const auto it = index_.find(std::string(s));
  return it == index_.end() ? -1 : it->second;
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  if (text.empty()) return ids;
  const int space = lookup(" ");
  if (space < 0) throw InvalidArgument("tokenizer has no ' ' token for the dummy prefix");
  ids.push_back(space);
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = utf8_length(static_cast<unsigned char>(text[i]));
    // A truncated or malformed sequence: take only the bytes that continue it.
    std::size_t k = 1;
    while (k < n && i + k < text.size() && is_continuation(static_cast<unsigned char>(text[i + k])))
      ++k;
    n = k;
    const int id = lookup(text.substr(i, n));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (std::size_t b = 0; b < n; ++b)
        ids.push_back(static_cast<unsigned char>(text[i + b]) + kByteFallbackBase);
    }
    i += n;
  }

  // Greedy merges over a linked list with a heap of candidate pairs. A candidate is keyed by
  // (score, -left position) so the heap pops exactly what llama2.c's full rescan would choose:
  // the highest score, and the leftmost pair among equal scores. Stale candidates (an end merged
  // away since) are skipped by comparing the recorded token ids.
  const std::size_t n = ids.size();
  std::vector<std::ptrdiff_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::ptrdiff_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::ptrdiff_t>(i + 1) : -1;
  }
  using Candidate = std::tuple<float, std::ptrdiff_t, std::ptrdiff_t, int, int, int>;
  // (score, -left, right, left id, right id, merged id)
  std::priority_queue<Candidate> heap;
  auto propose = [&](std::ptrdiff_t left) {
    if (left < 0) return;
    const std::ptrdiff_t right = next[left];
    if (right < 0) return;
    const int merged = lookup(pieces_[ids[left]] + pieces_[ids[right]]);
    if (merged < 0) return;
    heap.emplace(scores_[merged], -left, right, ids[left], ids[right], merged);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) propose(static_cast<std::ptrdiff_t>(i));
  while (!heap.empty()) {
    const auto [score, neg_left, right, left_id, right_id, merged] = heap.top();
    (void)score;
    heap.pop();
    const std::ptrdiff_t left = -neg_left;
    if (!alive[left] || !alive[right] || next[left] != right || ids[left] != left_id ||
        ids[right] != right_id)
      continue;
    ids[left] = merged;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    propose(prev[left]);
    propose(left);
  }
  std::vector<int> out;
  out.reserve(n);
  for (std::ptrdiff_t i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(ids[i]);
  return out;
}

std::string Tokenizer::decode_token(int previous, int token) const {
  const std::string& p = piece(token);
  std::string_view s = p;
  if (previous == kBos && !s.empty() && s[0] == ' ') s.remove_prefix(1);
  if (token >= kByteFallbackBase && token < kByteFallbackBase + 256 && s.size() == 6 &&
      s.substr(0, 3) == "<0x" && s[5] == '>')
    return std::string(1, static_cast<char>(token - kByteFallbackBase));
  return std::string(s);
}

std::string Tokenizer::decode(const std::vector<int>& tokens) const {
  std::string out;
  int previous = kBos;
  for (int t : tokens) {
    out += decode_token(previous, t);
    previous = t;
  }
  return out;
}

}  // namespace qround::model
