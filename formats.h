// formats.h: the binary files that data_prep writes and bigs reads, and a
// small helper to write any file atomically (shards, task files, checkpoints).
//
// Every file starts with a fixed-size little-endian header: a magic number, a
// version, the shapes, then reserved zero bytes. Readers check the magic, the
// version, the vocabulary size and that the file size matches the header, and
// say what to run when a check fails.
//
//   pretraining shard (train_000000.bin, val_000000.bin, ...):
//     ShardHeader (256 bytes), then num_sequences x T uint16 token ids, each
//     sequence [CLS] ... [SEP] [PAD] ... [PAD].
//     file size = 256 + num_sequences * T * 2
//
//   GLUE task file (mnli_train.bin, mnli_dev_matched.bin, ...):
//     TaskHeader (1024 bytes), then num_examples records of 3T + 8 bytes,
//     packed with no padding between fields:
//       uint16 ids[T]     [CLS] a [SEP] (b [SEP]) [PAD] ... [PAD]
//       uint8  types[T]   0 for [CLS] a [SEP], 1 for b [SEP], 0 for [PAD]
//       float  label      class index as a float, the STS-B score, or -1 when
//                         has_labels == 0 (test splits)
//       uint32 index      the test file's index column for test splits, else
//                         the 0-based data row number in the TSV
//     file size = 1024 + num_examples * (3T + 8)
//
// Header-only, C++17, POSIX (fsync, rename); builds with g++ and nvcc.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bigs files are little-endian and are read with plain fread; port this first"
#endif

namespace bigs {

// ----------------------------------------------------------------------------
// Pretraining shard

constexpr uint32_t kShardMagic = 0x44534742;  // "BGSD" as bytes on disk
constexpr uint32_t kShardVersion = 1;

struct ShardHeader {
  uint32_t magic;          // kShardMagic
  uint32_t version;        // kShardVersion
  uint32_t seq_len;        // T, tokens per sequence
  uint32_t vocab_size;     // ids are < vocab_size <= 65536
  uint64_t num_sequences;  // sequences in this file
  uint32_t pad_id, cls_id, sep_id, mask_id, unk_id;
  uint8_t reserved[212];   // zero
};
static_assert(sizeof(ShardHeader) == 256, "ShardHeader must be 256 bytes");

// ----------------------------------------------------------------------------
// GLUE task file

constexpr uint32_t kTaskMagic = 0x4B544742;  // "BGTK" as bytes on disk
constexpr uint32_t kTaskVersion = 1;
constexpr int kMaxLabels = 8;

struct TaskHeader {
  uint32_t magic;          // kTaskMagic
  uint32_t version;        // kTaskVersion
  uint32_t seq_len;        // T
  uint32_t vocab_size;     // ids are < vocab_size <= 65536
  uint64_t num_examples;   // records in this file
  uint32_t num_labels;     // classes; 1 = regression (STS-B)
  uint32_t has_labels;     // 0 for test splits (every label is -1)
  char task[16];           // "mnli", NUL-padded
  char split[32];          // "dev_matched", NUL-padded
  char label_names[kMaxLabels][32];  // class i's name ("entailment"); "score"
  uint8_t reserved[688];   // zero
};
static_assert(sizeof(TaskHeader) == 1024, "TaskHeader must be 1024 bytes");

// Bytes of one example: ids (2T) + types (T) + label (4) + index (4).
inline uint64_t task_record_size(uint32_t seq_len) { return 3ull * seq_len + 8; }

// One record <-> its fields. rec points at task_record_size(T) bytes; the
// float and the uint32 are unaligned when T is odd, hence memcpy.
inline void pack_task_record(uint8_t* rec, uint32_t T, const uint16_t* ids,
                             const uint8_t* types, float label, uint32_t index) {
  memcpy(rec, ids, 2ull * T);
  memcpy(rec + 2ull * T, types, T);
  memcpy(rec + 3ull * T, &label, 4);
  memcpy(rec + 3ull * T + 4, &index, 4);
}
inline void unpack_task_record(const uint8_t* rec, uint32_t T, uint16_t* ids,
                               uint8_t* types, float* label, uint32_t* index) {
  memcpy(ids, rec, 2ull * T);
  memcpy(types, rec + 2ull * T, T);
  memcpy(label, rec + 3ull * T, 4);
  memcpy(index, rec + 3ull * T + 4, 4);
}

// ----------------------------------------------------------------------------
// Readers. Each reads the header from the start of f, checks it against the
// file's real size (and against expected_vocab_size unless it is 0), and
// leaves f positioned at the first sequence / record.

// Size of an open file in bytes, or -1.
inline int64_t file_size_of(FILE* f) {
  struct stat st;
  if (fstat(fileno(f), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_size);
}

// Reads the fixed-size header and checks the magic and the version. what is
// "pretraining shard" or "GLUE task file", fix says what to run.
inline bool read_header_bytes(FILE* f, const char* path, void* h, size_t size,
                              uint32_t magic, uint32_t version, const char* what,
                              const char* fix, std::string* err) {
  const int64_t actual = file_size_of(f);
  if (actual < 0 || fseek(f, 0, SEEK_SET) != 0) {
    *err = std::string(path) + ": cannot read: " + strerror(errno);
    return false;
  }
  if (actual < static_cast<int64_t>(size) || fread(h, size, 1, f) != 1) {
    *err = std::string(path) + ": not a " + what + ": " + std::to_string(actual) +
           " bytes, shorter than its " + std::to_string(size) + "-byte header; " + fix;
    return false;
  }
  uint32_t got_magic, got_version;
  memcpy(&got_magic, h, 4);
  memcpy(&got_version, static_cast<const char*>(h) + 4, 4);
  if (got_magic != magic) {
    char buf[160];
    snprintf(buf, sizeof(buf), ": not a %s (magic 0x%08X, expected 0x%08X); ", what,
             got_magic, magic);
    *err = std::string(path) + buf + fix;
    return false;
  }
  if (got_version != version) {
    *err = std::string(path) + ": " + what + " version " + std::to_string(got_version) +
           ", this build reads version " + std::to_string(version) + "; " + fix;
    return false;
  }
  return true;
}

// Checks the fields shared by both headers and the file size.
inline bool check_header_shape(const char* path, const char* what, const char* fix,
                               uint32_t seq_len, uint32_t min_seq_len,
                               uint32_t vocab_size, uint32_t expected_vocab_size,
                               uint64_t count, uint64_t header_size,
                               uint64_t record_size, int64_t actual, std::string* err) {
  const std::string p(path);
  if (seq_len < min_seq_len || seq_len > (1u << 20)) {
    *err = p + ": " + what + " has seq_len " + std::to_string(seq_len) +
           ", expected " + std::to_string(min_seq_len) + "..1048576; " + fix;
    return false;
  }
  if (vocab_size == 0 || vocab_size > 65536) {
    *err = p + ": " + what + " has vocab_size " + std::to_string(vocab_size) +
           ", expected 1..65536 (ids are uint16); " + fix;
    return false;
  }
  if (expected_vocab_size != 0 && vocab_size != expected_vocab_size) {
    *err = p + ": " + what + " was made with a vocabulary of " +
           std::to_string(vocab_size) + " tokens, but this vocabulary has " +
           std::to_string(expected_vocab_size) +
           "; use the same vocab file or " + fix;
    return false;
  }
  // count * record_size must not wrap for a garbage header.
  if (count > (UINT64_MAX - header_size) / record_size ||
      header_size + count * record_size != static_cast<uint64_t>(actual)) {
    *err = p + ": " + what + " is " + std::to_string(actual) + " bytes, but its header (" +
           std::to_string(count) + " x " + std::to_string(record_size) +
           "-byte records) says " +
           (count > (UINT64_MAX - header_size) / record_size
                ? std::string("more than 2^64")
                : std::to_string(header_size + count * record_size)) +
           "; the file is truncated or damaged, " + fix;
    return false;
  }
  return true;
}

inline bool read_shard_header(FILE* f, const char* path, ShardHeader* h, std::string* err,
                              uint32_t expected_vocab_size = 0) {
  const char* what = "pretraining shard";
  const char* fix = "re-run `data_prep pretrain` to rebuild it";
  if (!read_header_bytes(f, path, h, sizeof(*h), kShardMagic, kShardVersion, what, fix,
                         err))
    return false;
  if (!check_header_shape(path, what, fix, h->seq_len, 3, h->vocab_size,
                          expected_vocab_size, h->num_sequences, sizeof(*h),
                          2ull * h->seq_len, file_size_of(f), err))
    return false;
  const uint32_t ids[5] = {h->pad_id, h->cls_id, h->sep_id, h->mask_id, h->unk_id};
  for (uint32_t id : ids) {
    if (id >= h->vocab_size) {
      *err = std::string(path) + ": pretraining shard has a special token id " +
             std::to_string(id) + " >= vocab_size " + std::to_string(h->vocab_size) +
             "; " + fix;
      return false;
    }
  }
  return true;
}

inline bool read_task_header(FILE* f, const char* path, TaskHeader* h, std::string* err,
                             uint32_t expected_vocab_size = 0) {
  const char* what = "GLUE task file";
  const char* fix = "re-run `data_prep glue` to rebuild it";
  if (!read_header_bytes(f, path, h, sizeof(*h), kTaskMagic, kTaskVersion, what, fix, err))
    return false;
  if (!check_header_shape(path, what, fix, h->seq_len, 3, h->vocab_size,
                          expected_vocab_size, h->num_examples, sizeof(*h),
                          task_record_size(h->seq_len), file_size_of(f), err))
    return false;
  if (h->num_labels < 1 || h->num_labels > kMaxLabels || h->has_labels > 1 ||
      memchr(h->task, 0, sizeof(h->task)) == nullptr ||
      memchr(h->split, 0, sizeof(h->split)) == nullptr) {
    *err = std::string(path) + ": GLUE task file has a damaged header (num_labels " +
           std::to_string(h->num_labels) + ", has_labels " +
           std::to_string(h->has_labels) + "); " + fix;
    return false;
  }
  for (int i = 0; i < kMaxLabels; i++) {
    if (memchr(h->label_names[i], 0, sizeof(h->label_names[i])) == nullptr) {
      *err = std::string(path) + ": GLUE task file has an unterminated label name; " + fix;
      return false;
    }
  }
  return true;
}

// ----------------------------------------------------------------------------
// AtomicFile: write PATH.tmp, then fflush + fsync + rename to PATH, so that a
// crash or an error never leaves a partial file under the final name.
//
//   AtomicFile out;
//   if (!out.open(path, &err)) ...
//   fwrite(..., out.f);                     // any stdio calls on out.f
//   if (!out.commit(&err)) ...              // checks every write succeeded
//
// close() without commit() finishes the temporary file but keeps the final
// name untouched, so a writer of many files can commit them all at the end.
// The destructor removes the temporary file unless it was committed.

class AtomicFile {
 public:
  FILE* f = nullptr;

  AtomicFile() = default;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  AtomicFile(AtomicFile&& o) noexcept { *this = std::move(o); }
  AtomicFile& operator=(AtomicFile&& o) noexcept {
    if (this != &o) {
      discard();
      f = o.f;
      path_ = std::move(o.path_);
      tmp_ = std::move(o.tmp_);
      o.f = nullptr;
      o.tmp_.clear();
    }
    return *this;
  }
  ~AtomicFile() { discard(); }

  const std::string& path() const { return path_; }

  bool open(const std::string& path, std::string* err) {
    discard();
    path_ = path;
    tmp_ = path + ".tmp";
    f = fopen(tmp_.c_str(), "wb");
    if (!f) {
      *err = "cannot create " + tmp_ + ": " + strerror(errno);
      tmp_.clear();
      return false;
    }
    return true;
  }

  // Flushes, syncs and closes the temporary file; reports any write error.
  bool close(std::string* err) {
    if (!f) return true;
    bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    const int saved = errno;
    ok = (fclose(f) == 0) && ok;
    f = nullptr;
    if (!ok) *err = "cannot write " + tmp_ + ": " + strerror(saved ? saved : errno);
    return ok;
  }

  // close(), then rename PATH.tmp to PATH.
  bool commit(std::string* err) {
    if (tmp_.empty()) {
      *err = "internal error: commit of " + path_ + " that was not opened";
      return false;
    }
    if (!close(err)) return false;
    if (rename(tmp_.c_str(), path_.c_str()) != 0) {
      *err = "cannot rename " + tmp_ + " to " + path_ + ": " + strerror(errno);
      return false;
    }
    tmp_.clear();
    // Best effort: make the rename itself durable.
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int fd = ::open(dir.c_str(), O_RDONLY);
    if (fd >= 0) {
      fsync(fd);
      ::close(fd);
    }
    return true;
  }

 private:
  std::string path_, tmp_;  // tmp_ is empty when there is nothing to clean up

  void discard() {
    if (f) fclose(f);
    f = nullptr;
    if (!tmp_.empty()) remove(tmp_.c_str());
    tmp_.clear();
  }
};

}  // namespace bigs
