// bigs tokenizer: BERT uncased WordPiece, the library (tokenizer.h) and the
// `tokenizer` command (encode / decode / train).
//
// The ids match Hugging Face's tokenizers (BertWordPieceTokenizer, lowercase)
// on any text; dev/tokenizer_parity.py checks that on a multilingual corpus and
// on every code point, dev/bench_tokenizer.py measures the speed. The pipeline,
// as HF runs it:
//   1. literal [PAD] [UNK] [CLS] [SEP] [MASK] in the raw text are those tokens
//   2. clean: drop U+0000, U+FFFD, control and format characters; whitespace -> ' '
//   3. spaces around CJK ideographs
//   4. NFD, drop nonspacing marks (Mn), lowercase
//   5. split on whitespace, and split every punctuation character off
//   6. per word: greedy longest-match-first WordPiece, "##" for continuations;
//      a word over 100 characters, or one that cannot be covered, is [UNK]
// Steps 2-5 are one pass over the bytes: ASCII through a 128-entry class table,
// everything else through unicode_tables.h (dev/gen_unicode_tables.py), which
// already holds lower(drop_Mn(NFD(c))) for each code point. Step 6 first looks the
// whole word up in a hash (most words are tokens), else walks a byte trie.
#include "tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "bigsc/unicode_tables.h"

namespace bigs {

// ----------------------------------------------------------------------------
// Characters

namespace {

constexpr int kMaxWordChars = 100;  // HF WordPiece's max_input_chars_per_word

// What the pipeline does with an ASCII byte.
enum AsciiClass : uint8_t { kWordChar, kSpaceChar, kDropChar, kPunctChar };

struct AsciiTables {
  uint8_t cls[128];
  char lower[128];
  constexpr AsciiTables() : cls(), lower() {
    for (int c = 0; c < 128; c++) {
      lower[c] = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      if (c == '\t' || c == '\n' || c == '\r' || c == ' ') {
        cls[c] = kSpaceChar;
      } else if (c < 0x20 || c == 0x7f) {
        cls[c] = kDropChar;  // Cc, including \v and \f, which clean_text drops
      } else if ((c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) ||
                 (c >= 0x7b && c <= 0x7e)) {
        cls[c] = kPunctChar;
      } else {
        cls[c] = kWordChar;
      }
    }
  }
};
constexpr AsciiTables kAscii;

// Decodes one UTF-8 character at s[*i] and advances *i. Anything that is not
// well-formed UTF-8 (stray continuation bytes, overlong forms, surrogates, past
// U+10FFFF, a truncated sequence) costs one byte and reads as U+FFFD.
uint32_t decode_utf8(const unsigned char* s, size_t n, size_t* i) {
  constexpr uint32_t kBad = 0xfffd;
  size_t p = *i;
  unsigned char b0 = s[p];
  int len;
  uint32_t cp, min;
  if (b0 < 0x80) {
    *i = p + 1;
    return b0;
  } else if ((b0 & 0xe0) == 0xc0) {
    len = 2, cp = b0 & 0x1f, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, cp = b0 & 0x0f, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    *i = p + 1;
    return kBad;
  }
  if (p + len > n) {
    *i = p + 1;
    return kBad;
  }
  for (int k = 1; k < len; k++) {
    unsigned char b = s[p + k];
    if ((b & 0xc0) != 0x80) {
      *i = p + 1;
      return kBad;
    }
    cp = cp << 6 | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) {
    *i = p + 1;
    return kBad;
  }
  *i = p + len;
  return cp;
}

int encode_utf8(uint32_t cp, char* out) {
  if (cp < 0x80) {
    out[0] = static_cast<char>(cp);
    return 1;
  } else if (cp < 0x800) {
    out[0] = static_cast<char>(0xc0 | cp >> 6);
    out[1] = static_cast<char>(0x80 | (cp & 0x3f));
    return 2;
  } else if (cp < 0x10000) {
    out[0] = static_cast<char>(0xe0 | cp >> 12);
    out[1] = static_cast<char>(0x80 | (cp >> 6 & 0x3f));
    out[2] = static_cast<char>(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = static_cast<char>(0xf0 | cp >> 18);
  out[1] = static_cast<char>(0x80 | (cp >> 12 & 0x3f));
  out[2] = static_cast<char>(0x80 | (cp >> 6 & 0x3f));
  out[3] = static_cast<char>(0x80 | (cp & 0x3f));
  return 4;
}

// ----------------------------------------------------------------------------
// Normalisation and pre-tokenisation (steps 1-5), one pass

// The literal special tokens, recognised in the raw text before anything else
// (HF adds them as special AddedTokens: case-sensitive, anywhere, even inside a
// word: "the[MASK]." is the, [MASK], .).
struct Special {
  std::string_view text;
  int id;
};

// Builds one word of normalised UTF-8. NFD puts a run of combining marks in
// canonical order (stable sort by combining class); the marks that survive the
// Mn filter are rare (a few Mc, marks newer than HF's tables), so the run is kept
// sorted by insertion only when one of them arrives.
class WordBuilder {
 public:
  std::string word;
  int n_chars = 0;

  void append_ascii(char c) {
    word.push_back(c);
    n_chars++;
    n_marks_ = 0;
  }
  void append(uint32_t cp, uint8_t ccc) {
    char buf[4];
    int len = encode_utf8(cp, buf);
    n_chars++;
    if (ccc == 0) {
      word.append(buf, len);
      n_marks_ = 0;
      return;
    }
    if (n_marks_ == kMaxMarks) {  // the word is over kMaxWordChars: [UNK] in any order
      word.append(buf, len);
      return;
    }
    // Insert before the trailing marks of a higher class, keeping equal classes in order.
    int k = n_marks_;
    while (k > 0 && marks_[k - 1].ccc > ccc) k--;
    size_t at = k < n_marks_ ? marks_[k].offset : word.size();
    word.insert(at, buf, len);
    for (int j = n_marks_; j > k; j--) marks_[j] = {marks_[j - 1].offset + len, marks_[j - 1].ccc};
    marks_[k] = {at, ccc};
    n_marks_++;
  }
  // A starter that produced no output (a dropped Mn of class 0) still ends the run.
  void end_mark_run() { n_marks_ = 0; }
  void clear() {
    word.clear();
    n_chars = 0;
    n_marks_ = 0;
  }

 private:
  // A longer run of marks makes a word too long for WordPiece anyway, so this
  // bounds the insertion sort without changing any result.
  static constexpr int kMaxMarks = kMaxWordChars + 1;
  struct Mark {
    size_t offset;
    uint8_t ccc;
  };
  Mark marks_[kMaxMarks];
  int n_marks_ = 0;
};

// Splits text into normalised words: on_word(std::string_view word, int n_chars)
// for each, on_special(int id) for each literal special token, in text order.
template <class OnWord, class OnSpecial>
void split_words(std::string_view text, const Special* specials, int n_specials, WordBuilder* wb,
                 OnWord&& on_word, OnSpecial&& on_special) {
  const unsigned char* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  wb->clear();
  auto flush = [&] {
    if (wb->n_chars > 0) on_word(std::string_view(wb->word), wb->n_chars);
    wb->clear();
  };
  // One output code point of the normaliser: punctuation is a word of its own.
  auto emit = [&](uint32_t cp) {
    const uni::Entry& e = uni::lookup(cp);
    if (e.flags & uni::kSpace) {
      flush();
    } else if (e.flags & uni::kPunct) {
      flush();
      wb->append(cp, 0);
      flush();
    } else {
      wb->append(cp, e.ccc);
    }
  };
  size_t i = 0;
  while (i < n) {
    unsigned char b = s[i];
    if (b < 0x80) {
      switch (kAscii.cls[b]) {
        case kWordChar:
          // The common case: a run of letters and digits, lowercased in place.
          do {
            wb->append_ascii(kAscii.lower[b]);
            b = ++i < n ? s[i] : 0;
          } while (b < 0x80 && kAscii.cls[b] == kWordChar && i < n);
          continue;
        case kSpaceChar:
          flush();
          break;
        case kDropChar:
          break;
        case kPunctChar:
          flush();
          if (b == '[' && n_specials > 0) {
            const Special* hit = nullptr;
            for (int k = 0; k < n_specials && !hit; k++) {
              if (text.substr(i, specials[k].text.size()) == specials[k].text) hit = &specials[k];
            }
            if (hit) {
              on_special(hit->id);
              i += hit->text.size();
              continue;
            }
          }
          wb->append_ascii(static_cast<char>(b));
          flush();
          break;
      }
      i++;
      continue;
    }
    uint32_t cp = decode_utf8(s, n, &i);
    const uni::Entry& e = uni::lookup(cp);
    if (e.flags & uni::kDrop) continue;  // U+FFFD (bad UTF-8) lands here too
    if (e.flags & uni::kSpace) {
      flush();
    } else if (e.flags & uni::kHangul) {
      // NFD of a Hangul syllable by formula (Unicode 3.12): leading, vowel, trailing jamo.
      uint32_t si = cp - 0xac00;
      wb->append(0x1100 + si / 588, 0);
      wb->append(0x1161 + si % 588 / 28, 0);
      if (si % 28) wb->append(0x11a7 + si % 28, 0);
    } else if (e.flags & uni::kCjk) {
      flush();
      for (int k = 0; k < (e.len == uni::kSelf ? 1 : e.len); k++) {
        emit(e.len == uni::kSelf ? cp : e.map[k]);
      }
      flush();
    } else if (e.len == uni::kSelf) {
      emit(cp);
    } else {
      for (int k = 0; k < e.len; k++) emit(e.map[k]);
      if (e.len == 0 && e.ccc == 0) wb->end_mark_run();
    }
  }
  flush();
}

}  // namespace

// ----------------------------------------------------------------------------
// Vocabulary: whole-token hash and piece trie

uint64_t Tokenizer::hash(std::string_view s) {
  // FNV-style over 8-byte words, then a final mix: quick for the short keys we see. The
  // tail is gathered byte by byte (a variable-length memcpy would be a libc call).
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  for (int shift = 0; i < s.size(); i++, shift += 8) {
    tail |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << shift;
  }
  h = (h ^ tail) * 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 32);
}

int Tokenizer::token_id(std::string_view token) const {
  if (slots_.empty()) return -1;
  uint64_t h = hash(token);
  uint32_t tag = static_cast<uint32_t>(h >> 32);
  size_t mask = slots_.size() - 1;
  for (size_t k = h & mask;; k = (k + 1) & mask) {
    const Slot& slot = slots_[k];
    if (slot.id < 0) return -1;
    if (slot.tag == tag && offset_[slot.id + 1] - offset_[slot.id] == token.size() &&
        std::memcmp(arena_.data() + offset_[slot.id], token.data(), token.size()) == 0) {
      return slot.id;
    }
  }
}

int Tokenizer::child(int node, unsigned char byte) const {
  if (node < 2) return root_child_[node][byte] ? root_child_[node][byte] : -1;
  uint32_t key = static_cast<uint32_t>(node) << 8 | byte;
  size_t mask = edges_.size() - 1;
  for (size_t k = (key * 0x9e3779b97f4a7c15ull) >> 20 & mask;; k = (k + 1) & mask) {
    if (edges_[k].key == key) return edges_[k].child;
    if (edges_[k].key == kNoKey) return -1;
  }
}

int Tokenizer::add_child(int node, unsigned char byte) {
  int c = child(node, byte);
  if (c >= 0) return c;
  c = static_cast<int>(node_token_.size());
  node_token_.push_back(-1);
  if (node < 2) {
    root_child_[node][byte] = c;
    return c;
  }
  uint32_t key = static_cast<uint32_t>(node) << 8 | byte;
  size_t mask = edges_.size() - 1;
  size_t k = (key * 0x9e3779b97f4a7c15ull) >> 20 & mask;
  while (edges_[k].key != kNoKey) k = (k + 1) & mask;
  edges_[k] = {key, c};
  return c;
}

bool Tokenizer::load(const std::string& vocab_path, std::string* err) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) {
    *err = vocab_path + ": cannot open vocab file (" + std::strerror(errno) +
           "); pass a BERT vocab.txt, e.g. data/bert-base-uncased-vocab.txt";
    return false;
  }
  std::vector<std::string> tokens;
  std::string line;
  if (in.peek() == 0xEF) {
    char bom[3] = {};
    in.read(bom, 3);
    if (in.gcount() == 3 && !std::memcmp(bom, "\xEF\xBB\xBF", 3)) {
      *err = vocab_path + ": starts with a UTF-8 byte-order mark (bytes EF BB BF), which would become part of its "
             "first token; save the file without it (e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' " + vocab_path + ")";
      return false;
    }
    in.clear();
    in.seekg(0);
  }
  while (std::getline(in, line)) {
    // HF trims trailing whitespace (and so the \r of a CRLF file) from each token.
    while (!line.empty() && std::strchr(" \t\r\v\f", line.back())) line.pop_back();
    tokens.push_back(line);
  }
  if (in.bad()) {
    *err = vocab_path + ": read error";
    return false;
  }
  return load_tokens(std::move(tokens), vocab_path, err);
}

bool Tokenizer::load_tokens(std::vector<std::string> tokens, const std::string& source,
                            std::string* err) {
  if (tokens.empty()) {
    *err = source + ": vocab is empty; expected one token a line";
    return false;
  }
  // The trie packs node << 8 into 32 bits, so at most 2^24 nodes.
  size_t bytes = 0;
  for (const std::string& t : tokens) bytes += t.size();
  if (tokens.size() > (1u << 24) || bytes >= (1u << 24) - 2) {
    *err = source + ": vocab too large (" + std::to_string(tokens.size()) + " tokens)";
    return false;
  }
  tokens_ = std::move(tokens);
  arena_.clear();
  offset_.clear();
  for (const std::string& t : tokens_) offset_.push_back(arena_.size()), arena_ += t;
  offset_.push_back(arena_.size());
  size_t cap = 16;
  while (cap < 2 * tokens_.size()) cap *= 2;
  slots_.assign(cap, Slot{0, -1});
  for (int id = 0; id < static_cast<int>(tokens_.size()); id++) {
    size_t mask = cap - 1;
    uint64_t h = hash(tokens_[id]);
    size_t k = h & mask;
    // A duplicate token keeps its last id, as HF's vocab map does.
    while (slots_[k].id >= 0 && tokens_[slots_[k].id] != tokens_[id]) k = (k + 1) & mask;
    slots_[k] = {static_cast<uint32_t>(h >> 32), id};
  }
  cap = 16;
  while (cap < 2 * bytes) cap *= 2;
  edges_.assign(cap, Edge{kNoKey, -1});
  std::memset(root_child_, 0, sizeof(root_child_));
  node_token_.assign(2, -1);
  for (int id = 0; id < static_cast<int>(tokens_.size()); id++) {
    std::string_view t = tokens_[id];
    int node = 0;
    if (t.size() > 2 && t.substr(0, 2) == "##") node = 1, t.remove_prefix(2);
    if (t.empty()) continue;
    for (unsigned char c : t) node = add_child(node, c);
    node_token_[node] = token_id(tokens_[id]);
  }
  pad_ = token_id("[PAD]"), unk_ = token_id("[UNK]"), cls_ = token_id("[CLS]");
  sep_ = token_id("[SEP]"), mask_ = token_id("[MASK]");
  std::string missing;
  for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (token_id(s) < 0) missing += std::string(missing.empty() ? "" : ", ") + s;
  }
  if (!missing.empty()) {
    *err = source + ": vocab lacks the special token(s) " + missing +
           "; a BERT vocab has all of [PAD] [UNK] [CLS] [SEP] [MASK]";
    tokens_.clear();
    slots_.clear();
    return false;
  }
  return true;
}

int Tokenizer::vocab_size() const { return static_cast<int>(tokens_.size()); }
int Tokenizer::pad_id() const { return pad_; }
int Tokenizer::unk_id() const { return unk_; }
int Tokenizer::cls_id() const { return cls_; }
int Tokenizer::sep_id() const { return sep_; }
int Tokenizer::mask_id() const { return mask_; }
const std::string& Tokenizer::token(int id) const { return tokens_[id]; }

// ----------------------------------------------------------------------------
// WordPiece (step 6)

int Tokenizer::longest_piece(std::string_view word, size_t pos, size_t* len) const {
  int node = pos == 0 ? 0 : 1;
  int best = -1;
  for (size_t j = pos; j < word.size(); j++) {
    node = child(node, static_cast<unsigned char>(word[j]));
    if (node < 0) break;
    // In a UTF-8 vocab every token is whole characters: a match ends on a character boundary.
    if (node_token_[node] >= 0) best = node_token_[node], *len = j + 1 - pos;
  }
  return best;
}

void Tokenizer::wordpiece(std::string_view word, int n_chars, std::vector<int>* ids) const {
  if (n_chars > kMaxWordChars) {
    ids->push_back(unk_);
    return;
  }
  int whole = token_id(word);
  if (whole >= 0) {
    ids->push_back(whole);
    return;
  }
  size_t start = ids->size();
  for (size_t pos = 0; pos < word.size();) {
    size_t len = 0;
    int id = longest_piece(word, pos, &len);
    if (id < 0) {  // one uncovered piece makes the whole word [UNK]
      ids->resize(start);
      ids->push_back(unk_);
      return;
    }
    ids->push_back(id);
    pos += len;
  }
}

void Tokenizer::encode(std::string_view text, std::vector<int>* ids) const {
  if (tokens_.empty()) return;
  const Special specials[] = {
      {"[PAD]", pad_}, {"[UNK]", unk_}, {"[CLS]", cls_}, {"[SEP]", sep_}, {"[MASK]", mask_}};
  // One builder per thread keeps encode const, thread-safe and free of allocation.
  thread_local WordBuilder wb;
  split_words(
      text, specials, 5, &wb,
      [&](std::string_view word, int n_chars) { wordpiece(word, n_chars, ids); },
      [&](int id) { ids->push_back(id); });
}

std::vector<std::string> normalize_split(std::string_view text) {
  std::vector<std::string> words;
  WordBuilder wb;
  split_words(
      text, nullptr, 0, &wb, [&](std::string_view w, int) { words.emplace_back(w); }, [](int) {});
  return words;
}

// ----------------------------------------------------------------------------
// Model input, decode

void Tokenizer::encode_model_input(std::string_view a, const std::string_view* b, int max_len,
                                   bool pad, std::vector<int>* ids, std::vector<int>* types) const {
  std::vector<int> ta, tb;
  encode(a, &ta);
  if (b) encode(*b, &tb);
  if (max_len > 0) {
    if (!b) {
      ta.resize(std::min(ta.size(), static_cast<size_t>(std::max(max_len - 2, 0))));
    } else if (ta.size() + tb.size() > static_cast<size_t>(std::max(max_len - 3, 0))) {
      // HF's longest_first, as tokenizers computes it (equivalent to removing one token
      // at a time from the longer side; on a tie the second text keeps the extra one):
      // the shorter side keeps all it can, leaving the rest to the longer; if both are
      // over half, they split the budget, the longer one getting the odd token.
      size_t budget = static_cast<size_t>(std::max(max_len - 3, 0));
      size_t n1 = ta.size(), n2 = tb.size();
      bool swap = n1 > n2;
      if (swap) std::swap(n1, n2);
      n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
      if (n1 + n2 > budget) n1 = budget / 2, n2 = n1 + budget % 2;
      if (swap) std::swap(n1, n2);
      ta.resize(n1);
      tb.resize(n2);
    }
  }
  ids->clear();
  types->clear();
  ids->push_back(cls_);
  ids->insert(ids->end(), ta.begin(), ta.end());
  ids->push_back(sep_);
  types->assign(ids->size(), 0);
  if (b) {
    ids->insert(ids->end(), tb.begin(), tb.end());
    ids->push_back(sep_);
    types->resize(ids->size(), 1);
  }
  if (pad && max_len > 0 && ids->size() < static_cast<size_t>(max_len)) {
    ids->resize(max_len, pad_);
    types->resize(max_len, 0);
  }
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  bool first = true;
  for (int id : ids) {
    if (id == pad_) continue;
    const std::string& t = id >= 0 && id < vocab_size() ? tokens_[id] : tokens_[unk_];
    // As HF's WordPiece decoder: only a piece after the first loses its "##".
    if (!first && t.size() > 2 && t.compare(0, 2, "##") == 0) {
      out.append(t, 2, std::string::npos);
    } else {
      if (!first) out.push_back(' ');
      out += t;
    }
    first = false;
  }
  return out;
}

// ----------------------------------------------------------------------------
// Training a vocabulary
//
// Words are counted after the same normalisation as encode; each word starts as
// its characters ("c" first, "##c" after); then the best pair (a, b) is merged,
// over and over, until the vocab is full. "Best" is, by default, the most
// frequent pair: HF's WordPieceTrainer recipe (BPE merges on "##" pieces). The
// alternative, the likelihood score count(ab) / (count(a) count(b)) of the
// original WordPiece (Schuster & Nakajima 2012, as the HF course describes it),
// prefers pairs whose parts rarely occur apart; on the King James Bible at 8000
// tokens it never merges "the" and encodes 2.3 bytes a token against 4.x for
// frequency, so it is an option (--score likelihood), not the default.
// Pairs seen fewer than min_frequency times are never merged. Every character
// of the corpus is in the vocab (the most frequent ones, if there are more
// characters than room), so training text encodes without [UNK].

namespace {

struct TrainWord {
  std::vector<int> syms;
  int64_t freq;
};

struct TrainPair {
  int a, b;
  int64_t count;
  std::vector<int> words;  // words that contain (or once contained) the pair
};

class PairTable {
 public:
  std::vector<TrainPair> pairs;
  void add(int a, int b, int64_t delta, int word) {
    uint64_t key = static_cast<uint64_t>(a) << 32 | static_cast<uint32_t>(b);
    auto it = index_.find(key);
    int p;
    if (it == index_.end()) {
      p = static_cast<int>(pairs.size());
      index_.emplace(key, p);
      pairs.push_back({a, b, 0, {}});
    } else {
      p = it->second;
    }
    pairs[p].count += delta;
    if (delta > 0 && (pairs[p].words.empty() || pairs[p].words.back() != word)) {
      pairs[p].words.push_back(word);
    }
  }

 private:
  std::unordered_map<uint64_t, int> index_;
};

}  // namespace

bool train_wordpiece(const std::vector<std::string>& files, int vocab_size, int min_frequency,
                     std::vector<std::string>* vocab, std::string* err) {
  return train_wordpiece(files, vocab_size, min_frequency, MergeScore::kFrequency, vocab, err);
}

bool train_wordpiece(const std::vector<std::string>& files, int vocab_size, int min_frequency,
                     MergeScore merge_score, std::vector<std::string>* vocab, std::string* err) {
  const std::vector<std::string> specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  if (vocab_size < static_cast<int>(specials.size()) + 1) {
    *err = "vocab size " + std::to_string(vocab_size) + " is too small; it must exceed " +
           std::to_string(specials.size()) + ", the special tokens";
    return false;
  }
  if (files.empty()) {
    *err = "no training files given";
    return false;
  }
  // 1. Word counts.
  std::unordered_map<std::string, int64_t> word_counts;
  WordBuilder wb;
  std::string text;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      *err = path + ": cannot open training file (" + std::strerror(errno) + ")";
      return false;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    split_words(
        text, nullptr, 0, &wb,
        [&](std::string_view w, int n_chars) {
          if (n_chars <= kMaxWordChars) word_counts[std::string(w)]++;  // else [UNK] anyway
        },
        [](int) {});
  }
  if (word_counts.empty()) {
    *err = "the training files hold no words";
    return false;
  }
  // Sorted, so that the result does not depend on the hash map's order.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts.begin(), word_counts.end());
  std::sort(sorted.begin(), sorted.end());
  word_counts.clear();

  // 2. Words as characters; the alphabet.
  std::vector<std::string> sym_text;
  std::vector<int64_t> sym_count;
  std::unordered_map<std::string, int> sym_id;
  auto intern = [&](const std::string& s) {
    auto it = sym_id.find(s);
    if (it != sym_id.end()) return it->second;
    sym_id.emplace(s, static_cast<int>(sym_text.size()));
    sym_text.push_back(s);
    sym_count.push_back(0);
    return static_cast<int>(sym_text.size()) - 1;
  };
  std::vector<TrainWord> words;
  for (const auto& [w, freq] : sorted) {
    TrainWord tw{{}, freq};
    for (size_t i = 0; i < w.size();) {
      size_t len = 1;
      while (i + len < w.size() && (static_cast<unsigned char>(w[i + len]) & 0xc0) == 0x80) len++;
      int s = intern((i == 0 ? "" : "##") + w.substr(i, len));
      sym_count[s] += freq;
      tw.syms.push_back(s);
      i += len;
    }
    words.push_back(std::move(tw));
  }
  std::vector<int> alphabet(sym_text.size());
  for (size_t s = 0; s < alphabet.size(); s++) alphabet[s] = static_cast<int>(s);
  std::sort(alphabet.begin(), alphabet.end(), [&](int x, int y) {
    return sym_count[x] != sym_count[y] ? sym_count[x] > sym_count[y] : sym_text[x] < sym_text[y];
  });
  size_t room = vocab_size - specials.size();
  if (alphabet.size() > room) alphabet.resize(room);
  std::sort(alphabet.begin(), alphabet.end(),
            [&](int x, int y) { return sym_text[x] < sym_text[y]; });
  *vocab = specials;
  std::vector<bool> in_vocab(sym_text.size(), false);
  for (int s : alphabet) vocab->push_back(sym_text[s]), in_vocab[s] = true;

  // 3. Merges.
  PairTable table;
  for (int w = 0; w < static_cast<int>(words.size()); w++) {
    const std::vector<int>& s = words[w].syms;
    for (size_t j = 0; j + 1 < s.size(); j++) table.add(s[j], s[j + 1], words[w].freq, w);
  }
  const int64_t min_count = std::max(min_frequency, 1);
  std::vector<int> seen(words.size(), -1);
  for (int step = 0; static_cast<int>(vocab->size()) < vocab_size; step++) {
    int best = -1;
    double best_score = 0;
    for (int p = 0; p < static_cast<int>(table.pairs.size()); p++) {
      const TrainPair& tp = table.pairs[p];
      // A pair of a character left out of the alphabet could never be encoded.
      if (tp.count < min_count || !in_vocab[tp.a] || !in_vocab[tp.b]) continue;
      double score = static_cast<double>(tp.count);
      if (merge_score == MergeScore::kLikelihood) {
        score /= static_cast<double>(sym_count[tp.a]) * static_cast<double>(sym_count[tp.b]);
      }
      if (best < 0 || score > best_score ||
          (score == best_score && tp.count > table.pairs[best].count)) {
        best = p, best_score = score;
      }
    }
    if (best < 0) break;  // nothing left to merge: the vocab stays smaller
    const int a = table.pairs[best].a, b = table.pairs[best].b;
    const std::string& tb = sym_text[b];
    int ab = intern(sym_text[a] + (tb.compare(0, 2, "##") == 0 ? tb.substr(2) : tb));
    if (ab >= static_cast<int>(in_vocab.size())) in_vocab.resize(ab + 1, false);
    if (!in_vocab[ab]) vocab->push_back(sym_text[ab]), in_vocab[ab] = true;
    std::vector<int> where = std::move(table.pairs[best].words);
    table.pairs[best].words.clear();
    for (int w : where) {
      if (seen[w] == step) continue;
      seen[w] = step;
      std::vector<int>& s = words[w].syms;
      const int64_t f = words[w].freq;
      for (size_t j = 0; j + 1 < s.size(); j++) {
        if (s[j] != a || s[j + 1] != b) continue;
        if (j > 0) table.add(s[j - 1], a, -f, w), table.add(s[j - 1], ab, f, w);
        if (j + 2 < s.size()) table.add(b, s[j + 2], -f, w), table.add(ab, s[j + 2], f, w);
        table.add(a, b, -f, w);
        sym_count[a] -= f, sym_count[b] -= f, sym_count[ab] += f;
        s[j] = ab;
        s.erase(s.begin() + j + 1);
      }
    }
  }
  return true;
}

}  // namespace bigs

// ----------------------------------------------------------------------------
// Command line

#ifndef TOKENIZER_NO_MAIN

#include "bigsc/cli.h"

namespace bigs {
namespace {

const char* kUsage =
    "usage: tokenizer COMMAND [options] [FILE...]\n"
    "  encode  one line of ids (or token strings, or token types) per input line\n"
    "  decode  one line of space-separated ids -> one line of text\n"
    "  train   learn a WordPiece vocab from text files\n"
    "Files default to stdin. Run `tokenizer COMMAND --help` for the options of each.\n";

// Says what went wrong; returns the exit status: 1 for a failure while
// running (bad input, unreadable files), 2 for a bad command line.
int fail(const char* cmd, const std::string& msg, int status = 1) {
  std::fprintf(stderr, "tokenizer %s: %s\n", cmd, msg.c_str());
  return status;
}
int usage_error(const char* cmd, const std::string& msg) { return fail(cmd, msg, 2); }

// Parses argv against the flag table (cli.h); returns -1 to go on, else the
// exit status (0 after --help, 2 for a bad command line).
int parse_command(const char* cmd, int argc, char** argv, const std::vector<Flag>& flags,
                  const char* usage, std::vector<std::string>* files) {
  std::string err;
  const int rc = parse_flags(argc, argv, flags, usage, files, &err);
  if (rc == 1) return 0;
  if (rc != 0) return usage_error(cmd, err);
  return -1;
}

// Loads the vocab --vocab names and prints the run's settings on stderr
// (stdout is the output). Returns -1 to go on, else the exit status.
int start(const char* cmd, const std::string& vocab, const std::vector<Flag>& flags, Tokenizer* tk) {
  if (vocab.empty()) return usage_error(cmd, "needs --vocab VOCAB (e.g. data/bert-base-uncased-vocab.txt)");
  std::string err;
  if (!tk->load(vocab, &err)) return fail(cmd, err);
  std::fprintf(stderr, "tokenizer %s\n", cmd);
  print_settings(stderr, flags);
  std::fprintf(stderr, "  %-22s %d\n", "vocab-size", tk->vocab_size());
  return -1;
}

// Reads the inputs (files, or stdin when there are none) in batches of whole
// lines, so that a file of any size streams through bounded memory.
class LineReader {
 public:
  explicit LineReader(std::vector<std::string> paths) : paths_(std::move(paths)) {
    if (paths_.empty()) paths_.push_back("-");
  }
  ~LineReader() { close(); }
  // Fills *lines (views into an internal buffer, valid until the next call); false at the end.
  bool next(std::vector<std::string_view>* lines, std::string* err) {
    constexpr size_t kBatch = 8 << 20;
    lines->clear();
    buf_.swap(carry_);
    carry_.clear();
    size_t done = 0;  // bytes of buf_ that are complete lines
    while (true) {
      if (!f_ && !open_next(err)) return false;
      if (!f_) break;  // all files read
      size_t last_nl = buf_.rfind('\n');
      if (last_nl != std::string::npos && buf_.size() >= kBatch) {
        done = last_nl + 1;
        break;
      }
      size_t old = buf_.size();
      buf_.resize(old + (1 << 20));
      size_t got = std::fread(&buf_[old], 1, 1 << 20, f_);
      buf_.resize(old + got);
      if (got == 0) {
        if (std::ferror(f_)) {
          *err = name_ + ": read error";
          return false;
        }
        // End of this file: a last line without \n still counts; next file.
        if (!buf_.empty() && buf_.back() != '\n') buf_.push_back('\n');
        close();
        done = buf_.size();
        if (done >= kBatch) break;
      }
    }
    carry_.assign(buf_, done, std::string::npos);
    buf_.resize(done);
    for (size_t i = 0; i < buf_.size();) {
      size_t nl = buf_.find('\n', i);
      lines->emplace_back(buf_.data() + i, nl - i);
      i = nl + 1;
    }
    return !lines->empty() || f_ || next_file_ < paths_.size();
  }

 private:
  bool open_next(std::string* err) {
    while (next_file_ < paths_.size()) {
      name_ = paths_[next_file_++];
      if (name_ == "-") {
        f_ = stdin, name_ = "stdin";
        return true;
      }
      f_ = std::fopen(name_.c_str(), "rb");
      if (!f_) {
        *err = name_ + ": cannot open (" + std::strerror(errno) + ")";
        return false;
      }
      return true;
    }
    return true;
  }
  void close() {
    if (f_ && f_ != stdin) std::fclose(f_);
    f_ = nullptr;
  }
  std::vector<std::string> paths_;
  size_t next_file_ = 0;
  FILE* f_ = nullptr;
  std::string name_, buf_, carry_;
};

// Runs fn(line, &out) over a batch of lines on n_threads threads, each thread
// on a contiguous share of the bytes, and writes the outputs in input order.
template <class Fn>
bool run_batch(const std::vector<std::string_view>& lines, int n_threads, Fn fn) {
  size_t total = 0;
  for (std::string_view l : lines) total += l.size() + 1;
  int t_count = static_cast<int>(std::min<size_t>(n_threads, std::max<size_t>(lines.size(), 1)));
  std::vector<size_t> cut(t_count + 1, lines.size());
  cut[0] = 0;
  size_t acc = 0, t = 1;
  for (size_t i = 0; i < lines.size() && t < cut.size() - 1; i++) {
    acc += lines[i].size() + 1;
    if (acc * t_count >= total * t) cut[t++] = i + 1;
  }
  std::vector<std::string> outs(t_count);
  auto work = [&](int k) {
    for (size_t i = cut[k]; i < cut[k + 1]; i++) fn(lines[i], &outs[k]);
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < t_count; k++) pool.emplace_back(work, k);
  work(0);
  for (std::thread& th : pool) th.join();
  for (const std::string& o : outs) {
    if (std::fwrite(o.data(), 1, o.size(), stdout) != o.size()) return false;
  }
  return true;
}

void append_int(int v, std::string* out) {
  char buf[16];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, r.ptr);
}

int cmd_encode(int argc, char** argv) {
  std::string vocab;
  bool as_tokens = false, special = false, pad = false, pair = false, as_types = false;
  long long max_len = 0, threads = std::max(1u, std::thread::hardware_concurrency());
  const std::vector<Flag> flags = {
      {Flag::Str, "vocab", &vocab, 0, 0, "BERT vocab.txt, one token a line (required)"},
      {Flag::Switch, "tokens", &as_tokens, 0, 0, "print token strings instead of ids"},
      {Flag::Switch, "special", &special, 0, 0, "add [CLS] ... [SEP]"},
      {Flag::Switch, "pair", &pair, 0, 0, "lines are A<TAB>B: [CLS] A [SEP] B [SEP] (implies --special)"},
      {Flag::Switch, "types", &as_types, 0, 0, "print the token types (0 first text, 1 second), not the ids"},
      {Flag::Int, "max-len", &max_len, 0, 1 << 30, "truncate to this many tokens (pairs: longest first); 0 = no limit"},
      {Flag::Switch, "pad", &pad, 0, 0, "pad with [PAD] to --max-len"},
      {Flag::Int, "threads", &threads, 1, 1024, "worker threads; all cores unless given"},
  };
  const char* usage =
      "usage: tokenizer encode --vocab VOCAB [options] [FILE...]\n"
      "One line of ids (or token strings, or token types) per input line (split on \\n only).";
  std::vector<std::string> files;
  int rc = parse_command("encode", argc, argv, flags, usage, &files);
  if (rc >= 0) return rc;
  if (pair) special = true;
  if (pad && max_len == 0) return usage_error("encode", "--pad needs --max-len N");
  if (as_types && (as_tokens || !special))
    return usage_error("encode", "--types goes with --special or --pair, not --tokens");
  const long long min_len = pair ? 3 : special ? 2 : 1;
  if (max_len > 0 && max_len < min_len) {
    return usage_error("encode", "--max-len " + std::to_string(max_len) + " leaves no room: it must be at least " +
                                     std::to_string(min_len) + " with " + (pair ? "--pair" : "--special"));
  }
  Tokenizer tk;
  if ((rc = start("encode", vocab, flags, &tk)) >= 0) return rc;
  std::string err;
  auto print = [&](const std::vector<int>& ids, const std::vector<int>& types, std::string* out) {
    for (size_t i = 0; i < ids.size(); i++) {
      if (i) out->push_back(' ');
      if (as_tokens) {
        *out += tk.token(ids[i]);
      } else {
        append_int(as_types ? types[i] : ids[i], out);
      }
    }
    out->push_back('\n');
  };
  auto encode_line = [&](std::string_view line, std::string* out) {
    thread_local std::vector<int> ids, types;
    if (pair) {
      size_t tab = line.find('\t');
      std::string_view a = line.substr(0, tab), b = line.substr(tab + 1);
      tk.encode_model_input(a, &b, static_cast<int>(max_len), pad, &ids, &types);
    } else if (special) {
      tk.encode_model_input(line, nullptr, static_cast<int>(max_len), pad, &ids, &types);
    } else {
      ids.clear();
      tk.encode(line, &ids);
      if (max_len > 0) ids.resize(std::min<size_t>(ids.size(), max_len));
      if (pad && ids.size() < static_cast<size_t>(max_len)) ids.resize(max_len, tk.pad_id());
    }
    print(ids, types, out);
  };
  LineReader reader(files);
  std::vector<std::string_view> lines;
  size_t line_no = 0;
  while (reader.next(&lines, &err)) {
    if (pair) {
      for (size_t i = 0; i < lines.size(); i++) {
        if (lines[i].find('\t') == std::string_view::npos) {
          return fail("encode", "--pair: input line " + std::to_string(line_no + i + 1) +
                                    " has no TAB between its two texts");
        }
      }
    }
    line_no += lines.size();
    if (!run_batch(lines, static_cast<int>(threads), encode_line)) {
      return fail("encode", std::string("cannot write output: ") + std::strerror(errno));
    }
  }
  if (!err.empty()) return fail("encode", err);
  if (std::fflush(stdout) != 0) return fail("encode", std::string("cannot write output: ") + std::strerror(errno));
  return 0;
}

int cmd_decode(int argc, char** argv) {
  std::string vocab;
  const std::vector<Flag> flags = {
      {Flag::Str, "vocab", &vocab, 0, 0, "BERT vocab.txt, one token a line (required)"},
  };
  const char* usage =
      "usage: tokenizer decode --vocab VOCAB [FILE...]\n"
      "One line of space-separated ids -> one line of text ([PAD] dropped, ## pieces joined).";
  std::vector<std::string> files;
  int rc = parse_command("decode", argc, argv, flags, usage, &files);
  if (rc >= 0) return rc;
  Tokenizer tk;
  if ((rc = start("decode", vocab, flags, &tk)) >= 0) return rc;
  std::string err;
  LineReader reader(files);
  std::vector<std::string_view> lines;
  std::vector<int> ids;
  size_t line_no = 0;
  while (reader.next(&lines, &err)) {
    std::string out;
    for (std::string_view line : lines) {
      line_no++;
      ids.clear();
      const char* p = line.data();
      const char* end = p + line.size();
      while (true) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
        if (p == end) break;
        int id = -1;
        auto r = std::from_chars(p, end, id);
        if (r.ec != std::errc() || id < 0 || id >= tk.vocab_size() ||
            (r.ptr < end && *r.ptr != ' ' && *r.ptr != '\t' && *r.ptr != '\r')) {
          return fail("decode", "line " + std::to_string(line_no) + ": \"" + std::string(p, std::find(p, end, ' ')) +
                                    "\" is not an id in [0, " + std::to_string(tk.vocab_size()) + ")");
        }
        ids.push_back(id);
        p = r.ptr;
      }
      out += tk.decode(ids);
      out.push_back('\n');
    }
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) {
      return fail("decode", std::string("cannot write output: ") + std::strerror(errno));
    }
  }
  if (!err.empty()) return fail("decode", err);
  return std::fflush(stdout) == 0 ? 0 : fail("decode", "cannot write output");
}

int cmd_train(int argc, char** argv) {
  long long vocab_size = 0, min_freq = 2;
  std::string out, score = "frequency";
  const std::vector<Flag> flags = {
      {Flag::Int, "vocab-size", &vocab_size, 6, 1 << 20, "tokens in the vocab, specials included (required)"},
      {Flag::Str, "out", &out, 0, 0, "the vocab.txt to write (required)"},
      {Flag::Int, "min-frequency", &min_freq, 1, 1 << 30, "pairs seen fewer times are never merged"},
      {Flag::Str, "score", &score, 0, 0, "merge the most frequent pair (as HF's WordPieceTrainer) or the likeliest"},
  };
  const char* usage =
      "usage: tokenizer train --vocab-size N --out VOCAB [options] FILE...\n"
      "Learns a WordPiece vocab from plain UTF-8 text files. --score: frequency or likelihood.";
  std::vector<std::string> files;
  int rc = parse_command("train", argc, argv, flags, usage, &files);
  if (rc >= 0) return rc;
  if (vocab_size == 0) return usage_error("train", "needs --vocab-size N (e.g. 8000)");
  if (out.empty()) return usage_error("train", "needs --out VOCAB (the vocab.txt to write)");
  if (files.empty()) return usage_error("train", "needs at least one text FILE");
  if (score != "frequency" && score != "likelihood")
    return usage_error("train", "--score " + score + ": expected frequency or likelihood");
  std::fprintf(stderr, "tokenizer train\n");
  print_settings(stderr, flags);
  std::fprintf(stderr, "  %-22s %zu\n", "files", files.size());
  std::vector<std::string> vocab;
  std::string err;
  MergeScore ms = score == "frequency" ? MergeScore::kFrequency : MergeScore::kLikelihood;
  if (!train_wordpiece(files, static_cast<int>(vocab_size), static_cast<int>(min_freq), ms, &vocab,
                       &err)) {
    return fail("train", err);
  }
  // Write to a temporary file and rename, so a failed run never leaves half a vocab.
  std::string tmp = out + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return fail("train", tmp + ": cannot create (" + std::strerror(errno) + ")");
  for (const std::string& t : vocab) std::fprintf(f, "%s\n", t.c_str());
  if (std::fclose(f) != 0 || std::rename(tmp.c_str(), out.c_str()) != 0) {
    return fail("train", out + ": cannot write (" + std::strerror(errno) + ")");
  }
  std::fprintf(stderr, "tokenizer train: wrote %zu tokens to %s\n", vocab.size(), out.c_str());
  return 0;
}

}  // namespace

}  // namespace bigs

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(bigs::kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "encode") return bigs::cmd_encode(argc - 1, argv + 1);
  if (cmd == "decode") return bigs::cmd_decode(argc - 1, argv + 1);
  if (cmd == "train") return bigs::cmd_train(argc - 1, argv + 1);
  std::fprintf(stderr, "tokenizer: unknown command \"%s\"; use encode, decode or train\n%s",
               cmd.c_str(), bigs::kUsage);
  return 2;
}

#endif  // TOKENIZER_NO_MAIN
