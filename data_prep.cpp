// data_prep: raw text -> pretraining shards, GLUE TSV -> task files, and an
// inspector that decodes either back to text. The file formats are in
// formats.h; the tokenizer in tokenizer.h.
//
//   data_prep pretrain --vocab VOCAB --seq T --out DIR [options] FILE...
//   data_prep glue     --task TASK --vocab VOCAB --seq T --data-dir DIR --out DIR
//   data_prep inspect  FILE [--n K] [--vocab VOCAB] [--verify]
//
// Sections: utilities (UTF-8, line reader, files), pretrain, glue,
// inspect, the command line. Every function returns errors up to the command,
// which prints them and returns a non-zero status; nothing calls exit().
// Every output is written to NAME.tmp and renamed only once the whole command
// has succeeded, so a failed run leaves no partial file under a final name.

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bigsc/cli.h"
#include "bigsc/formats.h"
#include "tokenizer.h"

namespace bigs {

// ----------------------------------------------------------------------------
// Utilities

constexpr int kExitError = 1;  // the input or the environment is wrong
constexpr int kExitUsage = 2;  // the command line is wrong

static double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Byte offset of the first invalid UTF-8 sequence in s (overlong forms,
// surrogates and code points above U+10FFFF are invalid), or npos.
static size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min_cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; k++) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

static bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\f' && c != '\v' && c != '\r') return false;
  return true;
}

static bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Quotes a path for /bin/sh: 'it'\''s'.
static std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Creates dir and its missing parents (mkdir -p).
static bool make_dirs(const std::string& dir, std::string* err) {
  for (size_t i = 1; i <= dir.size(); i++) {
    if (i < dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    struct stat st;
    if (stat(part.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        *err = part + " exists and is not a directory; choose another --out";
        return false;
      }
    } else if (mkdir(part.c_str(), 0777) != 0 && errno != EEXIST) {
      *err = "cannot create directory " + part + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

// Reads lines from a text file, or from a .gz file through `gzip -dc` (no
// zlib dependency). Strips the newline and a trailing '\r'.
class LineReader {
 public:
  uint64_t line_no = 0;  // 1-based number of the line last returned
  uint64_t bytes = 0;    // bytes read so far, newlines included

  LineReader() = default;
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  ~LineReader() {
    std::string ignored;
    close(&ignored);
    free(buf_);
  }

  bool open(const std::string& path, std::string* err) {
    path_ = path;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      *err = "cannot open " + path + ": " + strerror(errno);
      return false;
    }
    if (S_ISDIR(st.st_mode)) {
      *err = path + " is a directory; give the text files inside it";
      return false;
    }
    f_ = fopen(path.c_str(), "rb");
    if (!f_) {
      *err = "cannot open " + path + ": " + strerror(errno);
      return false;
    }
    if (ends_with(path, ".gz")) {
      fclose(f_);
      pipe_ = true;
      f_ = popen(("gzip -dc -- " + shell_quote(path)).c_str(), "r");
      if (!f_) {
        *err = "cannot run `gzip -dc` for " + path + ": " + strerror(errno);
        return false;
      }
    }
    return true;
  }

  // The next line, or false at the end of the input or on a read error
  // (close() then reports the error).
  bool next(std::string_view* line) {
    if (!f_) return false;
    const ssize_t n = getline(&buf_, &cap_, f_);
    if (n < 0) return false;
    bytes += static_cast<uint64_t>(n);
    line_no++;
    size_t len = static_cast<size_t>(n);
    if (len > 0 && buf_[len - 1] == '\n') len--;
    if (len > 0 && buf_[len - 1] == '\r') len--;
    *line = std::string_view(buf_, len);
    return true;
  }

  // Reports read errors, and gzip's failure on a damaged .gz file.
  bool close(std::string* err) {
    if (!f_) return true;
    bool ok = !ferror(f_);
    if (pipe_) {
      const int status = pclose(f_);
      if (status != 0) {
        *err = "`gzip -dc` failed on " + path_ + " (not gzip data, or truncated)";
        ok = false;
      }
    } else {
      fclose(f_);
    }
    if (!ok && err->empty()) *err = "cannot read " + path_ + ": " + strerror(errno);
    f_ = nullptr;
    return ok;
  }

 private:
  std::string path_;
  FILE* f_ = nullptr;
  bool pipe_ = false;
  char* buf_ = nullptr;
  size_t cap_ = 0;
};

// Loads the vocabulary and checks that its ids fit the files' uint16.
static bool load_tokenizer(const std::string& path, Tokenizer* tok, std::string* err) {
  if (!tok->load(path, err)) {
    if (err->empty()) *err = "cannot load the vocabulary " + path;
    return false;
  }
  if (tok->vocab_size() > 65536) {
    *err = path + " has " + std::to_string(tok->vocab_size()) +
           " tokens; the data files store uint16 ids, at most 65536";
    return false;
  }
  const int specials[] = {tok->pad_id(), tok->unk_id(), tok->cls_id(), tok->sep_id(),
                          tok->mask_id()};
  for (int id : specials) {
    if (id < 0 || id >= tok->vocab_size()) {
      *err = path + " lacks one of [PAD] [UNK] [CLS] [SEP] [MASK]; use a BERT vocab.txt";
      return false;
    }
  }
  return true;
}

// The vocabulary's hash (formats.h vocab_hash_of), recorded in every file.
static uint32_t tokenizer_hash(const Tokenizer& tok) {
  return vocab_hash_of(size_t(tok.vocab_size()), [&](size_t i) -> const std::string& { return tok.token(int(i)); });
}

// ----------------------------------------------------------------------------
// pretrain: text -> shards of T-token sequences
//
// The input is read in batches of lines (1 MB of text per worker). While the
// worker threads tokenize one batch, the main thread reads the next and packs
// the one before, in input order, so the output does not depend on --threads
// and memory is bounded by two batches, whatever the corpus size.

struct PretrainOptions {
  std::string vocab, out;
  long long seq_len = 0;  // required
  double val_fraction = 0.01;
  long long shard_sequences = 65536;
  long long threads = 1;
  long long seed = 1234;
  std::vector<std::string> inputs;
};

// A uniform number in [0, 1) from (seed, document ordinal): splitmix64.
static double document_hash(uint64_t seed, uint64_t ordinal) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + ordinal + 0x632BE59BD9B4E5Full;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

// Writes sequences of T uint16 ids into PREFIX_000000.bin, PREFIX_000001.bin,
// ... with at most per_shard sequences each. Finished shards stay under their
// temporary names in `done` until the command commits them all.
class ShardWriter {
 public:
  std::vector<AtomicFile> done;
  uint64_t total = 0;       // sequences written
  uint64_t documents = 0;   // documents routed here

  ShardWriter(std::string dir, std::string prefix, const ShardHeader& proto,
              uint64_t per_shard)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), header_(proto),
        per_shard_(per_shard) {}

  std::string shard_path(size_t i) const {
    char name[64];
    snprintf(name, sizeof(name), "%s_%06zu.bin", prefix_.c_str(), i);
    return dir_ + "/" + name;
  }

  bool add(const uint16_t* seq, std::string* err) {
    if (!cur_.f) {
      if (!cur_.open(shard_path(done.size()), err)) return false;
      setvbuf(cur_.f, nullptr, _IOFBF, 1 << 20);
      header_.num_sequences = 0;
      header_.shard_index = uint32_t(done.size());
      if (fwrite(&header_, sizeof(header_), 1, cur_.f) != 1) return write_error(err);
    }
    if (!cur_.write(seq, sizeof(uint16_t) * header_.seq_len)) return write_error(err);
    header_.num_sequences++;
    total++;
    if (header_.num_sequences == per_shard_) return finish(err);
    return true;
  }

  // Completes the open shard, if any.
  bool finish(std::string* err) {
    if (!cur_.f) return true;
    seal_header(&header_, cur_.crc());
    if (!cur_.rewrite_header(&header_, sizeof(header_))) return write_error(err);
    if (!cur_.close(err)) return false;
    done.push_back(std::move(cur_));
    cur_ = AtomicFile();
    return true;
  }

 private:
  std::string dir_, prefix_;
  ShardHeader header_;
  uint64_t per_shard_;
  AtomicFile cur_;

  bool write_error(std::string* err) {
    *err = "cannot write " + cur_.path() + ".tmp: " + strerror(errno);
    return false;
  }
};

// Packs whole lines of one document greedily into [CLS] ... [SEP] [PAD]...
// sequences. A line longer than T - 2 tokens is cut into T - 2 token pieces;
// its last piece stays open for the lines that follow.
class Packer {
 public:
  uint64_t pad_tokens = 0;

  Packer(int T, const Tokenizer& tok) : T_(T), seq_(T), cls_(tok.cls_id()),
      sep_(tok.sep_id()), pad_(tok.pad_id()) {}

  bool add_line(const int* ids, size_t n, ShardWriter* out, std::string* err) {
    const size_t cap = static_cast<size_t>(T_) - 2;
    if (n == 0) return true;
    if (fill_ > 0 && fill_ + n > cap && !emit(out, err)) return false;
    while (n > cap) {  // fill_ == 0 here
      append(ids, cap);
      if (!emit(out, err)) return false;
      ids += cap;
      n -= cap;
    }
    append(ids, n);
    return true;
  }

  // Ends the document: documents never share a sequence.
  bool end_document(ShardWriter* out, std::string* err) {
    return fill_ == 0 || emit(out, err);
  }

 private:
  int T_;
  std::vector<uint16_t> seq_;  // (T)
  size_t fill_ = 0;            // text tokens in seq_ after [CLS]
  uint16_t cls_, sep_, pad_;

  void append(const int* ids, size_t n) {
    for (size_t i = 0; i < n; i++) seq_[1 + fill_ + i] = static_cast<uint16_t>(ids[i]);
    fill_ += n;
  }

  bool emit(ShardWriter* out, std::string* err) {
    seq_[0] = cls_;
    seq_[1 + fill_] = sep_;
    std::fill(seq_.begin() + 2 + fill_, seq_.end(), pad_);
    pad_tokens += static_cast<size_t>(T_) - 2 - fill_;
    fill_ = 0;
    return out->add(seq_.data(), err);
  }
};

// A batch of input lines: the text of all lines back to back, and per line
// where it is and where it came from.
struct Line {
  size_t begin, end;  // byte range in Batch::text
  uint32_t file;      // index into the input list
  uint64_t line_no;   // 1-based line number in that file
  bool new_document;  // the first line of a document
};
struct Batch {
  std::string text;
  std::vector<Line> lines;
};

// Reads the input files in order as batches of non-blank lines, marking the
// first line of each document (after a blank line, and at each file's start).
class CorpusReader {
 public:
  explicit CorpusReader(const std::vector<std::string>& files) : files_(files) {}

  uint64_t bytes_read() const { return bytes_done_ + (in_ ? in_->bytes : 0); }

  // Refills b with lines until it holds max_bytes of text or the input ends;
  // b is left empty only at the end of the input.
  bool fill(Batch* b, size_t max_bytes, std::string* err) {
    b->text.clear();
    b->lines.clear();
    while (b->text.size() < max_bytes) {
      if (!in_) {
        if (file_ == files_.size()) return true;
        in_ = std::make_unique<LineReader>();
        if (!in_->open(files_[file_], err)) return false;
        new_document_ = true;
      }
      std::string_view line;
      if (!in_->next(&line)) {
        if (!in_->close(err)) return false;
        if (in_->bytes == 0) {  // caught before for plain files; this is a .gz
          *err = files_[file_] + " is empty; give files that hold text";
          return false;
        }
        bytes_done_ += in_->bytes;
        in_.reset();
        file_++;
        continue;
      }
      if (is_blank(line)) {
        new_document_ = true;
        continue;
      }
      b->lines.push_back({b->text.size(), b->text.size() + line.size(), uint32_t(file_),
                          in_->line_no, new_document_});
      b->text.append(line);
      new_document_ = false;
    }
    return true;
  }

 private:
  const std::vector<std::string>& files_;
  size_t file_ = 0;  // the file being read
  std::unique_ptr<LineReader> in_;
  uint64_t bytes_done_ = 0;  // bytes of the files already read
  bool new_document_ = true;
};

// The token ids of a run of lines, tokenized by one worker.
struct TokenizedLines {
  std::vector<int> ids;
  std::vector<size_t> ends;  // ids of line i are [ends[i-1], ends[i])
  size_t first_bad = SIZE_MAX;  // first line (batch index) with invalid UTF-8
  size_t bad_offset = 0;        // byte offset of the invalid sequence in it
  uint64_t unk = 0;
};

static void tokenize_lines(const Tokenizer& tok, const Batch& batch, size_t lo, size_t hi,
                           TokenizedLines* out) {
  out->ids.clear();
  out->ends.clear();
  out->first_bad = SIZE_MAX;
  out->unk = 0;
  const int unk = tok.unk_id();
  for (size_t i = lo; i < hi; i++) {
    const Line& l = batch.lines[i];
    const std::string_view text(batch.text.data() + l.begin, l.end - l.begin);
    const size_t bad = find_invalid_utf8(text);
    if (bad != std::string_view::npos) {
      out->first_bad = i;
      out->bad_offset = bad;
      return;
    }
    const size_t start = out->ids.size();
    tok.encode(text, &out->ids);
    for (size_t k = start; k < out->ids.size(); k++) out->unk += out->ids[k] == unk;
    out->ends.push_back(out->ids.size());
  }
}

// One batch being tokenized: its lines split into parts of about equal text
// size, one worker thread per part.
struct TokenizeJob {
  Batch batch;
  std::vector<size_t> cut;  // part p is lines [cut[p], cut[p + 1])
  std::vector<TokenizedLines> parts;
  std::vector<std::thread> threads;

  TokenizeJob() = default;
  TokenizeJob(const TokenizeJob&) = delete;
  TokenizeJob& operator=(const TokenizeJob&) = delete;
  ~TokenizeJob() { join(); }

  void start(const Tokenizer& tok, size_t n_parts) {
    cut.assign(n_parts + 1, batch.lines.size());
    cut[0] = 0;
    for (size_t p = 1; p < n_parts; p++) {
      const size_t target = batch.text.size() * p / n_parts;
      const auto it = std::lower_bound(batch.lines.begin(), batch.lines.end(), target,
                                       [](const Line& l, size_t t) { return l.begin < t; });
      cut[p] = std::max(cut[p - 1], size_t(it - batch.lines.begin()));
    }
    parts.resize(n_parts);
    for (size_t p = 0; p < n_parts; p++)
      threads.emplace_back(tokenize_lines, std::cref(tok), std::cref(batch), cut[p],
                           cut[p + 1], &parts[p]);
  }

  void join() {
    for (std::thread& t : threads) t.join();
    threads.clear();
  }
};

struct PretrainStats {
  uint64_t documents = 0, lines = 0, tokens = 0, unk = 0;
};

// Packs tokenized batches, in input order, into the train and val shards.
class PretrainRun {
 public:
  PretrainRun(const PretrainOptions& o, const Tokenizer& tok, const ShardHeader& proto)
      : o_(o), train_(o.out, "train", proto, uint64_t(o.shard_sequences)),
        val_(o.out, "val", proto, uint64_t(o.shard_sequences)), packer_(int(o.seq_len), tok) {}

  PretrainStats stats;
  ShardWriter& train() { return train_; }
  ShardWriter& val() { return val_; }
  uint64_t pad_tokens() const { return packer_.pad_tokens; }

  // Packs a job whose workers have finished.
  bool pack(const TokenizeJob& job, std::string* err) {
    for (size_t p = 0; p < job.parts.size(); p++) {
      const TokenizedLines& w = job.parts[p];
      if (w.first_bad != SIZE_MAX) {
        const Line& l = job.batch.lines[w.first_bad];
        *err = o_.inputs[l.file] + ":" + std::to_string(l.line_no) +
               ": invalid UTF-8 at byte " + std::to_string(w.bad_offset + 1) +
               " of the line; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)";
        return false;
      }
      for (size_t i = 0; i < w.ends.size(); i++) {
        const Line& l = job.batch.lines[job.cut[p] + i];
        if (l.new_document && !start_document(err)) return false;
        const size_t b = i == 0 ? 0 : w.ends[i - 1];
        if (!packer_.add_line(w.ids.data() + b, w.ends[i] - b, sink_, err)) return false;
        stats.lines++;
        stats.tokens += w.ends[i] - b;
      }
      stats.unk += w.unk;
    }
    return true;
  }

  bool finish(std::string* err) {
    return packer_.end_document(sink_, err) && train_.finish(err) && val_.finish(err);
  }

 private:
  const PretrainOptions& o_;
  ShardWriter train_, val_;
  Packer packer_;
  ShardWriter* sink_ = nullptr;  // where the current document goes

  // Routes the next document to val when its hash falls below the fraction;
  // the second document also goes to val when the first did not, so that any
  // corpus of two or more documents gets a non-empty val split.
  bool start_document(std::string* err) {
    if (sink_ && !packer_.end_document(sink_, err)) return false;
    const uint64_t d = stats.documents++;
    const bool to_val = o_.val_fraction > 0 &&
                        (document_hash(uint64_t(o_.seed), d) < o_.val_fraction ||
                         (d == 1 && val_.documents == 0));
    sink_ = to_val ? &val_ : &train_;
    sink_->documents++;
    return true;
  }
};

// Removes PREFIX_NNNNNN.bin files in dir numbered >= keep: shards of an
// earlier, larger run that would otherwise mix with this one's.
static int remove_stale_shards(const std::string& dir, const char* prefix, size_t keep) {
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  const size_t plen = strlen(prefix);
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() != plen + 1 + 6 + 4 || name.compare(0, plen, prefix) != 0 ||
        name[plen] != '_' || !ends_with(name, ".bin"))
      continue;
    const std::string digits = name.substr(plen + 1, 6);
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::stoul(digits) >= keep && remove((dir + "/" + name).c_str()) == 0) removed++;
  }
  closedir(d);
  return removed;
}

// Removes PREFIX_NNNNNN.bin.tmp files in dir: the temporary shards of an
// earlier run that was killed or failed (the lock says none is running).
static int remove_stale_tmp(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    for (const char* prefix : {"train_", "val_"}) {
      const size_t plen = strlen(prefix);
      if (name.size() == plen + 6 + 8 && name.compare(0, plen, prefix) == 0 && ends_with(name, ".bin.tmp") &&
          name.substr(plen, 6).find_first_not_of("0123456789") == std::string::npos &&
          remove((dir + "/" + name).c_str()) == 0)
        removed++;
    }
  }
  closedir(d);
  return removed;
}

// Once a split's shards are all written: records in each temporary file's
// header the set's id and how many shards the split has (set_shards), and
// seals it again. The id is made from the contents of every shard of the set
// (their checksums and sizes, train and val): two runs that write other
// shards get other ids, and a run that writes the same bytes (the same input
// and settings, at any --threads) the same id and the same files.
static bool read_tmp_header(const AtomicFile& f, ShardHeader* h, std::string* err) {
  const int fd = ::open(f.tmp_path().c_str(), O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && pread(fd, h, sizeof *h, 0) == ssize_t(sizeof *h);
  if (!ok) *err = "cannot read " + f.tmp_path() + ": " + strerror(errno);
  if (fd >= 0) ::close(fd);
  return ok;
}

static bool shard_set_id(const std::vector<const std::vector<AtomicFile>*>& splits, uint64_t* id, std::string* err) {
  uint32_t a = crc32c(0, "set-a", 5), b = crc32c(0, "set-b", 5);
  for (const std::vector<AtomicFile>* done : splits) {
    const uint32_t n = uint32_t(done->size());
    a = crc32c(a, &n, 4), b = crc32c(b, &n, 4);
    for (const AtomicFile& f : *done) {
      ShardHeader h;
      if (!read_tmp_header(f, &h, err)) return false;
      const uint32_t fields[4] = {h.payload_crc, h.seq_len, h.vocab_hash, uint32_t(h.num_sequences)};
      a = crc32c(a, fields, sizeof fields), b = crc32c(b, fields, sizeof fields);
    }
  }
  *id = (uint64_t(a) << 32 | b) ? (uint64_t(a) << 32 | b) : 1;
  return true;
}

static bool seal_shard_set(std::vector<AtomicFile>& done, uint64_t set_id, std::string* err) {
  for (AtomicFile& f : done) {
    const std::string& tmp = f.tmp_path();
    const int fd = ::open(tmp.c_str(), O_RDWR | O_CLOEXEC);
    ShardHeader h;
    bool ok = fd >= 0 && pread(fd, &h, sizeof h, 0) == ssize_t(sizeof h);
    if (ok) {
      h.set_shards = uint32_t(done.size());
      h.set_id = set_id;
      seal_header(&h, h.payload_crc);
      ok = pwrite(fd, &h, sizeof h, 0) == ssize_t(sizeof h) && fsync(fd) == 0;
    }
    if (!ok) *err = "cannot write " + tmp + ": " + strerror(errno);
    if (fd >= 0) ::close(fd);
    if (!ok) return false;
  }
  return true;
}

// The command once the vocabulary is loaded (the fuzz harness calls it with
// one vocabulary loaded once).
static int pretrain_with(const PretrainOptions& o, const Tokenizer& tok) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string err;
  // Check every input before any work, so a typo fails in a second.
  uint64_t total_bytes = 0;
  bool any_gz = false;
  for (const std::string& path : o.inputs) {
    struct stat st;
    const char* problem = stat(path.c_str(), &st) != 0 ? strerror(errno)
                          : S_ISDIR(st.st_mode) ? "is a directory; give the text files inside it"
                          : st.st_size == 0     ? "is empty; give files that hold text"
                                                : nullptr;
    if (problem) {
      fprintf(stderr, "data_prep pretrain: %s: %s\n", path.c_str(), problem);
      return kExitError;
    }
    total_bytes += uint64_t(st.st_size);
    any_gz = any_gz || ends_with(path, ".gz");
  }
  // One writer per directory: two runs would mix their shards.
  DirLock lock;
  if (!make_dirs(o.out, &err) || !lock.acquire(o.out, &err)) {
    fprintf(stderr, "data_prep pretrain: %s\n", err.c_str());
    return kExitError;
  }
  if (const int tmp = remove_stale_tmp(o.out))
    printf("removed     %d temporary shard(s) of an earlier, unfinished run from %s\n", tmp, o.out.c_str());

  ShardHeader proto = {};
  proto.magic = kShardMagic;
  proto.version = kShardVersion;
  proto.seq_len = uint32_t(o.seq_len);
  proto.vocab_size = uint32_t(tok.vocab_size());
  proto.pad_id = uint32_t(tok.pad_id());
  proto.cls_id = uint32_t(tok.cls_id());
  proto.sep_id = uint32_t(tok.sep_id());
  proto.mask_id = uint32_t(tok.mask_id());
  proto.unk_id = uint32_t(tok.unk_id());
  proto.vocab_hash = tokenizer_hash(tok);

  printf("  %-22s %d tokens\n", "vocabulary size", tok.vocab_size());
  printf("  %-22s %zu (%.1f MB on disk)\n", "input files", o.inputs.size(), total_bytes / 1e6);
  fflush(stdout);

  // A pipeline of two batches: while the workers tokenize one, the main
  // thread reads the next and packs the one before, in input order.
  PretrainRun run(o, tok, proto);
  CorpusReader reader(o.inputs);
  TokenizeJob jobs[2];
  const size_t batch_bytes = size_t(o.threads) << 20;  // 1 MB of text per worker
  const size_t workers = size_t(o.threads);
  double last_report = 0;
  auto fail = [&]() {
    fprintf(stderr, "data_prep pretrain: %s\n", err.c_str());
    return kExitError;
  };
  if (!reader.fill(&jobs[0].batch, batch_bytes, &err)) return fail();
  jobs[0].start(tok, workers);
  for (int cur = 0; !jobs[cur].batch.lines.empty(); cur ^= 1) {
    TokenizeJob& job = jobs[cur];
    TokenizeJob& next = jobs[cur ^ 1];
    if (!reader.fill(&next.batch, batch_bytes, &err)) return fail();
    job.join();
    next.start(tok, workers);
    if (!run.pack(job, &err)) return fail();
    const double t = seconds_since(t0);
    if (t - last_report >= 5) {
      last_report = t;
      const uint64_t done = reader.bytes_read();
      fprintf(stderr, "  %.1f MB read", done / 1e6);
      if (!any_gz) fprintf(stderr, " (%.0f%%)", 100.0 * done / double(total_bytes));
      fprintf(stderr, ", %.1f MB/s, %llu sequences\n", done / 1e6 / t,
              (unsigned long long)(run.train().total + run.val().total));
    }
  }
  if (!run.finish(&err)) return fail();
  if (run.train().total == 0) {
    fprintf(stderr,
            "data_prep pretrain: no training sequences: the input holds no tokens%s; "
            "give more text%s\n",
            run.val().total ? " outside the val split" : "",
            run.val().total ? " or lower --val-fraction" : "");
    return kExitError;
  }
  // Everything succeeded: give all shards their final names, then drop
  // shards of an earlier run with higher numbers. A kill in between leaves
  // shards of two sets, which the reader refuses (their set_id differs).
  uint64_t set_id = 0;
  if (!shard_set_id({&run.train().done, &run.val().done}, &set_id, &err)) return fail();
  for (ShardWriter* w : {&run.train(), &run.val()}) {
    if (!seal_shard_set(w->done, set_id, &err)) return fail();
  }
  for (ShardWriter* w : {&run.train(), &run.val()}) {
    for (AtomicFile& f : w->done) {
      if (!f.commit(&err)) {
        fprintf(stderr, "data_prep pretrain: %s\n", err.c_str());
        return kExitError;
      }
    }
  }
  const int stale = remove_stale_shards(o.out, "train", run.train().done.size()) +
                    remove_stale_shards(o.out, "val", run.val().done.size());

  const PretrainStats& s = run.stats;
  const uint64_t seqs = run.train().total + run.val().total;
  const double secs = seconds_since(t0);
  printf("documents   %llu (train %llu, val %llu)\n", (unsigned long long)s.documents,
         (unsigned long long)run.train().documents, (unsigned long long)run.val().documents);
  printf("lines       %llu\n", (unsigned long long)s.lines);
  printf("tokens      %llu ([UNK] %.4f%%)\n", (unsigned long long)s.tokens,
         s.tokens ? 100.0 * s.unk / s.tokens : 0.0);
  printf("sequences   %llu: train %llu in %zu shard(s), val %llu in %zu shard(s)%s\n",
         (unsigned long long)seqs, (unsigned long long)run.train().total,
         run.train().done.size(), (unsigned long long)run.val().total, run.val().done.size(),
         run.val().total ? "" : " (no val shard written)");
  printf("padding     %.2f%% of %llu token slots\n",
         100.0 * run.pad_tokens() / (double(seqs) * o.seq_len),
         (unsigned long long)(seqs * o.seq_len));
  const double mb = reader.bytes_read() / 1e6;
  printf("time        %.2f s, %.1f MB of text, %.2f MB/s\n", secs, mb, mb / secs);
  if (stale) printf("removed     %d shard(s) of an earlier run from %s\n", stale, o.out.c_str());
  printf("output      %s/train_000000.bin ...\n", o.out.c_str());
  return 0;
}

static int run_pretrain(const PretrainOptions& o) {
  std::string err;
  Tokenizer tok;
  if (!load_tokenizer(o.vocab, &tok, &err)) {
    fprintf(stderr, "data_prep pretrain: %s\n", err.c_str());
    return kExitError;
  }
  return pretrain_with(o, tok);
}

// ----------------------------------------------------------------------------
// glue: GLUE TSV files -> task files
//
// Columns are found by their header names, so any file with the standard
// header works; CoLA's train and dev files have no header (label = column 1,
// sentence = column 3). Fields are split on tabs only: quotes are data.

struct GlueSplit {
  const char* name;                 // "dev_matched"
  std::vector<const char*> files;   // candidates, the first that exists is read
  bool test;                        // no labels; the index comes from a column
};

struct GlueTask {
  const char* name;
  const char* text_a;  // header names of the columns used
  const char* text_b;  // nullptr: single sentence
  const char* label;   // nullptr: no labelled split
  std::vector<std::string> label_names;  // class i as written in the TSV; {"score"}
  std::vector<GlueSplit> splits;
};

static const std::vector<GlueSplit> kStandardSplits = {
    {"train", {"train.tsv"}, false}, {"dev", {"dev.tsv"}, false}, {"test", {"test.tsv"}, true}};

static const std::vector<GlueTask>& glue_tasks() {
  static const std::vector<GlueTask> tasks = {
      {"cola", "sentence", nullptr, "label", {"0", "1"}, kStandardSplits},
      {"sst2", "sentence", nullptr, "label", {"0", "1"}, kStandardSplits},
      {"mrpc", "#1 String", "#2 String", "Quality", {"0", "1"}, kStandardSplits},
      {"stsb", "sentence1", "sentence2", "score", {"score"}, kStandardSplits},
      {"qqp", "question1", "question2", "is_duplicate", {"0", "1"}, kStandardSplits},
      {"mnli", "sentence1", "sentence2", "gold_label",
       {"entailment", "neutral", "contradiction"},
       {{"train", {"train.tsv"}, false},
        {"dev_matched", {"dev_matched.tsv"}, false},
        {"dev_mismatched", {"dev_mismatched.tsv"}, false},
        {"test_matched", {"test_matched.tsv"}, true},
        {"test_mismatched", {"test_mismatched.tsv"}, true}}},
      {"qnli", "question", "sentence", "label", {"entailment", "not_entailment"},
       kStandardSplits},
      {"rte", "sentence1", "sentence2", "label", {"entailment", "not_entailment"},
       kStandardSplits},
      {"wnli", "sentence1", "sentence2", "label", {"0", "1"}, kStandardSplits},
      // The diagnostic set: MNLI's classes, a test file only.
      {"ax", "sentence1", "sentence2", nullptr, {"entailment", "neutral", "contradiction"},
       {{"test", {"AX.tsv", "diagnostic.tsv", "test.tsv"}, true}}},
  };
  return tasks;
}

static void split_tabs(std::string_view line, std::vector<std::string_view>* fields) {
  fields->clear();
  size_t start = 0;
  for (;;) {
    const size_t tab = line.find('\t', start);
    if (tab == std::string_view::npos) {
      fields->push_back(line.substr(start));
      return;
    }
    fields->push_back(line.substr(start, tab - start));
    start = tab + 1;
  }
}

static std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Where the fields of a split's rows are: column indices, -1 when unused.
struct Columns {
  size_t count = 0;  // fields a usable row has
  int a = -1, b = -1, label = -1, index = -1;
};

// Finds the columns from the header row (or CoLA's fixed layout).
static bool find_columns(const GlueTask& task, const GlueSplit& split,
                         const std::string& path, std::string_view header, Columns* c,
                         std::string* err) {
  std::vector<std::string_view> names;
  split_tabs(header, &names);
  auto find = [&](const char* name) {
    for (size_t i = 0; i < names.size(); i++)
      if (trim(names[i]) == name) return int(i);
    return -1;
  };
  c->count = names.size();
  c->a = find(task.text_a);
  c->b = task.text_b ? find(task.text_b) : -1;
  if (split.test) {
    c->index = find("index");
    if (c->index < 0) c->index = find("id");  // QQP's test file
  } else {
    c->label = find(task.label);
  }
  std::string missing;
  if (c->a < 0) missing += std::string(" '") + task.text_a + "'";
  if (task.text_b && c->b < 0) missing += std::string(" '") + task.text_b + "'";
  if (split.test && c->index < 0) missing += " 'index'";
  if (!split.test && c->label < 0) missing += std::string(" '") + task.label + "'";
  if (!missing.empty()) {
    std::string found;
    for (std::string_view n : names) found += (found.empty() ? "'" : ", '") + std::string(n) + "'";
    *err = path + ": the header row lacks the column(s)" + missing + " (found: " +
           found.substr(0, 300) + "); is this the " + task.name + " " + split.name +
           " file of the standard GLUE distribution?";
    return false;
  }
  return true;
}

struct GlueSplitResult {
  std::string file;        // the TSV read
  uint64_t rows = 0, examples = 0, skipped = 0, truncated = 0;
  std::vector<uint64_t> label_counts;
  std::vector<std::string> skip_reasons;  // the first few, with line numbers
};

// Reads one TSV and writes its task file (to the temporary name in out).
static bool convert_glue_split(const GlueTask& task, const GlueSplit& split,
                               const std::string& path, const Tokenizer& tok, int T,
                               AtomicFile* out, GlueSplitResult* r, std::string* err) {
  constexpr size_t kMaxReasons = 5;
  LineReader in;
  if (!in.open(path, err)) return false;
  std::string_view line;
  const bool headerless = std::string(task.name) == "cola" && !split.test;
  Columns c;
  if (headerless) {
    c.count = 4, c.label = 1, c.a = 3;
  } else {
    if (!in.next(&line)) {
      *err = path + " is empty; expected a header row and data rows (re-download the task)";
      return false;
    }
    if (line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);  // MRPC's byte-order mark
    if (!find_columns(task, split, path, line, &c, err)) return false;
  }

  TaskHeader h = {};
  h.magic = kTaskMagic;
  h.version = kTaskVersion;
  h.seq_len = uint32_t(T);
  h.vocab_size = uint32_t(tok.vocab_size());
  h.vocab_hash = tokenizer_hash(tok);
  h.num_labels = uint32_t(task.label_names.size());
  h.has_labels = split.test ? 0 : 1;
  snprintf(h.task, sizeof(h.task), "%s", task.name);
  snprintf(h.split, sizeof(h.split), "%s", split.name);
  for (size_t i = 0; i < task.label_names.size(); i++)
    snprintf(h.label_names[i], sizeof(h.label_names[i]), "%s", task.label_names[i].c_str());
  const bool regression = task.label_names.size() == 1;
  setvbuf(out->f, nullptr, _IOFBF, 1 << 20);
  if (fwrite(&h, sizeof(h), 1, out->f) != 1) {
    *err = "cannot write " + out->path() + ".tmp: " + strerror(errno);
    return false;
  }

  r->file = path;
  r->label_counts.assign(task.label_names.size(), 0);
  std::vector<std::string_view> fields;
  std::vector<int> ids, types, scratch;
  std::vector<uint16_t> ids16(T);
  std::vector<uint8_t> types8(T);
  std::vector<uint8_t> record(task_record_size(T));
  auto skip = [&](const std::string& why) {
    r->skipped++;
    if (r->skip_reasons.size() < kMaxReasons)
      r->skip_reasons.push_back("line " + std::to_string(in.line_no) + ": " + why);
  };
  while (in.next(&line)) {
    if (line.empty()) continue;  // a stray blank line is not a row
    const uint64_t row = r->rows++;  // 0-based data row number
    const size_t bad = find_invalid_utf8(line);
    if (bad != std::string_view::npos) {
      *err = path + ":" + std::to_string(in.line_no) + ": invalid UTF-8 at byte " +
             std::to_string(bad + 1) + " of the line; re-download the task (GLUE files are UTF-8)";
      return false;
    }
    split_tabs(line, &fields);
    if (fields.size() != c.count) {
      skip("expected " + std::to_string(c.count) + " fields, found " +
           std::to_string(fields.size()));
      continue;
    }
    float label = -1;
    uint32_t index = uint32_t(row);
    if (split.test) {
      const std::string f(trim(fields[size_t(c.index)]));
      long long v;
      std::string ignored;
      if (!parse_int(f.c_str(), 0, UINT32_MAX, "index", &v, &ignored)) {
        skip("index '" + f + "' is not an integer in 0..4294967295");
        continue;
      }
      index = uint32_t(v);
    } else {
      const std::string f(trim(fields[size_t(c.label)]));
      if (regression) {
        double v;
        std::string ignored;
        if (!parse_double(f.c_str(), 0, 5, true, "score", &v, &ignored)) {
          skip("score '" + f + "' is not a number in [0, 5]");
          continue;
        }
        label = float(v);
      } else {
        const auto it = std::find(task.label_names.begin(), task.label_names.end(), f);
        if (it == task.label_names.end()) {
          skip("unknown label '" + f + "'");
          continue;
        }
        label = float(it - task.label_names.begin());
        r->label_counts[size_t(it - task.label_names.begin())]++;
      }
    }
    const std::string_view a = fields[size_t(c.a)];
    const std::string_view b = c.b >= 0 ? fields[size_t(c.b)] : std::string_view();
    tok.encode_model_input(a, c.b >= 0 ? &b : nullptr, T, true, &ids, &types);
    if (ids.size() != size_t(T) || types.size() != size_t(T)) {
      *err = "internal error: the tokenizer returned " + std::to_string(ids.size()) +
             " ids for T = " + std::to_string(T);
      return false;
    }
    // Count truncations: the untruncated input would need more than T tokens.
    scratch.clear();
    tok.encode(a, &scratch);
    if (c.b >= 0) tok.encode(b, &scratch);
    if (scratch.size() + (c.b >= 0 ? 3 : 2) > size_t(T)) r->truncated++;
    for (int i = 0; i < T; i++) {
      ids16[size_t(i)] = uint16_t(ids[size_t(i)]);
      types8[size_t(i)] = uint8_t(types[size_t(i)]);
    }
    pack_task_record(record.data(), uint32_t(T), ids16.data(), types8.data(), label, index);
    if (!out->write(record.data(), record.size())) {
      *err = "cannot write " + out->path() + ".tmp: " + strerror(errno);
      return false;
    }
    r->examples++;
  }
  if (!in.close(err)) return false;
  if (r->examples == 0) {
    *err = path + " has no usable rows (" + std::to_string(r->rows) + " rows, " +
           std::to_string(r->skipped) + " skipped" +
           (r->skip_reasons.empty() ? "" : "; " + r->skip_reasons[0]) +
           "); is it the right file?";
    return false;
  }
  h.num_examples = r->examples;
  seal_header(&h, out->crc());
  if (!out->rewrite_header(&h, sizeof(h))) {
    *err = "cannot write " + out->path() + ".tmp: " + strerror(errno);
    return false;
  }
  return out->close(err);
}

static bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static int run_glue(const std::string& task_name, const std::string& vocab, int T,
                    const std::string& data_dir, const std::string& out_dir) {
  const auto t0 = std::chrono::steady_clock::now();
  const GlueTask* task = nullptr;
  std::string names;
  // Any case, and GLUE's own spellings (SST-2, STS-B): lower case, no '-'.
  std::string key;
  for (char c : task_name)
    if (c != '-') key += char(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> all;
  for (const GlueTask& t : glue_tasks()) {
    if (key == t.name) task = &t;
    names += std::string(names.empty() ? "" : ", ") + t.name;
    all.push_back(t.name);
  }
  if (!task) {
    const std::string near = nearest(key, all);
    fprintf(stderr, "data_prep glue: unknown --task '%s'%s; expected one of %s\n", task_name.c_str(),
            near.empty() ? "" : ("; did you mean " + near + "?").c_str(), names.c_str());
    return kExitUsage;
  }
  struct stat st;
  if (stat(data_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "data_prep glue: --data-dir %s is not a directory\n", data_dir.c_str());
    return kExitError;
  }
  // Find the splits present; at least one must be.
  std::vector<std::pair<const GlueSplit*, std::string>> found;
  std::string expected;
  for (const GlueSplit& s : task->splits) {
    std::string path;
    for (const char* f : s.files) {
      expected += std::string(expected.empty() ? "" : ", ") + f;
      if (path.empty() && file_exists(data_dir + "/" + f)) path = data_dir + "/" + f;
    }
    if (path.empty()) {
      printf("note: no %s split (%s/%s not found)\n", s.name, data_dir.c_str(), s.files[0]);
    } else {
      found.emplace_back(&s, path);
    }
  }
  if (found.empty()) {
    fprintf(stderr,
            "data_prep glue: %s holds none of the %s files (%s); point --data-dir at the "
            "task's folder of the GLUE distribution\n",
            data_dir.c_str(), task->name, expected.c_str());
    return kExitError;
  }
  std::string err;
  Tokenizer tok;
  DirLock lock;
  if (!load_tokenizer(vocab, &tok, &err) || !make_dirs(out_dir, &err) || !lock.acquire(out_dir, &err)) {
    fprintf(stderr, "data_prep glue: %s\n", err.c_str());
    return kExitError;
  }
  std::vector<AtomicFile> outputs(found.size());
  std::vector<GlueSplitResult> results(found.size());
  for (size_t i = 0; i < found.size(); i++) {
    const std::string out_path = out_dir + "/" + task->name + "_" + found[i].first->name + ".bin";
    if (!outputs[i].open(out_path, &err) ||
        !convert_glue_split(*task, *found[i].first, found[i].second, tok, T, &outputs[i],
                            &results[i], &err)) {
      fprintf(stderr, "data_prep glue: %s\n", err.c_str());
      return kExitError;
    }
  }
  for (AtomicFile& f : outputs) {
    if (!f.commit(&err)) {
      fprintf(stderr, "data_prep glue: %s\n", err.c_str());
      return kExitError;
    }
  }
  for (size_t i = 0; i < found.size(); i++) {
    const GlueSplitResult& r = results[i];
    printf("%s: %llu examples from %llu rows of %s, %llu skipped, %llu truncated to T = %d\n",
           outputs[i].path().c_str(), (unsigned long long)r.examples,
           (unsigned long long)r.rows, r.file.c_str(), (unsigned long long)r.skipped,
           (unsigned long long)r.truncated, T);
    if (!found[i].first->test && task->label_names.size() > 1) {
      printf("  labels:");
      for (size_t k = 0; k < r.label_counts.size(); k++)
        printf(" %s=%llu", task->label_names[k].c_str(), (unsigned long long)r.label_counts[k]);
      printf("\n");
    }
    for (const std::string& why : r.skip_reasons) printf("  skipped %s\n", why.c_str());
    if (r.skipped > r.skip_reasons.size())
      printf("  ... and %llu more skipped rows\n",
             (unsigned long long)(r.skipped - r.skip_reasons.size()));
  }
  printf("done in %.2f s\n", seconds_since(t0));
  return 0;
}

// ----------------------------------------------------------------------------
// inspect: print a file's header and its first examples as text

static std::string decode_ids(const Tokenizer* tok, const std::vector<int>& ids) {
  if (tok) return tok->decode(ids);
  std::string s;
  for (int id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

// With verify, every record is read and checked and the checksum compared;
// else only the header and the first n records.
static int run_inspect(const std::string& path, long long n, const std::string& vocab, bool verify) {
  std::string err;
  Tokenizer tok;
  if (!vocab.empty() && !load_tokenizer(vocab, &tok, &err)) {
    fprintf(stderr, "data_prep inspect: %s\n", err.c_str());
    return kExitError;
  }
  const Tokenizer* t = vocab.empty() ? nullptr : &tok;
  const uint32_t expected_vocab = t ? uint32_t(tok.vocab_size()) : 0;
  FILE* f = fopen(path.c_str(), "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0 || S_ISDIR(st.st_mode)) {
    fprintf(stderr, "data_prep inspect: cannot open %s: %s\n", path.c_str(),
            f ? "is a directory" : strerror(errno));
    if (f) fclose(f);
    return kExitError;
  }
  uint32_t magic = 0;
  const bool short_file = fread(&magic, 4, 1, f) != 1;
  int rc = 0;
  uint32_t crc = 0;  // of the records read, when verifying
  uint32_t version = 0, payload_crc = 0;
  const char *what = nullptr, *fix = nullptr;
  auto read_record = [&](void* rec, size_t size) {
    if (fread(rec, size, 1, f) != 1) {
      fprintf(stderr, "data_prep inspect: %s: read error\n", path.c_str());
      return false;
    }
    if (verify) crc = crc32c(crc, rec, size);
    return true;
  };
  if (!short_file && magic == kShardMagic) {
    ShardHeader h;
    if (!read_shard_header(f, path.c_str(), &h, &err, expected_vocab)) {
      fprintf(stderr, "data_prep inspect: %s\n", err.c_str());
      fclose(f);
      return kExitError;
    }
    version = h.version, payload_crc = h.payload_crc, what = kShardWhat, fix = kShardFix;
    printf("%s: pretraining shard, version %u\n", path.c_str(), h.version);
    printf("  seq_len %u, vocab_size %u, num_sequences %llu\n", h.seq_len, h.vocab_size,
           (unsigned long long)h.num_sequences);
    printf("  pad %u, cls %u, sep %u, mask %u, unk %u\n", h.pad_id, h.cls_id, h.sep_id,
           h.mask_id, h.unk_id);
    if (h.version >= 3)
      printf("  shard %u of %u in set %016llx, vocabulary hash %08x\n", h.shard_index + 1, h.set_shards,
             (unsigned long long)h.set_id, h.vocab_hash);
    const uint64_t count = verify ? h.num_sequences : std::min<uint64_t>(h.num_sequences, uint64_t(n));
    std::vector<uint16_t> seq(h.seq_len);
    std::vector<int> ids;
    uint64_t pads = 0, bad = 0;
    for (uint64_t i = 0; i < count; i++) {
      if (!read_record(seq.data(), 2ull * h.seq_len)) {
        fclose(f);
        return kExitError;
      }
      // Well-formed: [CLS] first, [SEP] last before the padding, ids < V.
      ids.clear();
      bool ok = seq[0] == h.cls_id;
      for (uint16_t id : seq) {
        ok = ok && id < h.vocab_size;
        if (id == h.pad_id) pads++;
        else ids.push_back(id);
      }
      ok = ok && !ids.empty() && ids.back() == int(h.sep_id);
      bad += !ok;
      if (i >= uint64_t(n)) continue;
      printf("[%llu] %s (+%zu [PAD])%s\n", (unsigned long long)i,
             decode_ids(ok ? t : nullptr, ids).c_str(), h.seq_len - ids.size(),
             ok ? "" : " MALFORMED");
    }
    if (verify)
      printf("  padding %.2f%%\n", h.num_sequences
                                       ? 100.0 * pads / (double(h.num_sequences) * h.seq_len)
                                       : 0.0);
    if (bad) {
      fprintf(stderr, "data_prep inspect: %s: %llu malformed sequence(s); "
              "re-run `data_prep pretrain`\n", path.c_str(), (unsigned long long)bad);
      rc = kExitError;
    }
  } else if (!short_file && magic == kTaskMagic) {
    TaskHeader h;
    if (!read_task_header(f, path.c_str(), &h, &err, expected_vocab)) {
      fprintf(stderr, "data_prep inspect: %s\n", err.c_str());
      fclose(f);
      return kExitError;
    }
    version = h.version, payload_crc = h.payload_crc, what = kTaskWhat, fix = kTaskFix;
    printf("%s: GLUE task file, version %u\n", path.c_str(), h.version);
    printf("  task %s, split %s, seq_len %u, vocab_size %u, num_examples %llu\n", h.task,
           h.split, h.seq_len, h.vocab_size, (unsigned long long)h.num_examples);
    printf("  num_labels %u, has_labels %u, label names:", h.num_labels, h.has_labels);
    for (uint32_t k = 0; k < h.num_labels; k++) printf(" %u=%s", k, h.label_names[k]);
    printf("\n");
    const uint32_t T = h.seq_len;
    const uint64_t count = verify ? h.num_examples : std::min<uint64_t>(h.num_examples, uint64_t(n));
    std::vector<uint8_t> rec(task_record_size(T));
    std::vector<uint16_t> ids(T);
    std::vector<uint8_t> types(T);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < count; i++) {
      float label;
      uint32_t index;
      if (!read_record(rec.data(), rec.size())) {
        fclose(f);
        return kExitError;
      }
      unpack_task_record(rec.data(), T, ids.data(), types.data(), &label, &index);
      // Split the ids into the two segments by type; drop [PAD] when known.
      std::vector<int> a, b;
      bool ids_ok = true;
      for (uint32_t k = 0; k < T; k++) {
        ids_ok = ids_ok && ids[k] < h.vocab_size && types[k] <= 1;
        if (t && int(ids[k]) == tok.pad_id()) continue;
        (types[k] ? b : a).push_back(ids[k]);
      }
      bad += !ids_ok;
      const bool label_ok = !h.has_labels
                                ? label == -1
                                : (h.num_labels == 1 ? std::isfinite(label)
                                                     : label >= 0 && label < h.num_labels &&
                                                           label == std::floor(label));
      bad += !label_ok;
      if (i >= uint64_t(n)) continue;
      printf("[%llu] index %u, label ", (unsigned long long)i, index);
      if (!h.has_labels) printf("none");
      else if (h.num_labels == 1) printf("%g", label);
      else if (label_ok) printf("%d (%s)", int(label), h.label_names[int(label)]);
      else printf("%g (invalid)", label);
      printf("\n    a: %s\n", decode_ids(ids_ok ? t : nullptr, a).c_str());
      if (!b.empty()) printf("    b: %s\n", decode_ids(ids_ok ? t : nullptr, b).c_str());
    }
    if (bad) {
      fprintf(stderr, "data_prep inspect: %s: %llu malformed id(s), type(s) or label(s); "
              "re-run `data_prep glue`\n", path.c_str(), (unsigned long long)bad);
      rc = kExitError;
    }
  } else {
    char buf[200];
    snprintf(buf, sizeof(buf),
             "not a bigs data file (%s 0x%08X; a pretraining shard starts with 0x%08X, a "
             "GLUE task file with 0x%08X)",
             short_file ? "shorter than 4 bytes," : "magic", short_file ? 0u : magic,
             kShardMagic, kTaskMagic);
    fprintf(stderr, "data_prep inspect: %s: %s\n", path.c_str(), buf);
    rc = kExitError;
  }
  fclose(f);
  if (verify && what) {
    if (!has_checksums(version)) {
      printf("  %s\n", unchecked_note(path.c_str(), what, fix).c_str());
    } else if (crc != payload_crc) {
      fprintf(stderr, "data_prep inspect: %s\n",
              checksum_error(path.c_str(), what, crc, payload_crc, fix).c_str());
      rc = kExitError;
    } else {
      printf("  checksums: header and contents verified (CRC-32C 0x%08X)\n", crc);
    }
  }
  return rc;
}

// ----------------------------------------------------------------------------
// Command line (the flag tables of cli.h drive getopt_long and --help)

static const char* kUsage =
    "usage: data_prep COMMAND [options]\n"
    "  pretrain  text files -> pretraining shards of T-token sequences\n"
    "  glue      a GLUE task's TSV files -> task files\n"
    "  inspect   print a shard's or a task file's header and first examples (--verify: check it all)\n"
    "Run `data_prep COMMAND --help` for the options of each command.\n";

// Parses argv against the flags; returns -1 to go on, else the exit status.
static int parse_command(const char* cmd, int argc, char** argv, const std::vector<Flag>& flags,
                         const char* usage, std::vector<std::string>* positional) {
  std::string err;
  const int rc = parse_flags(argc, argv, flags, usage, positional, &err);
  if (rc == 1) return 0;  // --help
  if (rc != 0) {
    fprintf(stderr, "data_prep %s: %s\n", cmd, err.c_str());
    return kExitUsage;
  }
  return -1;
}

// Names the required flags that were not given; empty when all were.
static std::string missing_flags(const std::vector<std::pair<const char*, bool>>& required) {
  std::string missing;
  for (const auto& [name, given] : required)
    if (!given) missing += std::string(" --") + name;
  return missing;
}

static int cmd_pretrain(int argc, char** argv) {
  PretrainOptions o;
  o.threads = std::max(1u, std::thread::hardware_concurrency());
  const std::vector<Flag> flags = {
      {Flag::Str, "vocab", &o.vocab, 0, 0, "BERT vocab.txt (required)"},
      {Flag::Int, "seq", &o.seq_len, 3, 65536, "tokens per sequence, T (required)"},
      {Flag::Str, "out", &o.out, 0, 0, "output directory, created if missing (required)"},
      {Flag::Num, "val-fraction", &o.val_fraction, 0, 0.9, "share of documents in the val split"},
      {Flag::Int, "shard-sequences", &o.shard_sequences, 1, 1 << 30, "sequences per shard file"},
      {Flag::Int, "threads", &o.threads, 1, 256, "tokenizer threads"},
      {Flag::Int, "seed", &o.seed, 0, 1LL << 53, "seed of the train/val split"},
  };
  const char* usage =
      "usage: data_prep pretrain --vocab VOCAB --seq T --out DIR [options] FILE...\n"
      "Packs plain UTF-8 text (or .gz, read through gzip -dc) into DIR/train_NNNNNN.bin\n"
      "and DIR/val_NNNNNN.bin. Documents are separated by blank lines; each sequence is\n"
      "[CLS], whole lines of one document, [SEP], then [PAD] to T.";
  const int rc = parse_command("pretrain", argc, argv, flags, usage, &o.inputs);
  if (rc >= 0) return rc;
  const std::string missing = missing_flags(
      {{"vocab", !o.vocab.empty()}, {"seq", o.seq_len != 0}, {"out", !o.out.empty()}});
  if (!missing.empty() || o.inputs.empty()) {
    fprintf(stderr, "data_prep pretrain: missing%s%s; see --help\n", missing.c_str(),
            o.inputs.empty() ? " input FILE..." : "");
    return kExitUsage;
  }
  printf("data_prep pretrain\n");
  print_settings(stdout, flags);
  return run_pretrain(o);
}

static int cmd_glue(int argc, char** argv) {
  std::string task, vocab, data_dir, out;
  long long T = 0;
  const std::vector<Flag> flags = {
      {Flag::Str, "task", &task, 0, 0, "cola sst2 mrpc stsb qqp mnli qnli rte wnli ax (required)"},
      {Flag::Str, "vocab", &vocab, 0, 0, "BERT vocab.txt (required)"},
      {Flag::Int, "seq", &T, 3, 65536, "tokens per example, T (required)"},
      {Flag::Str, "data-dir", &data_dir, 0, 0, "the task's folder, e.g. glue_data/MNLI (required)"},
      {Flag::Str, "out", &out, 0, 0, "output directory, created if missing (required)"},
  };
  const char* usage =
      "usage: data_prep glue --task TASK --vocab VOCAB --seq T --data-dir DIR --out DIR\n"
      "Converts one task of the standard GLUE distribution (DIR/train.tsv, dev.tsv,\n"
      "test.tsv; MNLI: dev_matched, dev_mismatched, test_matched, test_mismatched; AX:\n"
      "AX.tsv) into OUT/TASK_SPLIT.bin.";
  std::vector<std::string> positional;
  const int rc = parse_command("glue", argc, argv, flags, usage, &positional);
  if (rc >= 0) return rc;
  const std::string missing =
      missing_flags({{"task", !task.empty()}, {"vocab", !vocab.empty()}, {"seq", T != 0},
                     {"data-dir", !data_dir.empty()}, {"out", !out.empty()}});
  if (!missing.empty() || !positional.empty()) {
    fprintf(stderr, "data_prep glue: %s%s; see --help\n",
            missing.empty() ? "unexpected argument " : "missing",
            missing.empty() ? positional[0].c_str() : missing.c_str());
    return kExitUsage;
  }
  return run_glue(task, vocab, int(T), data_dir, out);
}

static int cmd_inspect(int argc, char** argv) {
  long long n = 3;
  std::string vocab;
  bool verify = false;
  const std::vector<Flag> flags = {
      {Flag::Int, "n", &n, 0, 1LL << 40, "examples to print"},
      {Flag::Str, "vocab", &vocab, 0, 0, "BERT vocab.txt to decode with (and to check against)"},
      {Flag::Switch, "verify", &verify, 0, 0, "read the whole file: check every record and the checksum"},
  };
  const char* usage =
      "usage: data_prep inspect FILE [--n K] [--vocab VOCAB] [--verify]\n"
      "Prints the header of a shard or task file (checked, its checksum too) and its\n"
      "first K examples (decoded to text with --vocab, else as ids). --verify reads the\n"
      "whole file: every record is checked, and the contents against the checksum.";
  std::vector<std::string> files;
  const int rc = parse_command("inspect", argc, argv, flags, usage, &files);
  if (rc >= 0) return rc;
  if (files.size() != 1) {
    fprintf(stderr, "data_prep inspect: expected one FILE, got %zu; see --help\n", files.size());
    return kExitUsage;
  }
  return run_inspect(files[0], n, vocab, verify);
}

int data_prep_main(int argc, char** argv) {
  if (argc < 2) {
    fputs(kUsage, stderr);
    return kExitUsage;
  }
  const std::string cmd = argv[1];
  if (cmd == "pretrain") return cmd_pretrain(argc - 1, argv + 1);
  if (cmd == "glue") return cmd_glue(argc - 1, argv + 1);
  if (cmd == "inspect") return cmd_inspect(argc - 1, argv + 1);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    fputs(kUsage, stdout);
    return 0;
  }
  fprintf(stderr, "data_prep: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return kExitUsage;
}

}  // namespace bigs

#ifndef DATA_PREP_NO_MAIN
int main(int argc, char** argv) { return bigs::data_prep_main(argc, argv); }
#endif
