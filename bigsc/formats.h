// formats.h: the binary files that data_prep writes and bigs reads, and a
// small helper to write any file atomically (shards, task files, checkpoints).
//
// Every file starts with a fixed-size little-endian header: a magic number, a
// version, the shapes, two checksums, then reserved zero bytes. Readers check
// the magic, the version, the header's checksum, the vocabulary size and that
// the file size matches the header, and say what to run when a check fails.
//
// Checksums (version 2; version-1 files have zeros there and still load, with
// a note): payload_crc is the CRC-32C of every byte after the header, computed
// while writing; header_crc is the CRC-32C of the header itself with
// header_crc set to zero, so a flipped bit anywhere in a file is found. The
// header's is checked whenever a file is opened; the payload's by whoever
// reads the whole file (task files and checkpoints on load, a shard when the
// trainer first reads it, `data_prep inspect --verify`).
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
// Header-only, C++17, POSIX (fsync, rename, flock); builds with g++, clang and nvcc.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __SSE4_2__
#include <nmmintrin.h>
#endif

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bigs files are little-endian and are read with plain fread; port this first"
#endif

namespace bigs {

// ----------------------------------------------------------------------------
// CRC-32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final
// xor 0xFFFFFFFF), the checksum of iSCSI, ext4 and Btrfs; crc32c("123456789")
// = 0xE3069283. crc32c(crc, data, n) extends the CRC of earlier bytes (0 for
// none), so a file's checksum is built up as it is written.
//
// Two implementations with the same results (test_data_prep checks they
// agree): slicing-by-8 tables, portable, about 1 byte per cycle; and the
// SSE4.2 crc32 instruction, 8 bytes per instruction, used when the compiler
// targets it (-march=native on any x86 since 2008). README "Reliability" has
// both speeds.

namespace crc32c_detail {
struct Tables {
  uint32_t t[8][256];
};
constexpr Tables make_tables() {
  Tables s{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    s.t[0][i] = c;
  }
  // t[k][i]: the CRC of byte i followed by k zero bytes, so eight bytes are
  // folded with eight independent lookups.
  for (int k = 1; k < 8; k++)
    for (uint32_t i = 0; i < 256; i++) s.t[k][i] = (s.t[k - 1][i] >> 8) ^ s.t[0][s.t[k - 1][i] & 0xFF];
  return s;
}
inline constexpr Tables kTables = make_tables();
}  // namespace crc32c_detail

inline uint32_t crc32c_portable(uint32_t crc, const void* data, size_t n) {
  const auto& t = crc32c_detail::kTables.t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    memcpy(&w, p, 8);  // little-endian: byte 0 is the low byte
    w ^= c;
    c = t[7][w & 0xFF] ^ t[6][(w >> 8) & 0xFF] ^ t[5][(w >> 16) & 0xFF] ^ t[4][(w >> 24) & 0xFF] ^
        t[3][(w >> 32) & 0xFF] ^ t[2][(w >> 40) & 0xFF] ^ t[1][(w >> 48) & 0xFF] ^ t[0][w >> 56];
  }
  for (; n > 0; n--, p++) c = (c >> 8) ^ t[0][(c ^ *p) & 0xFF];
  return ~c;
}

#ifdef __SSE4_2__
inline uint32_t crc32c_sse42(uint32_t crc, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; n--, p++) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}
inline uint32_t crc32c(uint32_t crc, const void* data, size_t n) { return crc32c_sse42(crc, data, n); }
#else
inline uint32_t crc32c(uint32_t crc, const void* data, size_t n) { return crc32c_portable(crc, data, n); }
#endif

// A header's own checksum: its CRC-32C with the header_crc field zero.
template <class H>
uint32_t header_checksum(const H& h) {
  H c = h;
  c.header_crc = 0;
  return crc32c(0, &c, sizeof c);
}

// Fills in both checksums of a header whose payload has CRC payload_crc.
template <class H>
void seal_header(H* h, uint32_t payload_crc) {
  h->payload_crc = payload_crc;
  h->header_crc = header_checksum(*h);
}

// The identity of a vocabulary, recorded in shards, task files and
// checkpoints so that files made with different vocabularies are not mixed:
// the CRC-32C of its tokens in id order, each followed by '\n' (the file as
// read, with CRLF and trailing spaces gone), or 1 where that is 0; 0 means
// unknown (a file older than the field). dev/convert_hf.py computes the same.
template <class TokenAt>
uint32_t vocab_hash_of(size_t n, TokenAt token_at) {
  uint32_t c = 0;
  for (size_t i = 0; i < n; i++) {
    const std::string& t = token_at(i);
    c = crc32c(c, t.data(), t.size());
    c = crc32c(c, "\n", 1);
  }
  return c ? c : 1;
}

// ----------------------------------------------------------------------------
// Pretraining shard

constexpr uint32_t kShardMagic = 0x44534742;  // "BGSD" as bytes on disk
// 2 added the checksums, 3 the shard set (set_id, set_shards, shard_index)
// and the vocabulary's hash; 1 and 2 still load.
constexpr uint32_t kShardVersion = 3;

struct ShardHeader {
  uint32_t magic;          // kShardMagic
  uint32_t version;        // kShardVersion
  uint32_t seq_len;        // T, tokens per sequence
  uint32_t vocab_size;     // ids are < vocab_size <= 65536
  uint64_t num_sequences;  // sequences in this file
  uint32_t pad_id, cls_id, sep_id, mask_id, unk_id;
  uint32_t payload_crc;    // CRC-32C of the ids (version 2; 0 in version 1)
  uint32_t header_crc;     // CRC-32C of this header with header_crc = 0
  // Version 3: the shard set. One `data_prep pretrain` gives every shard it
  // writes (train and val) the same nonzero set_id, made from the contents
  // of all of them (so another run's shards have another); set_shards is the
  // number of shards of this split (train or val) in the set and
  // shard_index this shard's number among them. A reader refuses shards of
  // two sets, or a set with shards missing.
  uint32_t vocab_hash;     // vocab_hash_of() of the vocabulary; 0 = unknown (version < 3)
  uint64_t set_id;
  uint32_t set_shards, shard_index;
  uint8_t reserved[184];   // zero
};
static_assert(sizeof(ShardHeader) == 256, "ShardHeader must be 256 bytes");

// ----------------------------------------------------------------------------
// GLUE task file

constexpr uint32_t kTaskMagic = 0x4B544742;  // "BGTK" as bytes on disk
// 2 added the checksums, 3 the vocabulary's hash; 1 and 2 still load.
constexpr uint32_t kTaskVersion = 3;
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
  uint32_t payload_crc;    // CRC-32C of the records (version 2; 0 in version 1)
  uint32_t header_crc;     // CRC-32C of this header with header_crc = 0
  uint32_t vocab_hash;     // vocab_hash_of() of the vocabulary (version 3); 0 = unknown
  uint8_t reserved[676];   // zero
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

// Version 2 of every bigs file added the two checksums of the header.
inline bool has_checksums(uint32_t version) { return version >= 2; }

// Reads the fixed-size header H from the start of f and checks its magic, its
// version (1 to version) and, from version 2 on, its own checksum. what is
// "pretraining shard", "GLUE task file" or "bigs checkpoint"; fix says what
// to run when the file is bad.
template <class H>
bool read_header(FILE* f, const char* path, H* h, uint32_t magic, uint32_t version, const char* what,
                 const char* fix, std::string* err) {
  const int64_t actual = file_size_of(f);
  if (actual < 0 || fseek(f, 0, SEEK_SET) != 0) {
    *err = std::string(path) + ": cannot read: " + strerror(errno);
    return false;
  }
  if (actual < static_cast<int64_t>(sizeof(H)) || fread(h, sizeof(H), 1, f) != 1) {
    *err = std::string(path) + ": not a " + what + ": " + std::to_string(actual) + " bytes, shorter than its " +
           std::to_string(sizeof(H)) + "-byte header; " + fix;
    return false;
  }
  char buf[200];
  if (h->magic != magic) {
    snprintf(buf, sizeof(buf), ": not a %s (magic 0x%08X, expected 0x%08X); ", what, h->magic, magic);
    *err = std::string(path) + buf + fix;
    return false;
  }
  if (h->version < 1 || h->version > version) {
    *err = std::string(path) + ": " + what + " version " + std::to_string(h->version) +
           ", this build reads versions 1 to " + std::to_string(version) + "; " + fix;
    return false;
  }
  // A version-1 writer left both checksum fields zero: a later file whose
  // version field was damaged into 1 is not read unverified.
  if (!has_checksums(h->version) && (h->header_crc != 0 || h->payload_crc != 0)) {
    *err = std::string(path) + ": the " + what + "'s header is damaged (version 1, which has no checksums, but its "
           "checksum fields are set); " + fix;
    return false;
  }
  if (has_checksums(h->version) && header_checksum(*h) != h->header_crc) {
    snprintf(buf, sizeof(buf), ": the %s's header is damaged (its CRC-32C is 0x%08X, it says 0x%08X); ", what,
             header_checksum(*h), h->header_crc);
    *err = std::string(path) + buf + fix;
    return false;
  }
  return true;
}

// The error for a payload whose checksum does not match its header's.
inline std::string checksum_error(const char* path, const char* what, uint32_t got, uint32_t want,
                                  const char* fix) {
  char buf[200];
  snprintf(buf, sizeof(buf), ": checksum mismatch: the %s's contents have CRC-32C 0x%08X, its header says 0x%08X; ",
           what, got, want);
  return std::string(path) + buf + "the file is damaged (on disk or in a copy); " + fix;
}

// The note for a version-1 file, which has no checksums to verify.
inline std::string unchecked_note(const char* path, const char* what, const char* fix) {
  return std::string("note: ") + path + " is a version-1 " + what +
         ", which carries no checksum, so it is read unverified (" + fix + " to get version 2)";
}

// Reads everything after the header_size-byte header of f and checks its
// CRC-32C against want. Leaves f at the end of the file.
inline bool verify_payload(FILE* f, const char* path, uint64_t header_size, uint32_t want, const char* what,
                           const char* fix, std::string* err) {
  if (fseek(f, static_cast<long>(header_size), SEEK_SET) != 0) {
    *err = std::string(path) + ": cannot read: " + strerror(errno);
    return false;
  }
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) crc = crc32c(crc, buf.data(), n);
  if (ferror(f)) {
    *err = std::string(path) + ": cannot read: " + strerror(errno);
    return false;
  }
  if (crc != want) {
    *err = checksum_error(path, what, crc, want, fix);
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

// What the readers call each kind of file, and what to run to rebuild one.
inline constexpr const char* kShardWhat = "pretraining shard";
inline constexpr const char* kShardFix = "re-run `data_prep pretrain` to rebuild it";
inline constexpr const char* kTaskWhat = "GLUE task file";
inline constexpr const char* kTaskFix = "re-run `data_prep glue` to rebuild it";

inline bool read_shard_header(FILE* f, const char* path, ShardHeader* h, std::string* err,
                              uint32_t expected_vocab_size = 0) {
  const char* what = kShardWhat;
  const char* fix = kShardFix;
  if (!read_header(f, path, h, kShardMagic, kShardVersion, what, fix, err)) return false;
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
  const char* what = kTaskWhat;
  const char* fix = kTaskFix;
  if (!read_header(f, path, h, kTaskMagic, kTaskVersion, what, fix, err)) return false;
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
// AtomicFile: a durable save. Writes PATH.tmp, then fflush + fsync it, rename
// it to PATH and fsync the directory, so that after a crash, a kill or a full
// disk PATH is either the old file or the complete new one, never a mix, and
// a completed save survives a power cut.
//
//   AtomicFile out;
//   if (!out.open(path, &err)) ...
//   fwrite(&header, sizeof header, 1, out.f);  // the header: not checksummed
//   out.write(data, bytes);                    // the payload: out.crc() grows
//   seal_header(&header, out.crc());
//   out.rewrite_header(&header, sizeof header);
//   if (!out.commit(&err)) ...                 // checks every write succeeded
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
      crc_ = o.crc_;
      write_errno_ = o.write_errno_;
      o.f = nullptr;
      o.tmp_.clear();
    }
    return *this;
  }
  ~AtomicFile() { discard(); }

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_; }
  uint32_t crc() const { return crc_; }  // of the bytes passed to write()

  bool open(const std::string& path, std::string* err) {
    discard();
    path_ = path;
    tmp_ = path + ".tmp";
    crc_ = 0;
    write_errno_ = 0;
    f = fopen(tmp_.c_str(), "wb");
    if (!f) {
      *err = "cannot create " + tmp_ + ": " + strerror(errno);
      tmp_.clear();
      return false;
    }
    return true;
  }

  // Writes n bytes of the payload and adds them to crc(). A failure (a full
  // disk: ENOSPC, a size limit: EFBIG) is kept for close() to report.
  bool write(const void* p, size_t n) {
    crc_ = crc32c(crc_, p, n);
    if (fwrite(p, 1, n, f) == n) return true;
    if (!write_errno_) write_errno_ = errno ? errno : EIO;
    return false;
  }

  // Writes the header again over the first size bytes (once the payload and
  // its checksum are known), then goes back to the end.
  bool rewrite_header(const void* h, size_t size) {
    return fseek(f, 0, SEEK_SET) == 0 && fwrite(h, size, 1, f) == 1 && fseek(f, 0, SEEK_END) == 0;
  }

  // Flushes, syncs and closes the temporary file; reports any write error.
  bool close(std::string* err) {
    if (!f) return true;
    errno = 0;
    bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    int saved = errno;
    ok = (fclose(f) == 0) && ok;
    f = nullptr;
    if (!ok) {
      if (write_errno_) saved = write_errno_;  // the first failure says most
      if (!saved) saved = errno ? errno : EIO;
      *err = "cannot write " + tmp_ + ": " + strerror(saved);
    }
    return ok;
  }

  // close(), then rename PATH.tmp to PATH and sync the directory, which makes
  // the rename itself durable.
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
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // EINVAL: a file system that cannot sync a directory (it has nothing to sync).
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL)) {
      *err = "wrote " + path_ + ", but cannot sync its directory " + dir + ": " + strerror(errno);
      if (fd >= 0) ::close(fd);
      return false;
    }
    ::close(fd);
    return true;
  }

 private:
  std::string path_, tmp_;  // tmp_ is empty when there is nothing to clean up
  uint32_t crc_ = 0;
  int write_errno_ = 0;     // errno of the first failed write(), or 0

  void discard() {
    if (f) fclose(f);
    f = nullptr;
    if (!tmp_.empty()) remove(tmp_.c_str());
    tmp_.clear();
  }
};

// ----------------------------------------------------------------------------
// DirLock: one writer per output directory. An exclusive flock(2) on
// DIR/.lock, held while the object lives; the kernel drops it when the
// process ends in any way (kill -9 included), so a lock file left behind by a
// killed run is harmless. The file holds the holder's pid, for the message of
// the next one, and is removed on release.

class DirLock {
 public:
  DirLock() = default;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock() { release(); }

  // Takes the lock on dir (which must exist), or says who has it.
  bool acquire(const std::string& dir, std::string* err) {
    release();
    const std::string path = dir + "/.lock";
    // The holder removes the file when it is done, so the file we locked may
    // already be unlinked: then lock the new one.
    for (;;) {
      fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd_ < 0) {
        *err = "cannot create the lock file " + path + ": " + strerror(errno);
        return false;
      }
      if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        char pid[32] = {};
        const ssize_t n = pread(fd_, pid, sizeof(pid) - 1, 0);
        if (n > 0) pid[strcspn(pid, "\n")] = 0;
        ::close(fd_);
        fd_ = -1;
        if (e == EWOULDBLOCK)
          *err = dir + " is in use by another run (pid " + (n > 0 ? pid : "unknown") + ", which holds " + path +
                 "); wait for it to finish or choose another output directory";
        else
          *err = "cannot lock " + path + ": " + strerror(e);
        return false;
      }
      struct stat held, now;
      if (fstat(fd_, &held) == 0 && stat(path.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
          held.st_dev == now.st_dev)
        break;
      ::close(fd_);
      fd_ = -1;
    }
    path_ = path;
    const std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd_, 0) != 0 || pwrite(fd_, pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
      *err = "cannot write the lock file " + path + ": " + strerror(errno);
      release();
      return false;
    }
    return true;
  }

  // Removes the file while still holding the lock, then drops the lock.
  void release() {
    if (fd_ < 0) return;
    unlink(path_.c_str());
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace bigs
