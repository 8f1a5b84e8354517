// Tests of data_prep and formats.h: GLUE conversion of every task from
// fixtures in the real files' layouts (test/data/glue), pretraining packing,
// document boundaries, long lines, the train/val split, determinism, inspect,
// and bad input. Run from the repository root.
#define DATA_PREP_NO_MAIN
#include "data_prep.cpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;
using namespace bigs;

static const char* kVocab = "data/bert-base-uncased-vocab.txt";
static const char* kGlue = "test/data/glue";

// ----------------------------------------------------------------------------
// Every fsync and rename of this process, recorded while g_sync_log is set:
// these definitions take the place of libc's (symbol interposition) and pass
// each call on to it, so a test can see the order of a durable save.

static std::vector<std::string>* g_sync_log = nullptr;

static std::string fd_path(int fd) {
  char buf[4096];
  const ssize_t n = readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, size_t(n)) : "?";
}

extern "C" int fsync(int fd) {
  static const auto real = reinterpret_cast<int (*)(int)>(dlsym(RTLD_NEXT, "fsync"));
  if (g_sync_log) g_sync_log->push_back("fsync " + fd_path(fd));
  return real(fd);
}

extern "C" int rename(const char* from, const char* to) noexcept {
  static const auto real = reinterpret_cast<int (*)(const char*, const char*)>(dlsym(RTLD_NEXT, "rename"));
  if (g_sync_log) g_sync_log->push_back(std::string("rename ") + from + " " + to);
  return real(from, to);
}

// ----------------------------------------------------------------------------
// Helpers

// Runs `data_prep ARGS...` in-process; returns its exit status.
static int run(std::vector<std::string> args) {
  args.insert(args.begin(), "data_prep");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  fflush(stdout);
  return data_prep_main(int(args.size()), argv.data());
}

// Runs and returns what it wrote to stderr (or stdout) in *text.
static int run_capture(std::vector<std::string> args, std::string* text, bool out = false) {
  if (out) testing::internal::CaptureStdout();
  else testing::internal::CaptureStderr();
  const int rc = run(std::move(args));
  fflush(stdout);
  *text = out ? testing::internal::GetCapturedStdout() : testing::internal::GetCapturedStderr();
  return rc;
}

static const Tokenizer& tokenizer() {
  static Tokenizer tok;
  static bool loaded = false;
  if (!loaded) {
    std::string err;
    loaded = tok.load(kVocab, &err);
    if (!loaded) ADD_FAILURE() << err;
  }
  return tok;
}

static int id(const char* token) { return tokenizer().token_id(token); }

static void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

static std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// A corpus of n one-line documents, document i = the letters of i in base 8.
static std::string numbered_documents(int n) {
  std::string text;
  for (int i = 0; i < n; i++) {
    for (int v = i; ; v /= 8) {
      text += char('a' + v % 8);
      text += ' ';
      if (v < 8) break;
    }
    text += "\n\n";
  }
  return text;
}

// A fresh directory per test, removed afterwards.
class DataPrep : public testing::Test {
 protected:
  std::string dir;
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "bigs_data_prep_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir = tmpl;
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return dir + "/" + name; }
};

struct Shard {
  ShardHeader h;
  std::vector<std::vector<int>> seqs;
};

static Shard read_shard(const std::string& path) {
  Shard s = {};
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    ADD_FAILURE() << "cannot open " << path;
    return s;
  }
  std::string err;
  EXPECT_TRUE(read_shard_header(f, path.c_str(), &s.h, &err, 30522)) << err;
  std::vector<uint16_t> seq(s.h.seq_len);
  for (uint64_t i = 0; i < s.h.num_sequences; i++) {
    EXPECT_EQ(fread(seq.data(), 2, seq.size(), f), seq.size());
    s.seqs.emplace_back(seq.begin(), seq.end());
  }
  fclose(f);
  return s;
}

struct Example {
  std::vector<int> ids, types;
  float label;
  uint32_t index;
};

static std::vector<Example> read_task(const std::string& path, TaskHeader* h) {
  std::vector<Example> out;
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    ADD_FAILURE() << "cannot open " << path;
    return out;
  }
  std::string err;
  EXPECT_TRUE(read_task_header(f, path.c_str(), h, &err, 30522)) << err;
  const uint32_t T = h->seq_len;
  std::vector<uint8_t> rec(task_record_size(T));
  std::vector<uint16_t> ids(T);
  std::vector<uint8_t> types(T);
  for (uint64_t i = 0; i < h->num_examples; i++) {
    EXPECT_EQ(fread(rec.data(), rec.size(), 1, f), 1u);
    Example e;
    unpack_task_record(rec.data(), T, ids.data(), types.data(), &e.label, &e.index);
    e.ids.assign(ids.begin(), ids.end());
    e.types.assign(types.begin(), types.end());
    out.push_back(e);
  }
  fclose(f);
  return out;
}

// The sequence [CLS] tokens... [SEP] [PAD]... of length T.
static std::vector<int> seq_of(const std::vector<const char*>& tokens, int T) {
  std::vector<int> s = {id("[CLS]")};
  for (const char* t : tokens) s.push_back(id(t));
  s.push_back(id("[SEP]"));
  s.resize(size_t(T), id("[PAD]"));
  return s;
}

// ----------------------------------------------------------------------------
// formats.h

TEST(Formats, HeaderSizesAndRecordLayout) {
  EXPECT_EQ(sizeof(ShardHeader), 256u);
  EXPECT_EQ(sizeof(TaskHeader), 1024u);
  EXPECT_EQ(offsetof(ShardHeader, num_sequences), 16u);
  EXPECT_EQ(offsetof(ShardHeader, pad_id), 24u);
  EXPECT_EQ(offsetof(TaskHeader, num_labels), 24u);
  EXPECT_EQ(offsetof(TaskHeader, task), 32u);
  EXPECT_EQ(offsetof(TaskHeader, split), 48u);
  EXPECT_EQ(offsetof(TaskHeader, label_names), 80u);
  EXPECT_EQ(task_record_size(5), 23u);
  // Magic numbers read as text on disk.
  EXPECT_EQ(memcmp(&kShardMagic, "BGSD", 4), 0);
  EXPECT_EQ(memcmp(&kTaskMagic, "BGTK", 4), 0);
  // An odd T puts the label and index at unaligned offsets.
  const uint16_t ids[3] = {101, 7, 102};
  const uint8_t types[3] = {0, 1, 1};
  uint8_t rec[17];
  pack_task_record(rec, 3, ids, types, 2.5f, 77);
  float label;
  uint32_t index;
  memcpy(&label, rec + 9, 4);
  memcpy(&index, rec + 13, 4);
  EXPECT_EQ(label, 2.5f);
  EXPECT_EQ(index, 77u);
  EXPECT_EQ(rec[0], 101);
  EXPECT_EQ(rec[7], 1);
}

TEST_F(DataPrep, AtomicFileCommitsOrLeavesNothing) {
  std::string err;
  {
    AtomicFile f;
    ASSERT_TRUE(f.open(path("a.bin"), &err)) << err;
    fputs("partial", f.f);
  }  // destroyed without commit
  EXPECT_TRUE(list_dir(dir).empty());
  AtomicFile f;
  ASSERT_TRUE(f.open(path("a.bin"), &err)) << err;
  fputs("whole", f.f);
  ASSERT_TRUE(f.commit(&err)) << err;
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"a.bin"});
  EXPECT_EQ(read_bytes(path("a.bin")), "whole");
  AtomicFile g;
  EXPECT_FALSE(g.open(path("no/such/dir/b.bin"), &err));
  EXPECT_NE(err.find("cannot create"), std::string::npos) << err;
}

// ----------------------------------------------------------------------------
// Checksums, durable saves, write errors, one writer per directory

TEST(Formats, Crc32cKnownValues) {
  // RFC 3720 (iSCSI) appendix B.4, and the usual check value.
  uint8_t zeros[32] = {}, ones[32], up[32], down[32];
  for (int i = 0; i < 32; i++) ones[i] = 0xFF, up[i] = uint8_t(i), down[i] = uint8_t(31 - i);
  for (auto crc : {crc32c_portable, crc32c}) {
    EXPECT_EQ(crc(0, zeros, 32), 0x8A9136AAu);
    EXPECT_EQ(crc(0, ones, 32), 0x62A8AB43u);
    EXPECT_EQ(crc(0, up, 32), 0x46DD794Eu);
    EXPECT_EQ(crc(0, down, 32), 0x113FDB5Cu);
    EXPECT_EQ(crc(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(crc(0, "", 0), 0u);
  }
}

TEST(Formats, Crc32cImplementationsAgreeAndExtend) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(4096 + 16);
  for (uint8_t& b : buf) b = uint8_t(rng());
  for (size_t offset = 0; offset < 8; offset++) {  // every alignment
    for (size_t n = 0; n <= 300; n++) {
      const uint32_t want = crc32c_portable(0, buf.data() + offset, n);
      ASSERT_EQ(crc32c(0, buf.data() + offset, n), want) << "offset " << offset << " n " << n;
      const size_t cut = n / 3;  // in two pieces = in one
      ASSERT_EQ(crc32c(crc32c(0, buf.data() + offset, cut), buf.data() + offset + cut, n - cut), want);
    }
  }
  EXPECT_EQ(crc32c(0, buf.data(), 4096), crc32c_portable(0, buf.data(), 4096));
}

TEST_F(DataPrep, AtomicFileSyncsRenamesThenSyncsTheDirectory) {
  std::string err;
  const std::string real_dir = fs::canonical(dir).string();
  std::vector<std::string> log;
  AtomicFile f;
  ASSERT_TRUE(f.open(path("a.bin"), &err)) << err;
  ASSERT_TRUE(f.write("whole", 5));
  g_sync_log = &log;
  const bool ok = f.commit(&err);
  g_sync_log = nullptr;
  ASSERT_TRUE(ok) << err;
  const std::vector<std::string> want = {"fsync " + real_dir + "/a.bin.tmp",
                                         "rename " + path("a.bin.tmp") + " " + path("a.bin"), "fsync " + real_dir};
  EXPECT_EQ(log, want);
  EXPECT_EQ(f.crc(), crc32c(0, "whole", 5));
}

// Flips every bit of a version-2 file in turn; each flip must be an error
// that names the file. check(&err) reads and verifies all of file.
template <class Check>
static void expect_every_flip_found(const std::string& file, const std::string& good, Check check) {
  write_file(file, good);
  std::string err;
  ASSERT_TRUE(check(&err)) << err;
  // One byte rewritten in place: rewriting the whole file each time would
  // be slow on some file systems (truncation).
  const int fd = open(file.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  int missed = 0;
  for (size_t i = 0; i < good.size(); i++) {
    for (int b = 0; b < 8; b++) {
      const char flipped = char(good[i] ^ (1 << b));
      ASSERT_EQ(pwrite(fd, &flipped, 1, off_t(i)), 1);
      err.clear();
      const bool ok = check(&err);
      if ((ok || err.rfind(file, 0) != 0) && missed++ < 5)
        ADD_FAILURE() << "byte " << i << " bit " << b << ": " << (ok ? "accepted" : err);
      ASSERT_EQ(pwrite(fd, &good[i], 1, off_t(i)), 1);
    }
  }
  close(fd);
  EXPECT_EQ(missed, 0);
}

TEST_F(DataPrep, EveryFlippedBitOfAShardOrTaskFileIsFound) {
  write_file(path("a.txt"), numbered_documents(30));
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", dir, "--val-fraction", "0", path("a.txt")}), 0);
  const std::string file = path("f.bin");
  expect_every_flip_found(file, read_bytes(path("train_000000.bin")), [&](std::string* err) {
    FILE* f = fopen(file.c_str(), "rb");
    ShardHeader h;
    const bool ok = read_shard_header(f, file.c_str(), &h, err) &&
                    verify_payload(f, file.c_str(), sizeof h, h.payload_crc, kShardWhat, kShardFix, err);
    fclose(f);
    return ok;
  });
  ASSERT_EQ(run({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "16", "--data-dir",
                 std::string(kGlue) + "/WNLI", "--out", dir}),
            0);
  expect_every_flip_found(file, read_bytes(path("wnli_train.bin")), [&](std::string* err) {
    FILE* f = fopen(file.c_str(), "rb");
    TaskHeader h;
    const bool ok = read_task_header(f, file.c_str(), &h, err) &&
                    verify_payload(f, file.c_str(), sizeof h, h.payload_crc, kTaskWhat, kTaskFix, err);
    fclose(f);
    return ok;
  });
}

TEST_F(DataPrep, InspectVerifyChecksTheWholeFile) {
  write_file(path("a.txt"), numbered_documents(30));
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", dir, "--val-fraction", "0", path("a.txt")}), 0);
  const std::string shard = read_bytes(path("train_000000.bin"));
  std::string out, err;
  ASSERT_EQ(run_capture({"inspect", path("train_000000.bin"), "--verify"}, &out, true), 0);
  EXPECT_NE(out.find("checksums: header and contents verified"), std::string::npos) << out;
  // A flipped bit in the last sequence: only --verify reads that far. The
  // id stays a valid token, so only the checksum can tell.
  std::string flipped = shard;
  flipped[shard.size() - 14] ^= 1;  // within the last sequence's ids (T = 8)
  write_file(path("flipped.bin"), flipped);
  EXPECT_EQ(run_capture({"inspect", path("flipped.bin")}, &err), 0) << err;
  EXPECT_EQ(run_capture({"inspect", path("flipped.bin"), "--verify"}, &err), kExitError);
  EXPECT_NE(err.find(path("flipped.bin") + ": checksum mismatch: the pretraining shard's contents have CRC-32C"),
            std::string::npos)
      << err;
  // A flipped bit in the header is found by any reader.
  flipped = shard;
  flipped[20] ^= 4;  // num_sequences' high bytes
  write_file(path("flipped.bin"), flipped);
  EXPECT_EQ(run_capture({"inspect", path("flipped.bin")}, &err), kExitError);
  EXPECT_NE(err.find(path("flipped.bin") + ": the pretraining shard's header is damaged"), std::string::npos) << err;
  // Version 1 (no checksums) still reads, with a note.
  std::string v1 = shard;
  v1[4] = 1;
  memset(&v1[offsetof(ShardHeader, payload_crc)], 0, 8);
  write_file(path("v1.bin"), v1);
  ASSERT_EQ(run_capture({"inspect", path("v1.bin"), "--verify"}, &out, true), 0);
  EXPECT_NE(out.find("pretraining shard, version 1"), std::string::npos) << out;
  EXPECT_NE(out.find("is a version-1 pretraining shard, which carries no checksum, so it is read unverified "
                     "(re-run `data_prep pretrain` to rebuild it to get version 2)"),
            std::string::npos)
      << out;
  // A task file likewise.
  ASSERT_EQ(run({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "16", "--data-dir",
                 std::string(kGlue) + "/WNLI", "--out", dir}),
            0);
  ASSERT_EQ(run_capture({"inspect", path("wnli_train.bin"), "--verify"}, &out, true), 0);
  EXPECT_NE(out.find("checksums: header and contents verified"), std::string::npos) << out;
  std::string task = read_bytes(path("wnli_train.bin"));
  task[1024 + 3] ^= 0x10;
  write_file(path("task.bin"), task);
  EXPECT_EQ(run_capture({"inspect", path("task.bin"), "--verify"}, &err), kExitError);
  EXPECT_NE(err.find("the GLUE task file's contents have CRC-32C"), std::string::npos) << err;
}

// Runs data_prep in a child whose files may not grow past limit bytes (what a
// full disk looks like to a writer: the write fails, EFBIG instead of
// ENOSPC); returns its exit status and its stderr in *text.
static int run_with_file_limit(std::vector<std::string> args, rlim_t limit, const std::string& log,
                               std::string* text) {
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stderr)) _exit(99);
    signal(SIGXFSZ, SIG_IGN);  // else the kernel kills the writer; ignored, write() fails with EFBIG
    const rlimit lim = {limit, limit};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(98);
    const int rc = run(std::move(args));
    fflush(nullptr);  // _exit does not
    _exit(rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  *text = read_bytes(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(DataPrep, AFullDiskKeepsThePreviousFilesAndSaysWhy) {
  write_file(path("small.txt"), numbered_documents(30));
  write_file(path("big.txt"), numbered_documents(3000));
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"), "--val-fraction", "0",
                 path("small.txt")}),
            0);
  const std::string before = read_bytes(path("out/train_000000.bin"));
  std::string text;
  EXPECT_EQ(run_with_file_limit({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"), "--val-fraction",
                                 "0", path("big.txt")},
                                4096, path("log.txt"), &text),
            kExitError);
  EXPECT_NE(text.find("cannot write " + path("out/train_000000.bin.tmp") + ": File too large"), std::string::npos)
      << text;
  EXPECT_TRUE(read_bytes(path("out/train_000000.bin")) == before) << "the previous shard was changed";
  EXPECT_EQ(list_dir(path("out")), std::vector<std::string>{"train_000000.bin"});
  // The same for a task file.
  ASSERT_EQ(run({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "16", "--data-dir",
                 std::string(kGlue) + "/WNLI", "--out", path("glue")}),
            0);
  const std::string task = read_bytes(path("glue/wnli_train.bin"));
  EXPECT_EQ(run_with_file_limit({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "512", "--data-dir",
                                 std::string(kGlue) + "/WNLI", "--out", path("glue")},
                                2048, path("log.txt"), &text),
            kExitError);
  EXPECT_NE(text.find("cannot write " + path("glue/wnli_train.bin.tmp") + ": File too large"), std::string::npos)
      << text;
  EXPECT_TRUE(read_bytes(path("glue/wnli_train.bin")) == task) << "the previous task file was changed";
}

TEST_F(DataPrep, OneWriterPerOutputDirectory) {
  write_file(path("a.txt"), numbered_documents(30));
  ASSERT_TRUE(fs::create_directory(path("out")));
  std::string err;
  {
    DirLock held;  // another run, as far as data_prep can tell: flock is per open file
    ASSERT_TRUE(held.acquire(path("out"), &err)) << err;
    const std::vector<std::string> pretrain = {"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                                               path("a.txt")};
    EXPECT_EQ(run_capture(pretrain, &err), kExitError);
    EXPECT_NE(err.find(path("out") + " is in use by another run (pid " + std::to_string(getpid()) + ", which holds " +
                       path("out/.lock") + "); wait for it to finish or choose another output directory"),
              std::string::npos)
        << err;
    EXPECT_EQ(run_capture({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "16", "--data-dir",
                           std::string(kGlue) + "/WNLI", "--out", path("out")},
                          &err),
              kExitError);
    EXPECT_NE(err.find("is in use by another run"), std::string::npos) << err;
    EXPECT_EQ(list_dir(path("out")), std::vector<std::string>{".lock"});
  }
  // Released: the lock file is gone, and the next run goes ahead.
  EXPECT_TRUE(list_dir(path("out")).empty());
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"), path("a.txt")}), 0);
  // A lock file left by a killed run holds no lock.
  write_file(path("out/.lock"), "12345\n");
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"), path("a.txt")}), 0);
}

// ----------------------------------------------------------------------------
// GLUE: every example of every task's fixture, at T = 16 (so that most pairs
// are truncated) and, for MNLI, at T = 128.

struct Expected {
  const char* split;
  const char* a;
  const char* b;  // nullptr: single sentence
  float label;    // -1 for test splits
  uint32_t index;
};

struct TaskCase {
  const char* task;
  const char* folder;
  std::vector<std::string> label_names;
  std::vector<std::pair<const char*, size_t>> splits;  // name, examples
  std::vector<Expected> examples;
};

static std::vector<TaskCase> glue_cases() {
  return {
      {"cola", "CoLA", {"0", "1"}, {{"train", 3}, {"dev", 2}, {"test", 2}},
       {{"train", "Our friends won't buy this analysis, let alone the next one we propose.",
         nullptr, 1, 0},
        {"train", "They drank the pub.", nullptr, 0, 1},
        {"train", "The \"more\" we study verbs, the crazier they get.", nullptr, 1, 2},
        // row 3 has the unknown label 2: skipped
        {"dev", "The sailors rode the breeze clear of the rocks.", nullptr, 1, 0},
        {"dev", "The horse raced past the barn fell fell.", nullptr, 0, 1},
        {"test", "Bill whistled past the house.", nullptr, -1, 0},
        {"test", "The car honked its way down the road.", nullptr, -1, 1}}},
      {"sst2", "SST-2", {"0", "1"}, {{"train", 3}, {"dev", 1}, {"test", 2}},
       {{"train", "hide new secretions from the parental units ", nullptr, 0, 0},
        {"train", "contains no wit , only labored gags ", nullptr, 0, 1},
        {"train", "that loves its characters ", nullptr, 1, 2},
        {"dev", "it 's a charming and often affecting journey . ", nullptr, 1, 0},
        {"test", "uneasy mishmash of styles and genres .", nullptr, -1, 0},
        {"test",
         "this film 's relationship to actual tension is the same as what christmas-tree "
         "flocking in a spray can is to actual snow : a poor -- if durable -- imitation .",
         nullptr, -1, 1}}},
      {"mrpc", "MRPC", {"0", "1"}, {{"train", 2}, {"dev", 1}, {"test", 1}},
       {{"train",
         "Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
         "distorting his evidence .",
         "Referring to him as only \" the witness \" , Amrozi accused his brother of "
         "deliberately distorting his evidence .",
         1, 0},
        {"train",
         "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
         "billion .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ "
         "1.8 billion in 1998 .",
         0, 1},
        {"dev",
         "He said the foodservice pie business doesn 't fit the company 's long-term growth "
         "strategy .",
         "\" The foodservice pie business does not fit our long-term growth strategy .", 1, 0},
        {"test",
         "PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief "
         "financial officer , will report directly to Mr So .",
         "Current Chief Operating Officer Mike Butcher and Group Chief Financial Officer "
         "Alex Arena will report to So .",
         -1, 0}}},
      {"stsb", "STS-B", {"score"}, {{"train", 2}, {"dev", 2}, {"test", 1}},
       {{"train", "A plane is taking off.", "An air plane is taking off.", 5.0f, 0},
        {"train", "A man is playing a large flute.", "A man is playing a flute.", 3.8f, 1},
        // row 2 has the score n/a: skipped
        {"dev", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.",
         5.0f, 0},
        {"dev", "A young child is riding a horse.", "A child is riding a horse.", 4.75f, 1},
        {"test", "A girl is styling her hair.", "A girl is brushing her hair.", -1, 0}}},
      {"qqp", "QQP", {"0", "1"}, {{"train", 3}, {"dev", 1}, {"test", 2}},
       {{"train",
         "How is the life of a math student? Could you describe your own experiences?",
         "Which level of prepration is enough for the exam jlpt5?", 0, 0},
        {"train", "How do I control my horny emotions?", "How do you control your horniness?",
         1, 1},
        // rows 2 and 3 are one question broken over two lines: skipped
        {"train", "What are the best \"free\" apps?", "Which free apps are the best?", 1, 4},
        {"dev", "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?",
         0, 0},
        {"test", "Why do rockets look white?", "Why are rockets and boosters painted white?",
         -1, 0},
        {"test", "What's causing someone to be jealous?",
         "What can I do to avoid being jealous of someone?", -1, 1}}},
      {"mnli", "MNLI", {"entailment", "neutral", "contradiction"},
       {{"train", 4},
        {"dev_matched", 2},
        {"dev_mismatched", 1},
        {"test_matched", 1},
        {"test_mismatched", 2}},
       {{"train",
         "Conceptually cream skimming has two basic dimensions - product and geography.",
         "Product and geography are what make cream skimming work. ", 1, 0},
        {"train",
         "you know during the season and i guess at at your level uh you lose them to the "
         "next level if if they decide to recall the the parent team the Braves decide to "
         "call to recall a guy from triple A then a double A guy goes up to replace him and a "
         "single A guy goes up to replace him",
         "You lose the things to the following level if the people recall.", 0, 1},
        {"train", "One of our number will carry out your instructions minutely.",
         "A member of my team will execute your orders with immense precision.", 0, 2},
        // row 3 has the gold label "-": skipped
        {"train", "yeah i tell you what \"though\" if you go price some of those tennis shoes",
         "The tennis shoes have a range of prices.", 2, 4},
        {"dev_matched", "The new rights are nice enough",
         "Everyone really likes the newest benefits ", 1, 0},
        {"dev_matched",
         "This site includes a list of all award winners and a searchable database of "
         "Government Executive articles.",
         "The Government Executive articles housed on the website are not able to be "
         "searched.",
         2, 1},
        {"dev_mismatched",
         "Your contribution helped make it possible for us to provide our students with a "
         "quality education.",
         "Your contributions were of no help with our students' education.", 2, 0},
        {"test_matched",
         "Hierbas, ans seco, ans dulce, and frigola are just a few names worth keeping a "
         "look-out for.",
         "Hierbas is a name worth looking out for.", -1, 0},
        {"test_mismatched", "What have you decided, what are you going to do?",
         "So what's your decision?", -1, 0},
        {"test_mismatched", "Women's rights are \"human rights\".", "Nobody cares.", -1, 1}}},
      {"qnli", "QNLI", {"entailment", "not_entailment"}, {{"train", 2}, {"dev", 1}, {"test", 1}},
       {{"train", "When did the third Digimon series begin?",
         "Unlike the two seasons before it and most of the seasons that followed, Digimon "
         "Tamers takes a darker and more realistic approach to its story.",
         1, 0},
        {"train",
         "Which missile batteries often have individual launchers several kilometres from "
         "one another?",
         "When MANPADS is operated by specialists, batteries may have several dozen teams "
         "deploying separately in small sections.",
         0, 1},
        {"dev", "What came into force after the new constitution was herald?",
         "As of that day, the new constitution heralding the Second Republic came into force.",
         0, 0},
        {"test", "What organization is devoted to Jihad against Israel?",
         "For some decades prior to the First Palestine Intifada in 1987, the Muslim "
         "Brotherhood in Palestine took a \"quiescent\" stance towards Israel.",
         -1, 0}}},
      {"rte", "RTE", {"entailment", "not_entailment"}, {{"train", 2}, {"dev", 1}, {"test", 1}},
       {{"train", "No Weapons of Mass Destruction Found in Iraq Yet.",
         "Weapons of Mass Destruction Found in Iraq.", 1, 0},
        {"train", "A place of sorrow, after Pope John Paul II died, became a place of celebration.",
         "Pope Benedict XVI is the new leader of the Roman Catholic Church.", 0, 1},
        {"dev",
         "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at "
         "age 44.",
         "Christopher Reeve had an accident.", 1, 0},
        {"test",
         "Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first "
         "witness in the case.",
         "Shukla is related to Mangla.", -1, 0}}},
      {"wnli", "WNLI", {"0", "1"}, {{"train", 2}, {"dev", 1}, {"test", 1}},
       {{"train", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
         "The carrot had a hole.", 1, 0},
        {"train",
         "John couldn't see the stage with Billy in front of him because he is so short.",
         "John is so short.", 1, 1},
        {"dev", "The drain is clogged with hair. It has to be cleaned.",
         "The hair has to be cleaned.", 0, 0},
        {"test", "Maude and Dora had seen the trains rushing across the prairie.",
         "Horses ran away when Maude and Dora came into sight.", -1, 0}}},
      {"ax", "diagnostic", {"entailment", "neutral", "contradiction"}, {{"test", 2}},
       {{"test", "The cat sat on the mat.", "The cat did not sit on the mat.", -1, 0},
        {"test", "The cat did not sit on the mat.", "The cat sat on the mat.", -1, 1}}},
  };
}

static void check_task(const TaskCase& c, const std::string& out, int T) {
  SCOPED_TRACE(std::string(c.task) + " T=" + std::to_string(T));
  for (const auto& [split, count] : c.splits) {
    SCOPED_TRACE(split);
    TaskHeader h;
    const std::vector<Example> got =
        read_task(out + "/" + c.task + "_" + split + ".bin", &h);
    const bool test = std::string(split).rfind("test", 0) == 0;
    EXPECT_EQ(h.seq_len, uint32_t(T));
    EXPECT_EQ(h.vocab_size, 30522u);
    EXPECT_STREQ(h.task, c.task);
    EXPECT_STREQ(h.split, split);
    EXPECT_EQ(h.has_labels, test ? 0u : 1u);
    ASSERT_EQ(h.num_labels, c.label_names.size());
    for (size_t k = 0; k < c.label_names.size(); k++)
      EXPECT_EQ(h.label_names[k], c.label_names[k]);
    for (size_t k = c.label_names.size(); k < size_t(kMaxLabels); k++)
      EXPECT_EQ(h.label_names[k][0], '\0');
    ASSERT_EQ(got.size(), count);
    size_t i = 0;
    for (const Expected& e : c.examples) {
      if (std::string(e.split) != split) continue;
      SCOPED_TRACE("example " + std::to_string(i));
      ASSERT_LT(i, got.size());
      std::vector<int> ids, types;
      const std::string_view b = e.b ? e.b : "";
      tokenizer().encode_model_input(e.a, e.b ? &b : nullptr, T, true, &ids, &types);
      EXPECT_EQ(got[i].ids, ids);
      EXPECT_EQ(got[i].types, types);
      EXPECT_EQ(got[i].label, e.label);
      EXPECT_EQ(got[i].index, e.index);
      i++;
    }
    EXPECT_EQ(i, count);
  }
}

TEST_F(DataPrep, GlueEveryTaskEveryExample) {
  for (const TaskCase& c : glue_cases()) {
    const std::string out = path(c.task);
    ASSERT_EQ(run({"glue", "--task", c.task, "--vocab", kVocab, "--seq", "16", "--data-dir",
                   std::string(kGlue) + "/" + c.folder, "--out", out}),
              0)
        << c.task;
    check_task(c, out, 16);
    // One file per split and nothing else (no temporary files).
    EXPECT_EQ(list_dir(out).size(), c.splits.size());
  }
}

TEST_F(DataPrep, GlueMnliLongT) {
  for (const TaskCase& c : glue_cases()) {
    if (std::string(c.task) != "mnli") continue;
    ASSERT_EQ(run({"glue", "--task", "mnli", "--vocab", kVocab, "--seq", "128", "--data-dir",
                   std::string(kGlue) + "/MNLI", "--out", dir}),
              0);
    check_task(c, dir, 128);
  }
}

// The ids themselves, not only agreement with the tokenizer.
TEST_F(DataPrep, GlueLiteralIds) {
  ASSERT_EQ(run({"glue", "--task", "cola", "--vocab", kVocab, "--seq", "10", "--data-dir",
                 std::string(kGlue) + "/CoLA", "--out", dir}),
            0);
  TaskHeader h;
  const std::vector<Example> got = read_task(path("cola_test.bin"), &h);
  ASSERT_EQ(got.size(), 2u);
  // [CLS] bill whistled past the house . [SEP] [PAD] [PAD]
  EXPECT_EQ(got[0].ids, (std::vector<int>{101, 3021, 26265, 2627, 1996, 2160, 1012, 102, 0, 0}));
  EXPECT_EQ(got[0].types, std::vector<int>(10, 0));
  const std::vector<Example> ax = [&] {
    EXPECT_EQ(run({"glue", "--task", "ax", "--vocab", kVocab, "--seq", "20", "--data-dir",
                   std::string(kGlue) + "/diagnostic", "--out", dir}),
              0);
    return read_task(path("ax_test.bin"), &h);
  }();
  ASSERT_EQ(ax.size(), 2u);
  // [CLS] the cat sat on the mat . [SEP] the cat did not sit on the mat . [SEP] [PAD]
  const std::vector<int> types = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
  EXPECT_EQ(ax[0].types, types);
  EXPECT_EQ(ax[0].ids[8], 102);
  EXPECT_EQ(ax[0].ids[18], 102);
  EXPECT_EQ(ax[0].ids[19], 0);
}

TEST_F(DataPrep, GlueReportsSkippedRowsWithLineNumbers) {
  std::string out;
  ASSERT_EQ(run_capture({"glue", "--task", "qqp", "--vocab", kVocab, "--seq", "32",
                         "--data-dir", std::string(kGlue) + "/QQP", "--out", dir},
                        &out, true),
            0);
  EXPECT_NE(out.find("2 skipped"), std::string::npos) << out;
  EXPECT_NE(out.find("line 4: expected 6 fields, found 4"), std::string::npos) << out;
  EXPECT_NE(out.find("line 5: expected 6 fields, found 2"), std::string::npos) << out;
  ASSERT_EQ(run_capture({"glue", "--task", "mnli", "--vocab", kVocab, "--seq", "32",
                         "--data-dir", std::string(kGlue) + "/MNLI", "--out", dir},
                        &out, true),
            0);
  EXPECT_NE(out.find("line 5: unknown label '-'"), std::string::npos) << out;
}

TEST_F(DataPrep, GlueBadInput) {
  std::string err;
  // A directory without the task's files.
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", dir, "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("holds none of the rte files (train.tsv, dev.tsv, test.tsv)"),
            std::string::npos)
      << err;
  // A missing directory, an unknown task, a bad --seq.
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", path("nope"), "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("is not a directory"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"glue", "--task", "mnli-m", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", dir, "--out", path("out")},
                        &err),
            kExitUsage);
  EXPECT_NE(err.find("unknown --task 'mnli-m'"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "2",
                         "--data-dir", dir, "--out", path("out")},
                        &err),
            kExitUsage);
  EXPECT_NE(err.find("--seq: expected an integer in 3..65536, got '2'"), std::string::npos)
      << err;
  // The wrong file for the task: a header without the columns.
  fs::create_directory(path("wrong"));
  fs::copy_file(std::string(kGlue) + "/SST-2/train.tsv", path("wrong/train.tsv"));
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", path("wrong"), "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("lacks the column(s) 'sentence1' 'sentence2' (found: 'sentence', 'label')"), std::string::npos)
      << err;
  // An empty file; invalid UTF-8 on line 3. Neither leaves any output.
  fs::create_directory(path("rte"));
  write_file(path("rte/train.tsv"), "");
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", path("rte"), "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("train.tsv is empty"), std::string::npos) << err;
  write_file(path("rte/dev.tsv"), "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n");
  write_file(path("rte/train.tsv"),
             "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tA\xC3(\tB.\t"
             "entailment\n");
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", path("rte"), "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("train.tsv:3: invalid UTF-8 at byte 4"), std::string::npos) << err;
  EXPECT_TRUE(list_dir(path("out")).empty());
  // A blank line is not a row: the row after it keeps its number.
  write_file(path("rte/train.tsv"),
             "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n\n1\tC.\tD.\t"
             "not_entailment\n");
  ASSERT_EQ(run({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16", "--data-dir",
                 path("rte"), "--out", path("blank")}),
            0);
  TaskHeader h;
  const std::vector<Example> rows = read_task(path("blank/rte_train.bin"), &h);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].index, 1u);
  EXPECT_EQ(rows[1].label, 1.0f);
  // Only unusable rows.
  write_file(path("rte/train.tsv"), "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tyes\n");
  EXPECT_EQ(run_capture({"glue", "--task", "rte", "--vocab", kVocab, "--seq", "16",
                         "--data-dir", path("rte"), "--out", path("out")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("has no usable rows"), std::string::npos) << err;
  EXPECT_TRUE(list_dir(path("out")).empty());
}

// ----------------------------------------------------------------------------
// pretrain

TEST_F(DataPrep, PretrainPacksLinesGreedily) {
  // T = 8 leaves 6 text tokens a sequence. Each letter is one token.
  write_file(path("a.txt"),
             "a b c\n"          // 3
             "d e\n"            // 5
             "f g\n"            // 7 > 6: new sequence
             "\n"               // document break
             "h\n"              // a new document, a new sequence
             "a b c d e f g h a b c d e f\n"  // 14 > 6: pieces of 6, 6, then 2 left open
             "g\n");            // joins the open piece
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                 "--val-fraction", "0", path("a.txt")}),
            0);
  EXPECT_EQ(list_dir(path("out")), std::vector<std::string>{"train_000000.bin"});
  const Shard s = read_shard(path("out/train_000000.bin"));
  EXPECT_EQ(s.h.seq_len, 8u);
  EXPECT_EQ(s.h.pad_id, 0u);
  EXPECT_EQ(s.h.cls_id, 101u);
  EXPECT_EQ(s.h.sep_id, 102u);
  EXPECT_EQ(s.h.mask_id, 103u);
  EXPECT_EQ(s.h.unk_id, 100u);
  const std::vector<std::vector<int>> want = {
      seq_of({"a", "b", "c", "d", "e"}, 8),
      seq_of({"f", "g"}, 8),
      seq_of({"h"}, 8),
      seq_of({"a", "b", "c", "d", "e", "f"}, 8),
      seq_of({"g", "h", "a", "b", "c", "d"}, 8),
      seq_of({"e", "f", "g"}, 8),
  };
  EXPECT_EQ(s.seqs, want);
  // File size = header + N T uint16.
  EXPECT_EQ(fs::file_size(path("out/train_000000.bin")), 256u + 6 * 8 * 2);
}

TEST_F(DataPrep, PretrainDocumentsNeverShareASequence) {
  // Files, blank lines and whitespace-only lines all end a document; CRLF is fine.
  write_file(path("a.txt"), "a\r\n\r\nb\n \t \nc\n\n\n\nd\n");
  write_file(path("b.txt"), "e\nf");
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "16", "--out", path("out"),
                 "--val-fraction", "0", path("a.txt"), path("b.txt")}),
            0);
  const Shard s = read_shard(path("out/train_000000.bin"));
  const std::vector<std::vector<int>> want = {seq_of({"a"}, 16), seq_of({"b"}, 16),
                                              seq_of({"c"}, 16), seq_of({"d"}, 16),
                                              seq_of({"e", "f"}, 16)};
  EXPECT_EQ(s.seqs, want);
}

TEST_F(DataPrep, PretrainShardsRollOverAndStaleShardsGo) {
  std::string text;
  for (int i = 0; i < 7; i++) text += "a b\n\n";
  write_file(path("a.txt"), text);
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                 "--val-fraction", "0", "--shard-sequences", "3", path("a.txt")}),
            0);
  EXPECT_EQ(list_dir(path("out")),
            (std::vector<std::string>{"train_000000.bin", "train_000001.bin",
                                      "train_000002.bin"}));
  EXPECT_EQ(read_shard(path("out/train_000001.bin")).h.num_sequences, 3u);
  EXPECT_EQ(read_shard(path("out/train_000002.bin")).h.num_sequences, 1u);
  // A second run into the same directory replaces the whole set.
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                 "--val-fraction", "0", path("a.txt")}),
            0);
  EXPECT_EQ(list_dir(path("out")), std::vector<std::string>{"train_000000.bin"});
  EXPECT_EQ(read_shard(path("out/train_000000.bin")).h.num_sequences, 7u);
}

TEST_F(DataPrep, PretrainSplitsByDocumentHash) {
  const int n = 400;
  write_file(path("a.txt"), numbered_documents(n));
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                 "--val-fraction", "0.1", "--seed", "7", path("a.txt")}),
            0);
  const Shard train = read_shard(path("out/train_000000.bin"));
  const Shard val = read_shard(path("out/val_000000.bin"));
  // Each document is one sequence; recompute the expected split.
  std::vector<std::vector<int>> want_train, want_val;
  const std::string text = numbered_documents(n);
  size_t pos = 0;
  for (int i = 0; i < n; i++) {
    const size_t end = text.find('\n', pos);
    std::vector<int> ids = {id("[CLS]")};
    tokenizer().encode(std::string_view(text).substr(pos, end - pos), &ids);
    ids.push_back(id("[SEP]"));
    ids.resize(8, id("[PAD]"));
    // The rule of start_document(): the hash, and document 1 when 0 did not go.
    const bool to_val = document_hash(7, uint64_t(i)) < 0.1 || (i == 1 && want_val.empty());
    (to_val ? want_val : want_train).push_back(ids);
    pos = end + 2;
  }
  EXPECT_EQ(train.seqs, want_train);
  EXPECT_EQ(val.seqs, want_val);
  EXPECT_GT(want_val.size(), 20u);  // about 40 of 400
  EXPECT_LT(want_val.size(), 65u);
}

TEST_F(DataPrep, PretrainSmallCorpusStillGetsAValDocument) {
  // Find a seed whose hashes put neither of two documents into val.
  long long seed = 0;
  while (document_hash(uint64_t(seed), 0) < 0.01 || document_hash(uint64_t(seed), 1) < 0.01)
    seed++;
  write_file(path("a.txt"), "a\n\nb\n");
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"), "--seed",
                 std::to_string(seed), path("a.txt")}),
            0);
  EXPECT_EQ(read_shard(path("out/train_000000.bin")).seqs,
            std::vector<std::vector<int>>{seq_of({"a"}, 8)});
  EXPECT_EQ(read_shard(path("out/val_000000.bin")).seqs,
            std::vector<std::vector<int>>{seq_of({"b"}, 8)});
  // One document: all of it trains, and no val shard is written.
  write_file(path("b.txt"), "a\nb\n");
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out2"),
                 path("b.txt")}),
            0);
  EXPECT_EQ(list_dir(path("out2")), std::vector<std::string>{"train_000000.bin"});
}

TEST_F(DataPrep, PretrainIsDeterministicAcrossThreadCounts) {
  // About 3 MB, so that the input spans several batches and threads.
  std::string text;
  const std::string words[] = {"The quick brown fox jumps over the lazy dog.",
                               "Pack my box with five dozen liquor jugs!",
                               "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
                               "Sphinx of black quartz, judge my vow; 1234567890."};
  for (int i = 0; text.size() < 3000000; i++) {
    text += words[i % 4];
    if (i % 7 == 0) text += " " + words[(i / 7) % 4] + " " + words[(i / 3) % 4];
    text += i % 11 == 10 ? "\n\n" : "\n";
  }
  write_file(path("a.txt"), text);
  for (const char* t : {"1", "2", "3"})
    ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "64", "--out", path(t), "--threads",
                   t, "--shard-sequences", "5000", "--seed", "5", path("a.txt")}),
              0);
  const std::vector<std::string> names = list_dir(path("1"));
  EXPECT_GE(names.size(), 3u);  // two train shards and a val shard at least
  EXPECT_EQ(list_dir(path("2")), names);
  EXPECT_EQ(list_dir(path("3")), names);
  for (const std::string& name : names) {
    const std::string one = read_bytes(path("1/" + name));
    EXPECT_TRUE(one == read_bytes(path("2/" + name))) << name;
    EXPECT_TRUE(one == read_bytes(path("3/" + name))) << name;
  }
  // Another seed gives another split.
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "64", "--out", path("s"),
                 "--shard-sequences", "5000", "--seed", "6", path("a.txt")}),
            0);
  EXPECT_FALSE(read_bytes(path("1/val_000000.bin")) == read_bytes(path("s/val_000000.bin")));
}

TEST_F(DataPrep, PretrainReadsGzip) {
  write_file(path("a.txt"), numbered_documents(50));
  ASSERT_EQ(system(("gzip -c " + path("a.txt") + " > " + path("b.txt.gz")).c_str()), 0);
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("plain"),
                 path("a.txt")}),
            0);
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("gz"),
                 path("b.txt.gz")}),
            0);
  EXPECT_TRUE(read_bytes(path("plain/train_000000.bin")) == read_bytes(path("gz/train_000000.bin")));
  // A damaged .gz is an error, and leaves nothing.
  write_file(path("c.txt.gz"), "this is not gzip data\n");
  std::string err;
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("bad"),
                         path("c.txt.gz")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("`gzip -dc` failed on"), std::string::npos) << err;
  EXPECT_TRUE(list_dir(path("bad")).empty());
}

TEST_F(DataPrep, PretrainBadInput) {
  std::string err;
  write_file(path("ok.txt"), "a b c\n");
  // A missing file, an empty file, a directory.
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         path("ok.txt"), path("missing.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("missing.txt: No such file or directory"), std::string::npos) << err;
  write_file(path("empty.txt"), "");
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         path("empty.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("empty.txt: is empty"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         dir},
                        &err),
            kExitError);
  EXPECT_NE(err.find("is a directory"), std::string::npos) << err;
  // Only blank lines: nothing to train on.
  write_file(path("blank.txt"), "\n  \n\n");
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         path("blank.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("no training sequences"), std::string::npos) << err;
  // A missing vocabulary.
  EXPECT_EQ(run_capture({"pretrain", "--vocab", path("nope.txt"), "--seq", "8", "--out",
                         path("out"), path("ok.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("nope.txt"), std::string::npos) << err;
  // Invalid UTF-8 in the second file, after the first filled shards: no
  // shard and no temporary file is left.
  std::string good;
  for (int i = 0; i < 100; i++) good += "a b c d\n\n";
  write_file(path("good.txt"), good);
  write_file(path("bad.txt"), "fine\nstill fine\nbad \xFF byte\n");
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         "--shard-sequences", "10", path("good.txt"), path("bad.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("bad.txt:3: invalid UTF-8 at byte 5"), std::string::npos) << err;
  EXPECT_TRUE(list_dir(path("out")).empty());
  // Usage errors.
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out")},
                        &err),
            kExitUsage);
  EXPECT_NE(err.find("missing input FILE"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"pretrain", "--seq", "8", path("ok.txt")}, &err), kExitUsage);
  EXPECT_NE(err.find("missing --vocab --out"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         "--val-fraction", "1", path("ok.txt")},
                        &err),
            kExitUsage);
  EXPECT_NE(err.find("--val-fraction: expected a number in [0, 0.9], got '1'"), std::string::npos)
      << err;
  EXPECT_EQ(run_capture({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", path("out"),
                         "--threads", "two", path("ok.txt")},
                        &err),
            kExitUsage);
  EXPECT_NE(err.find("--threads: expected an integer in 1..256, got 'two'"), std::string::npos)
      << err;
  EXPECT_EQ(run_capture({"pretrain", "--help"}, &err, true), 0);
  EXPECT_NE(err.find("--shard-sequences X"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"glue", "--help"}, &err, true), 0);
  EXPECT_NE(err.find("--data-dir X"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"inspect", "--help"}, &err, true), 0);
  EXPECT_NE(err.find("--n X"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"frobnicate"}, &err), kExitUsage);
  EXPECT_NE(err.find("unknown command 'frobnicate'"), std::string::npos) << err;
}

// ----------------------------------------------------------------------------
// inspect

TEST_F(DataPrep, InspectRoundTrip) {
  write_file(path("a.txt"), "Hello, world!\nSecond line.\n\nAnother document.\n");
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "16", "--out", path("out"),
                 "--val-fraction", "0", path("a.txt")}),
            0);
  std::string out;
  ASSERT_EQ(run_capture({"inspect", path("out/train_000000.bin"), "--vocab", kVocab, "--n",
                         "5"},
                        &out, true),
            0);
  EXPECT_NE(out.find("pretraining shard, version 3"), std::string::npos) << out;
  EXPECT_NE(out.find("num_sequences 2"), std::string::npos) << out;
  EXPECT_NE(out.find("[0] [CLS] hello , world ! second line . [SEP] (+7 [PAD])"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("[1] [CLS] another document . [SEP] (+11 [PAD])"), std::string::npos)
      << out;

  ASSERT_EQ(run({"glue", "--task", "stsb", "--vocab", kVocab, "--seq", "32", "--data-dir",
                 std::string(kGlue) + "/STS-B", "--out", dir}),
            0);
  ASSERT_EQ(run_capture({"inspect", path("stsb_train.bin"), "--vocab", kVocab}, &out, true), 0);
  EXPECT_NE(out.find("task stsb, split train, seq_len 32"), std::string::npos) << out;
  EXPECT_NE(out.find("[1] index 1, label 3.8\n"
                     "    a: [CLS] a man is playing a large flute . [SEP]\n"
                     "    b: a man is playing a flute . [SEP]"),
            std::string::npos)
      << out;
  ASSERT_EQ(run({"glue", "--task", "mnli", "--vocab", kVocab, "--seq", "64", "--data-dir",
                 std::string(kGlue) + "/MNLI", "--out", dir}),
            0);
  ASSERT_EQ(run_capture({"inspect", path("mnli_dev_matched.bin"), "--vocab", kVocab}, &out,
                        true),
            0);
  EXPECT_NE(out.find("[1] index 1, label 2 (contradiction)"), std::string::npos) << out;
  ASSERT_EQ(run_capture({"inspect", path("mnli_test_matched.bin")}, &out, true), 0);
  EXPECT_NE(out.find("[0] index 0, label none\n    a: 101 "), std::string::npos) << out;
}

TEST_F(DataPrep, InspectRejectsBadFiles) {
  write_file(path("a.txt"), numbered_documents(30));
  ASSERT_EQ(run({"pretrain", "--vocab", kVocab, "--seq", "8", "--out", dir, "--val-fraction",
                 "0", path("a.txt")}),
            0);
  const std::string shard = read_bytes(path("train_000000.bin"));
  std::string err;
  // Truncated by one byte.
  write_file(path("cut.bin"), shard.substr(0, shard.size() - 1));
  EXPECT_EQ(run_capture({"inspect", path("cut.bin")}, &err), kExitError);
  EXPECT_NE(err.find("the file is truncated or damaged, re-run `data_prep pretrain`"),
            std::string::npos)
      << err;
  // Shorter than its header.
  write_file(path("short.bin"), shard.substr(0, 100));
  EXPECT_EQ(run_capture({"inspect", path("short.bin")}, &err), kExitError);
  EXPECT_NE(err.find("shorter than its 256-byte header"), std::string::npos) << err;
  // A foreign file.
  EXPECT_EQ(run_capture({"inspect", kVocab}, &err), kExitError);
  EXPECT_NE(err.find("not a bigs data file"), std::string::npos) << err;
  write_file(path("tiny.bin"), "BG");
  EXPECT_EQ(run_capture({"inspect", path("tiny.bin")}, &err), kExitError);
  EXPECT_NE(err.find("shorter than 4 bytes"), std::string::npos) << err;
  // A later version.
  std::string v3 = shard;
  v3[4] = 4;
  write_file(path("v3.bin"), v3);
  EXPECT_EQ(run_capture({"inspect", path("v3.bin")}, &err), kExitError);
  EXPECT_NE(err.find("pretraining shard version 4, this build reads versions 1 to 3"),
            std::string::npos)
      << err;
  // Another vocabulary.
  write_file(path("small_vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n");
  EXPECT_EQ(run_capture({"inspect", path("train_000000.bin"), "--vocab",
                         path("small_vocab.txt")},
                        &err),
            kExitError);
  EXPECT_NE(err.find("made with a vocabulary of 30522 tokens, but this vocabulary has 7"),
            std::string::npos)
      << err;
  // A bad id inside a well-sized file.
  std::string bad_id = shard;
  bad_id[256 + 2] = char(0xFF), bad_id[256 + 3] = char(0xFF);
  write_file(path("bad_id.bin"), bad_id);
  EXPECT_EQ(run_capture({"inspect", path("bad_id.bin"), "--verify"}, &err), kExitError);
  EXPECT_NE(err.find("1 malformed sequence(s)"), std::string::npos) << err;
  // A task file given with the wrong size, and a missing file.
  ASSERT_EQ(run({"glue", "--task", "wnli", "--vocab", kVocab, "--seq", "16", "--data-dir",
                 std::string(kGlue) + "/WNLI", "--out", dir}),
            0);
  const std::string task = read_bytes(path("wnli_train.bin"));
  write_file(path("task_long.bin"), task + "x");
  EXPECT_EQ(run_capture({"inspect", path("task_long.bin")}, &err), kExitError);
  EXPECT_NE(err.find("GLUE task file is " + std::to_string(task.size() + 1) + " bytes"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("re-run `data_prep glue`"), std::string::npos) << err;
  EXPECT_EQ(run_capture({"inspect", path("none.bin")}, &err), kExitError);
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
}
