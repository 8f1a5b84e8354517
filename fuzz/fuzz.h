// fuzz/fuzz.h: what the libFuzzer harnesses share. Each harness fuzz/NAME.cpp
// defines LLVMFuzzerTestOneInput for one reader; `make fuzz` builds them with
// clang (-fsanitize=fuzzer,address,undefined) and runs each on its seed corpus
// fuzz/corpus/NAME (dev/fuzz.sh). A harness fails on a crash, a sanitizer
// report, a hang, or a broken invariant (FUZZ_CHECK): every reader must turn
// any input into a correct result or a clear error.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bigsc/formats.h"
#include "tokenizer.h"

// An invariant of the reader's result; a violation aborts, which libFuzzer
// reports with the input that caused it.
#define FUZZ_CHECK(cond, ...)                                                      \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                \
      fprintf(stderr, "\n");                                                       \
      abort();                                                                     \
    }                                                                              \
  } while (0)

// A scratch directory of this process, in memory (/dev/shm) where there is
// one: the readers take paths, and tmpfs makes writing each input cheap.
inline const std::string& fuzz_dir() {
  static const std::string dir = [] {
    struct stat st;
    std::string d = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    d += "/bigs_fuzz_" + std::to_string(getpid());
    mkdir(d.c_str(), 0755);
    return d;
  }();
  return dir;
}

// Writes bytes to fuzz_dir()/name and returns the path.
inline std::string fuzz_file(const std::string& name, const void* data, size_t n) {
  const std::string path = fuzz_dir() + "/" + name;
  FILE* f = fopen(path.c_str(), "wb");
  if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
    fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    abort();
  }
  return path;
}

// Mutated files rarely keep valid checksums, so every file-reading harness
// tries each input twice: as it is (the checksum checks must refuse it) and
// with its checksums recomputed (so the parser behind them is fuzzed too).
// H is ShardHeader, TaskHeader or CkptHeader: anything with the two fields.
template <class H>
std::vector<uint8_t> with_fixed_checksums(const uint8_t* data, size_t n) {
  std::vector<uint8_t> out(data, data + n);
  if (n < sizeof(H)) return out;
  H h;
  memcpy(&h, data, sizeof h);
  if (!bigs::has_checksums(h.version)) return out;
  bigs::seal_header(&h, bigs::crc32c(0, data + sizeof h, n - sizeof h));
  memcpy(out.data(), &h, sizeof h);
  return out;
}

// Runs read(path) on the input as it is and with its checksums recomputed,
// written to fuzz_dir()/name.
template <class H, class Read>
void as_is_and_with_checksums(const char* name, const uint8_t* data, size_t size, Read read) {
  read(fuzz_file(name, data, size));
  const std::vector<uint8_t> fixed = with_fixed_checksums<H>(data, size);
  read(fuzz_file(name, fixed.data(), fixed.size()));
}

// A reader's refusal must say which file it refused.
#define FUZZ_CHECK_NAMES(err, path) \
  FUZZ_CHECK((err).find(path) != std::string::npos, "the error does not name the file: %s", (err).c_str())

// Silences the readers' progress and notes on stdout, which would swamp the
// fuzzer's own output (on stderr).
inline void quiet_stdout() {
  if (!freopen("/dev/null", "w", stdout)) abort();
}

// The BERT vocabulary, loaded once (the harnesses run from the repository root).
inline const bigs::Tokenizer& bert_tokenizer() {
  static const bigs::Tokenizer tok = [] {
    bigs::Tokenizer t;
    std::string err;
    if (!t.load("data/bert-base-uncased-vocab.txt", &err)) {
      fprintf(stderr, "fuzz: %s (run from the repository root)\n", err.c_str());
      abort();
    }
    return t;
  }();
  return tok;
}
