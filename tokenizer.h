// bigs tokenizer: BERT uncased WordPiece, id-for-id identical to Hugging Face's
// tokenizers (BertNormalizer + BertPreTokenizer + WordPiece) for the same
// vocab.txt. Used by data_prep and bigs; tokenizer.cpp also has its own CLI.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bigs {

class Tokenizer {
 public:
  // Loads a vocab.txt (one token a line, id = line number - 1). On failure returns false and
  // sets *err to a message that names the file and says what is wrong.
  bool load(const std::string& vocab_path, std::string* err);
  // Same, from the tokens themselves (id = index); `source` names them in messages.
  bool load_tokens(std::vector<std::string> tokens, const std::string& source, std::string* err);
  int vocab_size() const;
  int pad_id() const;
  int unk_id() const;
  int cls_id() const;
  int sep_id() const;
  int mask_id() const;
  // Text -> ids without [CLS]/[SEP] (literal special tokens in the text are recognised). Appends
  // to *ids. Invalid UTF-8 is dropped (as U+FFFD would be). Thread-safe.
  void encode(std::string_view text, std::vector<int>* ids) const;
  // Model input: [CLS] a [SEP] (b [SEP]) with token types 0/1; if max_len > 0, truncated
  // (single: a cut to max_len-2; pair: longest-first to max_len-3 content tokens); if pad, padded
  // with [PAD] (type 0) to max_len. b == nullptr means a single text. Overwrites *ids and *types.
  void encode_model_input(std::string_view a, const std::string_view* b, int max_len, bool pad,
                          std::vector<int>* ids, std::vector<int>* types) const;
  // ids -> text: tokens joined with spaces, "##" pieces glued to the previous one; [PAD]
  // skipped; an id out of range reads as [UNK].
  std::string decode(const std::vector<int>& ids) const;
  const std::string& token(int id) const;      // id must be in range
  int token_id(std::string_view token) const;  // -1 if absent

 private:
  // A byte trie over the tokens; node 0 is the root of word-initial pieces, node 1 the root
  // of "##" continuation pieces (stored without the "##").
  struct Edge {
    uint32_t key;  // node << 8 | byte; kNoKey when the slot is empty
    int32_t child;
  };
  static constexpr uint32_t kNoKey = 0xffffffffu;
  int child(int node, unsigned char byte) const;
  int add_child(int node, unsigned char byte);
  // The longest piece of word[pos..] (a "##" piece when pos > 0): id and length, or id -1.
  int longest_piece(std::string_view word, size_t pos, size_t* len) const;
  void wordpiece(std::string_view word, int n_chars, std::vector<int>* ids) const;
  void encode_plain(std::string_view text, std::vector<int>* ids) const;
  // Whole-token hash (open addressing, power-of-two size), for token_id and the common case of
  // a word that is itself a token.
  static uint64_t hash(std::string_view s);

  // Hash slot: the hash's high bits, so that most misses never touch the text.
  struct Slot {
    uint32_t tag;
    int32_t id;  // -1: empty
  };
  std::vector<std::string> tokens_;
  std::string arena_;             // all tokens back to back, for cache-friendly compares
  std::vector<uint32_t> offset_;  // token id -> start in arena_; one more at the end
  std::vector<Slot> slots_;
  std::vector<int32_t> node_token_;  // token id ending at each trie node, or -1
  std::vector<Edge> edges_;          // (node, byte) -> child, open addressing
  int32_t root_child_[2][256] = {};  // the two roots' edges, direct
  int pad_ = -1, unk_ = -1, cls_ = -1, sep_ = -1, mask_ = -1;
};

// The words encode looks up, without a vocab: text cleaned, CJK ideographs spaced, NFD with
// nonspacing marks dropped, lowercased, split on whitespace and around punctuation (literal
// special tokens are not recognised here). For tests and tools.
std::vector<std::string> normalize_split(std::string_view text);

// Learns a WordPiece vocabulary (special tokens first) from text files. False + *err on failure.
// Merges the most frequent pair each step (HF's WordPieceTrainer recipe); see tokenizer.cpp.
bool train_wordpiece(const std::vector<std::string>& files, int vocab_size, int min_frequency,
                     std::vector<std::string>* vocab, std::string* err);

// How a training step picks the pair to merge: kFrequency, count(ab), as HF's
// WordPieceTrainer (BPE with "##"); kLikelihood, count(ab) / (count(a) count(b)), the
// likelihood gain of the original WordPiece.
enum class MergeScore { kFrequency, kLikelihood };
bool train_wordpiece(const std::vector<std::string>& files, int vocab_size, int min_frequency,
                     MergeScore score, std::vector<std::string>* vocab, std::string* err);

}  // namespace bigs
