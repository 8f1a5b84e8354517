// Unit tests of the tokenizer library (tokenizer.h): each normalisation step,
// WordPiece, special tokens, pairs, truncation, padding, decode, training, and
// bad input; then the `tokenizer` command's flags and messages. Id-for-id
// parity with Hugging Face on a large multilingual corpus is
// dev/tokenizer_parity.py's job; the expected values here were checked with
// the tokenizers package.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "tokenizer.h"

using bigs::normalize_split;
using bigs::Tokenizer;
using Words = std::vector<std::string>;

namespace {

// The BERT uncased vocab: $BIGS_VOCAB, else data/ seen from the repo root or from build/.
std::string vocab_path() {
  if (const char* env = std::getenv("BIGS_VOCAB")) return env;
  for (const char* p :
       {"data/bert-base-uncased-vocab.txt", "../data/bert-base-uncased-vocab.txt"}) {
    if (std::ifstream(p)) return p;
  }
  return "data/bert-base-uncased-vocab.txt";
}

const Tokenizer& bert() {
  static Tokenizer tk;
  static bool loaded = [] {
    std::string err;
    bool ok = tk.load(vocab_path(), &err);
    if (!ok) std::fprintf(stderr, "%s (run from the repo root, or set BIGS_VOCAB)\n", err.c_str());
    return ok;
  }();
  EXPECT_TRUE(loaded);
  return tk;
}

std::vector<int> encode(std::string_view text) {
  std::vector<int> ids;
  bert().encode(text, &ids);
  return ids;
}

Words tokens(std::string_view text) {
  Words out;
  for (int id : encode(text)) out.push_back(bert().token(id));
  return out;
}

std::string temp_file(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + "bigs_tok_" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

}  // namespace

// ----------------------------------------------------------------------------
// Normalisation, step by step

TEST(Normalize, CleanDropsControlFormatNulAndReplacement) {
  EXPECT_EQ(normalize_split("a\x01"
                            "b\x7f"
                            "c"),
            Words{"abc"});
  EXPECT_EQ(normalize_split(std::string("a\0b", 3)), Words{"ab"});
  EXPECT_EQ(normalize_split("a\xef\xbf\xbd"
                            "b"),
            Words{"ab"});                                                   // U+FFFD
  EXPECT_EQ(normalize_split("zero\xe2\x80\x8bwidth"), Words{"zerowidth"});  // U+200B (Cf)
  EXPECT_EQ(normalize_split("soft\xc2\xad"
                            "hyphen"),
            Words{"softhyphen"});  // U+00AD (Cf)
  // \v, \f and U+0085 are Cc: dropped, not spaces (HF drops controls first).
  EXPECT_EQ(normalize_split("a\vb\fc\xc2\x85"
                            "d"),
            Words{"abcd"});
}

TEST(Normalize, WhitespaceSplits) {
  EXPECT_EQ(normalize_split("a\tb\nc\rd e"), (Words{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(normalize_split("a\xc2\xa0"
                            "b\xe3\x80\x80"
                            "c\xe2\x80\xa8"
                            "d"),
            (Words{"a", "b", "c", "d"}));  // U+00A0, U+3000, U+2028
  EXPECT_TRUE(normalize_split("").empty());
  EXPECT_TRUE(normalize_split(" \t \r ").empty());
}

TEST(Normalize, CjkIdeographsStandAlone) {
  EXPECT_EQ(normalize_split("ab中文cd"), (Words{"ab", "中", "文", "cd"}));
  EXPECT_EQ(normalize_split("\xf0\xa0\x80\x80x"), (Words{"\xf0\xa0\x80\x80", "x"}));  // U+20000
  // Hiragana is not in BERT's CJK ranges: it stays in the word (and loses its dakuten).
  EXPECT_EQ(normalize_split("ひらがな"), Words{"ひらかな"});
}

TEST(Normalize, Lowercase) {
  EXPECT_EQ(normalize_split("HeLLo WORLD"), (Words{"hello", "world"}));
  // Greek: every capital sigma becomes σ, with no final-sigma rule.
  EXPECT_EQ(normalize_split("ΣΑΣ"), Words{"σασ"});
  EXPECT_EQ(normalize_split("ＡＢＣ"), Words{"ａｂｃ"});  // full-width: lowercase only
}

TEST(Normalize, NfdDropsNonspacingMarks) {
  EXPECT_EQ(normalize_split("Café naïve"), (Words{"cafe", "naive"}));
  EXPECT_EQ(normalize_split("e\xcc\x81"), Words{"e"});  // e + U+0301
  EXPECT_EQ(normalize_split("İstanbul ılık"), (Words{"istanbul", "ılık"}));
  EXPECT_EQ(normalize_split("\xe2\x84\xab"), Words{"a"});  // U+212B ANGSTROM SIGN
  EXPECT_EQ(normalize_split("ﬁ"), Words{"ﬁ"});             // compatibility, not canonical
  // Hangul syllables decompose into jamo.
  EXPECT_EQ(normalize_split("한"), Words{"\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"});
  // A lone combining mark vanishes, and with it a word of only marks.
  EXPECT_TRUE(normalize_split("\xcc\x81").empty());
}

TEST(Normalize, MarksThatStayAreCanonicallyOrdered) {
  // U+1D16D (class 226) before U+1D165 (class 216): NFD swaps them (Mc, so not dropped).
  EXPECT_EQ(normalize_split("x\xf0\x9d\x85\xad\xf0\x9d\x85\xa5"),
            Words{"x\xf0\x9d\x85\xa5\xf0\x9d\x85\xad"});
  // A long alternating run becomes a stable sort by class.
  std::string in = "x", want = "x";
  for (int i = 0; i < 25; i++) in += "\xf0\x9d\x85\xad\xf0\x9d\x85\xa5";
  for (int i = 0; i < 25; i++) want += "\xf0\x9d\x85\xa5";
  for (int i = 0; i < 25; i++) want += "\xf0\x9d\x85\xad";
  EXPECT_EQ(normalize_split(in), Words{want});
  // A dropped Mn of class 0 (U+0941) still ends the run: nothing moves across it.
  EXPECT_EQ(normalize_split("x\xf0\x9d\x85\xad\xe0\xa5\x81\xf0\x9d\x85\xa5"),
            Words{"x\xf0\x9d\x85\xad\xf0\x9d\x85\xa5"});
}

TEST(Normalize, PunctuationSplitsOff) {
  EXPECT_EQ(normalize_split("a.b,c"), (Words{"a", ".", "b", ",", "c"}));
  EXPECT_EQ(normalize_split("$5^2~x"), (Words{"$", "5", "^", "2", "~", "x"}));  // ASCII symbols
  EXPECT_EQ(normalize_split("«x»—y"), (Words{"«", "x", "»", "—", "y"}));        // Unicode P*
  EXPECT_EQ(normalize_split("©x"), Words{"©x"});  // So is not punctuation
}

TEST(Normalize, InvalidUtf8IsDropped) {
  EXPECT_EQ(normalize_split("caf\xe9 ok"), (Words{"caf", "ok"}));
  EXPECT_EQ(normalize_split("a\xc0\x80"
                            "b"),
            Words{"ab"});  // overlong NUL
  EXPECT_EQ(normalize_split("a\xed\xa0\x80"
                            "b"),
            Words{"ab"});  // surrogate
  EXPECT_EQ(normalize_split("a\xf4\x90\x80\x80"
                            "b"),
            Words{"ab"});                                 // past U+10FFFF
  EXPECT_EQ(normalize_split("ab\xe4\xbd"), Words{"ab"});  // truncated at the end
  EXPECT_EQ(normalize_split("\x80\x80\xff"), Words{});
}

// ----------------------------------------------------------------------------
// Vocab and WordPiece

TEST(Vocab, LoadsBertUncased) {
  const Tokenizer& tk = bert();
  EXPECT_EQ(tk.vocab_size(), 30522);
  EXPECT_EQ(tk.pad_id(), 0);
  EXPECT_EQ(tk.unk_id(), 100);
  EXPECT_EQ(tk.cls_id(), 101);
  EXPECT_EQ(tk.sep_id(), 102);
  EXPECT_EQ(tk.mask_id(), 103);
  EXPECT_EQ(tk.token_id("hello"), 7592);
  EXPECT_EQ(tk.token(7592), "hello");
  EXPECT_EQ(tk.token_id("##ing"), 2075);
  EXPECT_EQ(tk.token_id("no-such-token"), -1);
}

TEST(WordPiece, GreedyLongestMatch) {
  EXPECT_EQ(encode("Hello, world!"), (std::vector<int>{7592, 1010, 2088, 999}));
  EXPECT_EQ(tokens("unaffable"), (Words{"una", "##ffa", "##ble"}));
  EXPECT_EQ(tokens("ΣΊΣΥΦΟΣ"), (Words{"σ", "##ι", "##σ", "##υ", "##φ", "##ο", "##σ"}));
}

TEST(WordPiece, UncoverableOrLongWordIsUnk) {
  EXPECT_EQ(tokens("x☃y ok"), (Words{"[UNK]", "ok"}));
  EXPECT_EQ(encode(std::string(100, 'a')).size(), 50u);  // aaa ##aa ... : covered
  EXPECT_EQ(tokens(std::string(101, 'a')), Words{"[UNK]"});
  // The limit counts characters after normalisation, not bytes: 100 é (200 bytes) pass.
  std::string e100;
  for (int i = 0; i < 100; i++) e100 += "é";
  EXPECT_NE(tokens(e100), Words{"[UNK]"});
  EXPECT_EQ(tokens(e100 + "é"), Words{"[UNK]"});
  EXPECT_EQ(tokens(std::string(101, 'x') + " ok"), (Words{"[UNK]", "ok"}));
}

TEST(WordPiece, LiteralSpecialTokens) {
  EXPECT_EQ(tokens("the[MASK]."), (Words{"the", "[MASK]", "."}));
  EXPECT_EQ(tokens("[CLS]x[SEP][PAD][UNK]"), (Words{"[CLS]", "x", "[SEP]", "[PAD]", "[UNK]"}));
  // Exactly that case, and whole: otherwise plain punctuation and words.
  EXPECT_EQ(tokens("[mask]"), (Words{"[", "mask", "]"}));
  EXPECT_EQ(tokens("[MASK"), (Words{"[", "mask"}));
  EXPECT_EQ(tokens("[[MASK]]"), (Words{"[", "[MASK]", "]"}));
}

// ----------------------------------------------------------------------------
// Model input: pairs, truncation, padding

namespace {
struct ModelInput {
  std::vector<int> ids, types;
};
ModelInput model_input(std::string_view a, const std::string_view* b, int max_len, bool pad) {
  ModelInput m;
  bert().encode_model_input(a, b, max_len, pad, &m.ids, &m.types);
  return m;
}
// n distinct one-token words: "a b c ..." (single letters are tokens).
std::string letters(int n) {
  std::string s;
  for (int i = 0; i < n; i++) s += std::string(1, static_cast<char>('a' + i)) + " ";
  return s;
}
}  // namespace

TEST(ModelInput, SingleAndPairWithTypes) {
  ModelInput s = model_input("hello", nullptr, 0, false);
  EXPECT_EQ(s.ids, (std::vector<int>{101, 7592, 102}));
  EXPECT_EQ(s.types, (std::vector<int>{0, 0, 0}));
  std::string_view b = "world";
  ModelInput p = model_input("hello", &b, 0, false);
  EXPECT_EQ(p.ids, (std::vector<int>{101, 7592, 102, 2088, 102}));
  EXPECT_EQ(p.types, (std::vector<int>{0, 0, 0, 1, 1}));
  std::string_view empty = "";
  EXPECT_EQ(model_input("", &empty, 0, false).ids, (std::vector<int>{101, 102, 102}));
}

TEST(ModelInput, SingleTruncation) {
  ModelInput m = model_input(letters(10), nullptr, 5, false);
  EXPECT_EQ(m.ids.size(), 5u);
  EXPECT_EQ(m.ids.front(), 101);
  EXPECT_EQ(m.ids.back(), 102);
  EXPECT_EQ(m.ids[3], bert().token_id("c"));
}

// Content lengths kept by longest-first truncation (values from HF tokenizers).
TEST(ModelInput, PairLongestFirst) {
  struct Case {
    int len_a, len_b, max_len, keep_a, keep_b;
  };
  const Case cases[] = {
      {6, 2, 8, 3, 2},                        // only the longer side shrinks
      {2, 6, 8, 2, 3},    {10, 10, 9, 3, 3},  // both shrink to half the budget
      {10, 10, 10, 3, 4},                     // a tie: the second text keeps the odd token
      {10, 9, 10, 4, 3},                      // otherwise the longer one does
      {3, 3, 9, 3, 3},                        // fits: untouched
      {0, 5, 4, 0, 1},
  };
  for (const Case& c : cases) {
    std::string a = letters(c.len_a), b_text = letters(c.len_b);
    std::string_view b = b_text;
    ModelInput m = model_input(a, &b, c.max_len, false);
    int types1 = 0;
    for (int t : m.types) types1 += t;
    EXPECT_EQ(static_cast<int>(m.ids.size()), c.keep_a + c.keep_b + 3)
        << c.len_a << "+" << c.len_b << " in " << c.max_len;
    EXPECT_EQ(types1, c.keep_b + 1) << c.len_a << "+" << c.len_b << " in " << c.max_len;
  }
}

TEST(ModelInput, Padding) {
  std::string_view b = "world";
  ModelInput m = model_input("hello", &b, 8, true);
  EXPECT_EQ(m.ids, (std::vector<int>{101, 7592, 102, 2088, 102, 0, 0, 0}));
  EXPECT_EQ(m.types, (std::vector<int>{0, 0, 0, 1, 1, 0, 0, 0}));
  EXPECT_EQ(model_input("hello", nullptr, 0, true).ids.size(), 3u);  // no max_len: no padding
}

// ----------------------------------------------------------------------------
// Decode

TEST(Decode, JoinsPiecesAndSkipsPad) {
  const Tokenizer& tk = bert();
  std::vector<int> ids;
  tk.encode("Unaffable hello, WORLD", &ids);
  EXPECT_EQ(tk.decode(ids), "unaffable hello , world");
  EXPECT_EQ(tk.decode({101, 7592, 102, 0, 0}), "[CLS] hello [SEP]");
  EXPECT_EQ(tk.decode({2075, 7592}), "##ing hello");  // a leading piece keeps its ##
  EXPECT_EQ(tk.decode({7592, -5, 999999}), "hello [UNK] [UNK]");
  EXPECT_EQ(tk.decode({}), "");
}

// ----------------------------------------------------------------------------
// Bad input and scale

TEST(BadInput, MissingEmptyOrIncompleteVocab) {
  Tokenizer tk;
  std::string err;
  EXPECT_FALSE(tk.load("/nonexistent/vocab.txt", &err));
  EXPECT_NE(err.find("/nonexistent/vocab.txt"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;

  std::string empty = temp_file("empty.txt", "");
  EXPECT_FALSE(tk.load(empty, &err));
  EXPECT_NE(err.find("empty"), std::string::npos) << err;

  std::string no_mask = temp_file("nomask.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
  EXPECT_FALSE(tk.load(no_mask, &err));
  EXPECT_NE(err.find("[MASK]"), std::string::npos) << err;
  EXPECT_NE(err.find(no_mask), std::string::npos) << err;
  // A tokenizer that failed to load encodes nothing rather than crashing.
  std::vector<int> ids;
  tk.encode("hello", &ids);
  EXPECT_TRUE(ids.empty());

  // CRLF line ends and trailing blanks are trimmed, as HF does.
  std::string crlf = temp_file("crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS] \r\n[SEP]\r\n[MASK]\r\nhi\r\n");
  ASSERT_TRUE(tk.load(crlf, &err)) << err;
  EXPECT_EQ(tk.cls_id(), 2);
  EXPECT_EQ(tk.token_id("hi"), 5);
}

TEST(BadInput, EmptyLine) {
  EXPECT_TRUE(encode("").empty());
  EXPECT_EQ(model_input("", nullptr, 0, false).ids, (std::vector<int>{101, 102}));
}

TEST(BadInput, TenMegabyteLines) {
  std::string words;
  while (words.size() < (10u << 20)) words += "hello world ";
  EXPECT_EQ(encode(words).size(), words.size() / 6);
  EXPECT_EQ(encode(std::string(10u << 20, 'a')), std::vector<int>{100});  // one huge word
  // 10 MB of arbitrary bytes: no crash, every id valid.
  std::string noise(10u << 20, '\0');
  uint32_t x = 12345;
  for (char& c : noise) x = x * 1664525u + 1013904223u, c = static_cast<char>(x >> 24);
  for (int id : encode(noise)) ASSERT_TRUE(id >= 0 && id < bert().vocab_size());
}

TEST(Threads, ConcurrentEncodeIsDeterministic) {
  std::string text;
  for (int i = 0; i < 2000; i++)
    text += "Café [MASK] 你好 ΣΊΣΥΦΟΣ unaffable " + std::to_string(i) + " ";
  std::vector<int> want = encode(text);
  std::vector<std::vector<int>> got(4);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; t++) pool.emplace_back([&, t] { bert().encode(text, &got[t]); });
  for (std::thread& th : pool) th.join();
  for (const std::vector<int>& g : got) EXPECT_EQ(g, want);
}

// ----------------------------------------------------------------------------
// Training

TEST(Train, LearnsAVocabThatRoundTrips) {
  std::string text;
  for (int i = 0; i < 50; i++) {
    text +=
        "The quick brown fox jumps over the lazy dog. Naïve café owners sell crêpes!\n"
        "In the beginning God created the heaven and the earth. 你好世界\n";
  }
  std::string corpus = temp_file("train.txt", text);
  for (bigs::MergeScore score : {bigs::MergeScore::kFrequency, bigs::MergeScore::kLikelihood}) {
    SCOPED_TRACE(score == bigs::MergeScore::kFrequency ? "frequency" : "likelihood");
    std::vector<std::string> vocab;
    std::string err;
    ASSERT_TRUE(bigs::train_wordpiece({corpus}, 100, 2, score, &vocab, &err)) << err;
    EXPECT_EQ(vocab.size(), 100u);
    EXPECT_EQ(vocab[0], "[PAD]");
    EXPECT_EQ((Words{vocab.begin(), vocab.begin() + 5}),
              (Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}));
    Tokenizer tk;
    ASSERT_TRUE(tk.load_tokens(vocab, "trained", &err)) << err;
    // Round trip: decode(encode(text)) is the normalised words, and no [UNK].
    std::string line = "The quick brown fox. The lazy dog! Naïve café owners 你好";
    std::vector<int> ids;
    tk.encode(line, &ids);
    std::string want;
    for (const std::string& w : normalize_split(line)) want += (want.empty() ? "" : " ") + w;
    EXPECT_EQ(tk.decode(ids), want);
    for (int id : ids) EXPECT_NE(id, tk.unk_id());
    // Merges happened: whole words became tokens.
    EXPECT_GE(tk.token_id("the"), 5);
  }
  // The default is the frequency recipe.
  std::vector<std::string> by_default, by_frequency;
  std::string err;
  ASSERT_TRUE(bigs::train_wordpiece({corpus}, 120, 2, &by_default, &err)) << err;
  ASSERT_TRUE(
      bigs::train_wordpiece({corpus}, 120, 2, bigs::MergeScore::kFrequency, &by_frequency, &err));
  EXPECT_EQ(by_default, by_frequency);
  // When every word is a single token there is nothing left to merge: a smaller vocab.
  std::vector<std::string> small;
  ASSERT_TRUE(bigs::train_wordpiece({temp_file("tiny.txt", "ab ab ab")}, 100, 2, &small, &err));
  EXPECT_EQ(small, (Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##b", "a", "ab"}));
}

TEST(Train, BadArguments) {
  std::vector<std::string> vocab;
  std::string err;
  EXPECT_FALSE(bigs::train_wordpiece({"/nonexistent/corpus.txt"}, 100, 2, &vocab, &err));
  EXPECT_NE(err.find("/nonexistent/corpus.txt"), std::string::npos) << err;
  EXPECT_FALSE(bigs::train_wordpiece({temp_file("t.txt", "a b c")}, 5, 2, &vocab, &err));
  EXPECT_NE(err.find("too small"), std::string::npos) << err;
  EXPECT_FALSE(bigs::train_wordpiece({temp_file("blank.txt", " \n\t\n")}, 100, 2, &vocab, &err));
  EXPECT_NE(err.find("no words"), std::string::npos) << err;
  EXPECT_FALSE(bigs::train_wordpiece({}, 100, 2, &vocab, &err));
}

// ----------------------------------------------------------------------------
// The `tokenizer` command: its flags, and what it says to bad input. These run
// the built program ($BIGS_TOKENIZER, else ./tokenizer from the repo root).

namespace {

struct Result {
  int status = -1;
  std::string out, err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs `tokenizer ARGS...` with INPUT on stdin; its exit status and both outputs.
Result tokenizer(const std::vector<std::string>& args, const std::string& input = "") {
  std::string bin = std::getenv("BIGS_TOKENIZER") ? std::getenv("BIGS_TOKENIZER") : "./tokenizer";
  std::string in = temp_file("cli_in", input), out = in + ".out", err = in + ".err";
  std::string cmd = shell_quote(bin);
  for (const std::string& a : args) cmd += " " + shell_quote(a);
  cmd += " < " + shell_quote(in) + " > " + shell_quote(out) + " 2> " + shell_quote(err);
  Result r;
  int s = std::system(cmd.c_str());
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  r.out = slurp(out), r.err = slurp(err);
  return r;
}

// The exit status is 2 and stderr has MESSAGE (and the command's name).
::testing::AssertionResult refused(const Result& r, const std::string& command, const std::string& message) {
  if (r.status == 2 && r.err.find("tokenizer " + command + ": ") != std::string::npos &&
      r.err.find(message) != std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "exit " << r.status << ", stderr: " << r.err << "(wanted exit 2 and \"tokenizer "
                                       << command << ": ... " << message << "\")";
}

}  // namespace

TEST(Command, EncodeAndDecode) {
  std::string v = vocab_path();
  Result r = tokenizer({"encode", "--vocab", v}, "Hello, world!\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "7592 1010 2088 999\n");
  EXPECT_NE(r.err.find("tokenizer encode\n"), std::string::npos) << "the settings go to stderr: " << r.err;
  EXPECT_NE(r.err.find("30522"), std::string::npos) << "with the vocab's size: " << r.err;
  r = tokenizer({"encode", "--vocab", v, "--special", "--max-len", "6", "--pad"}, "Hello\n");
  EXPECT_EQ(r.out, "101 7592 102 0 0 0\n") << r.err;
  r = tokenizer({"encode", "--vocab", v, "--pair", "--types", "--threads", "2"}, "hello\tworld\n");
  EXPECT_EQ(r.out, "0 0 0 1 1\n") << r.err;
  r = tokenizer({"encode", "--tokens", "--vocab", v, "--max-len", "2"}, "Tokenizers split words\n");
  EXPECT_EQ(r.out, "token ##izer\n") << r.err;
  std::string file = temp_file("cli_text", "Hello\n");
  r = tokenizer({"encode", file, "--vocab", v});  // options after the file, as getopt allows
  EXPECT_EQ(r.out, "7592\n") << r.err;
  r = tokenizer({"decode", "--vocab", v}, "101 7592 1010 2088 102 0\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[CLS] hello , world [SEP]\n");  // as Decode.JoinsPiecesAndSkipsPad
}

TEST(Command, Help) {
  for (const char* cmd : {"encode", "decode", "train"}) {
    Result r = tokenizer({cmd, "--help"});
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find(std::string("usage: tokenizer ") + cmd), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--vocab"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("(default: "), std::string::npos) << "each flag with its default: " << r.out;
  }
  Result r = tokenizer({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("usage: tokenizer COMMAND"), std::string::npos) << r.out;
  r = tokenizer({});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("usage"), std::string::npos) << r.err;
}

TEST(Command, BadEncodeFlags) {
  std::string v = vocab_path();
  EXPECT_TRUE(refused(tokenizer({"encode"}), "encode", "needs --vocab VOCAB"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--max-len", "12x"}), "encode",
                      "--max-len: expected an integer in 0..1073741824, got '12x'"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--threads", "0"}), "encode",
                      "--threads: expected an integer in 1..1024, got '0'"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--frobnicate"}), "encode",
                      "unknown or incomplete option '--frobnicate'; see --help"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab"}), "encode", "unknown or incomplete option '--vocab'"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--pad"}), "encode", "--pad needs --max-len N"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--types"}), "encode", "--types goes with --special or --pair"));
  EXPECT_TRUE(refused(tokenizer({"encode", "--vocab", v, "--pair", "--max-len", "2"}), "encode",
                      "--max-len 2 leaves no room: it must be at least 3 with --pair"));
}

TEST(Command, BadInput) {
  std::string v = vocab_path();
  Result r = tokenizer({"encode", "--vocab", v, "--pair"}, "a\tb\nno tab here\n");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--pair: input line 2 has no TAB between its two texts"), std::string::npos) << r.err;
  r = tokenizer({"encode", "--vocab", "/nonexistent/vocab.txt"}, "x\n");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/vocab.txt"), std::string::npos) << r.err;
  r = tokenizer({"encode", "--vocab", v, "/nonexistent/input.txt"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("/nonexistent/input.txt: cannot open"), std::string::npos) << r.err;
  r = tokenizer({"decode", "--vocab", v}, "101 7592\n101 99999 102\n");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("line 2: \"99999\" is not an id in [0, 30522)"), std::string::npos) << r.err;
  EXPECT_TRUE(refused(tokenizer({"decode"}), "decode", "needs --vocab VOCAB"));
  EXPECT_TRUE(refused(tokenizer({"decode", "--vocab", v, "--tokens"}), "decode", "unknown or incomplete option"));
  r = tokenizer({"frobnicate"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown command \"frobnicate\"; use encode, decode or train"), std::string::npos) << r.err;
}

TEST(Command, BadTrainFlags) {
  std::string corpus = temp_file("cli_corpus", "the cat sat on the mat\n"), out = temp_file("cli_vocab", "");
  EXPECT_TRUE(refused(tokenizer({"train", "--out", out, corpus}), "train", "needs --vocab-size N"));
  EXPECT_TRUE(refused(tokenizer({"train", "--vocab-size", "100", corpus}), "train", "needs --out VOCAB"));
  EXPECT_TRUE(refused(tokenizer({"train", "--vocab-size", "100", "--out", out}), "train", "needs at least one text FILE"));
  EXPECT_TRUE(refused(tokenizer({"train", "--vocab-size", "5", "--out", out, corpus}), "train",
                      "--vocab-size: expected an integer in 6..1048576, got '5'"));
  EXPECT_TRUE(refused(tokenizer({"train", "--vocab-size", "100", "--min-frequency", "0", "--out", out, corpus}),
                      "train", "--min-frequency: expected an integer in 1..1073741824, got '0'"));
  EXPECT_TRUE(refused(tokenizer({"train", "--vocab-size", "100", "--score", "best", "--out", out, corpus}), "train",
                      "--score best: expected frequency or likelihood"));
  Result r = tokenizer({"train", "--vocab-size", "120", "--out", out, corpus});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("min-frequency"), std::string::npos) << "the settings go to stderr: " << r.err;
  EXPECT_EQ(slurp(out).substr(0, 6), "[PAD]\n");
  // The vocab it wrote encodes and decodes the corpus's words.
  r = tokenizer({"encode", "--vocab", out}, "the mat sat\n");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(tokenizer({"decode", "--vocab", out}, r.out).out, "the mat sat\n");
}

// A vocabulary that starts with a byte-order mark is named
// as such (not "lacks [PAD]"); a token listed twice takes its last id, as
// Hugging Face's tokenizer does.
TEST(Vocab, AByteOrderMarkIsNamedAndADuplicateTakesItsLastId) {
  const std::string dir = "build/test_tokenizer_vocab";
  ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/bom.txt") << "\xEF\xBB\xBF[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n";
  bigs::Tokenizer tok;
  std::string err;
  EXPECT_FALSE(tok.load(dir + "/bom.txt", &err));
  EXPECT_NE(err.find(dir + "/bom.txt: starts with a UTF-8 byte-order mark"), std::string::npos) << err;
  std::ofstream(dir + "/dup.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\nhello\n";
  ASSERT_TRUE(tok.load(dir + "/dup.txt", &err)) << err;
  std::vector<int> ids;
  tok.encode("hello world", &ids);
  EXPECT_EQ(ids, (std::vector<int>{7, 6}));
}
