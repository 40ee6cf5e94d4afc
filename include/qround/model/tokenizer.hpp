// The llama2.c BPE tokenizer (`tokenizer.bin` / `tok512.bin` format): int32 max token length, then
// per token a float32 merge score, an int32 byte length and the bytes.
//
// Encoding follows llama2.c: one dummy " " is prepended, each UTF-8 code point becomes its token
// if the vocabulary has it and otherwise one byte-fallback token per byte (id = byte + 3), then
// adjacent pairs are merged greedily, always the pair with the highest score (leftmost on ties).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qround::model {

class Tokenizer {
 public:
  static constexpr int kUnk = 0;
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;
  static constexpr int kByteFallbackBase = 3;  // byte b ↔ id b + 3

  // Reads a llama2.c tokenizer file holding exactly `vocab_size` records (the model header says
  // how many). Throws IoError on a missing, truncated, oversized or malformed file.
  static Tokenizer load(const std::string& path, int vocab_size);
  // From in-memory pieces (tests): scores and pieces must have the same length.
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  const std::string& piece(int id) const;
  float score(int id) const;

  // Token ids of `text` (BOS / EOS not added; an empty text gives no tokens, not even the space).
  std::vector<int> encode(std::string_view text) const;
  // Text of one token following `previous` (llama2.c: the space after BOS is dropped, byte-fallback
  // pieces "<0xNN>" become the raw byte).
  std::string decode_token(int previous, int token) const;
  // Text of a sequence, as if each token were decoded after the one before (start after BOS).
  std::string decode(const std::vector<int>& tokens) const;

 private:
  int lookup(std::string_view s) const;  // -1 when absent
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> index_;
};

}  // namespace qround::model
