// Crash safety of `bigs pretrain` (the CPU-only build, build/bigs_cpu): runs
// killed with SIGKILL at twenty moments (half of them inside a save) resume
// to the very bytes of an uninterrupted run; a full disk during a save keeps
// the previous checkpoint; a second run into the same --out is refused; bad
// data found mid-run (an id >= V in a shard, a flipped bit, a non-finite
// parameter) stops the run with the file and the position, before any
// update. A tiny model on a tiny vocabulary keeps the whole suite to seconds.
#define BIGS_NO_MAIN
#include "bigs.cu"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "test/util.h"

using namespace bigs;
namespace fs = std::filesystem;

namespace {

const std::string kDir = "build/test_crash_tmp";

std::string path(const std::string& name) { return kDir + "/" + name; }

// The pretrain command line for the run in OUT (a directory under kDir).
std::vector<std::string> pretrain_args(const std::string& out, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a = {"./build/bigs_cpu", "pretrain", "--train", path("shards/train_*.bin"), "--config",
                                path("tiny.cfg"), "--batch", "4", "--micro-batch", "2", "--steps", "200",
                                "--warmup", "5", "--log-every", "1", "--save-every", "3", "--eval-every", "0",
                                "--threads", "1", "--seed", "3", "--out", path(out)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Starts a command with its output in log; a file-size limit (0: none) makes
// every write past it fail with EFBIG, as a full disk fails with ENOSPC.
pid_t spawn(const std::vector<std::string>& args, const std::string& log, rlim_t file_limit = 0) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (file_limit) {
      signal(SIGXFSZ, SIG_IGN);  // else the kernel kills the writer; ignored (and kept by exec), write fails
      const rlimit lim = {file_limit, file_limit};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for pid; returns its exit status, or 128 + the signal that ended it.
int wait_for(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int run_to_end(const std::vector<std::string>& args, const std::string& log, rlim_t file_limit = 0) {
  return wait_for(spawn(args, log, file_limit));
}

bool exists(const std::string& p) { return fs::exists(p); }

// Any NAME.tmp in dir: a save that was under way.
bool has_tmp(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

// Waits (at most timeout_ms) for the n-th file created in dir whose name ends
// in ".tmp": the start of a save. Returns false on time-out.
bool wait_for_nth_tmp(int fd, int n, int timeout_ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  alignas(inotify_event) char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    const ssize_t len = read(fd, buf, sizeof buf);
    if (len <= 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    for (ssize_t i = 0; i < len;) {
      const inotify_event* e = reinterpret_cast<const inotify_event*>(buf + i);
      const std::string name = e->len ? e->name : "";
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 && --n == 0) return true;
      i += sizeof(inotify_event) + e->len;
    }
  }
  return false;
}

}  // namespace

class Crash : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string out;
    ASSERT_EQ(run("rm -rf " + kDir + " && mkdir -p " + kDir, &out), 0) << out;
    // A vocabulary of 5 special tokens and 40 words, and 300 documents of them.
    std::ofstream vocab(path("vocab.txt"));
    vocab << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
    for (int w = 0; w < 40; w++) vocab << "w" << char('a' + w / 26) << char('a' + w % 26) << "\n";
    vocab.close();
    std::ofstream text(path("text.txt"));
    std::mt19937 rng(11);
    for (int d = 0; d < 300; d++) {
      const int words = 3 + int(rng() % 20);
      for (int i = 0; i < words; i++) text << "w" << char('a' + (rng() % 40) / 26) << char('a' + (rng() % 40) % 26) << " ";
      text << "\n\n";
    }
    text.close();
    ASSERT_EQ(run("./data_prep pretrain --vocab " + path("vocab.txt") + " --seq 16 --val-fraction 0 --shard-sequences 64" +
                      " --out " + path("shards") + " " + path("text.txt"),
                  &out),
              0)
        << out;
    std::ofstream(path("tiny.cfg")) << "# a model for the crash tests\nH 8\nI 8\nL 1\nN 2\n";
    // The run every other one must match, byte for byte.
    ASSERT_EQ(run_to_end(pretrain_args("ref"), path("ref.log")), 0) << slurp(path("ref.log"));
  }
};

TEST_F(Crash, KilledTwentyTimesResumesToTheSameBytes) {
  const std::string out = path("killed");
  fs::create_directories(out);
  const int inotify = inotify_init1(IN_NONBLOCK);
  ASSERT_GE(inotify, 0);
  ASSERT_GE(inotify_add_watch(inotify, out.c_str(), IN_CREATE), 0);
  // How long a whole run takes here, to spread the kills over.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_to_end(pretrain_args("timing"), path("timing.log")), 0);
  const double run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::mt19937 rng(2024);
  int kills = 0, inside_save = 0;
  for (int attempt = 0; kills < 20 && attempt < 60; attempt++) {
    const bool resume = exists(out + "/state.bin");
    char drain[4096];
    while (read(inotify, drain, sizeof drain) > 0) {
    }
    const pid_t pid =
        spawn(pretrain_args("killed", resume ? std::vector<std::string>{"--resume", out + "/state.bin"}
                                             : std::vector<std::string>{}),
              path("killed.log"));
    if (attempt % 2 == 0) {
      // Anywhere: start-up, a step, a save; within the first 5% of a run
      // (10 steps), so that twenty kills leave steps to do.
      const double ms = std::uniform_real_distribution<>(0, 0.05)(rng) * run_ms;
      std::this_thread::sleep_for(std::chrono::microseconds(int64_t(ms * 1000)));
    } else {
      // Inside a save: once the first, second or third temporary file appears
      // (state.bin.tmp, model.bin.tmp, then the next save's), 0 to 100 us later.
      ASSERT_TRUE(wait_for_nth_tmp(inotify, 1 + int(rng() % 3), 30000)) << slurp(path("killed.log"));
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100));
    }
    kill(pid, SIGKILL);
    const int rc = wait_for(pid);
    if (rc == 0) break;  // it finished first
    ASSERT_EQ(rc, 128 + SIGKILL) << slurp(path("killed.log"));
    kills++;
    inside_save += has_tmp(out);
    // Whatever the moment, the checkpoints under their final names are whole.
    for (const char* name : {"state.bin", "model.bin"}) {
      if (!exists(out + "/" + name)) continue;
      CkptHeader h;
      std::vector<float> data;
      std::string err;
      EXPECT_TRUE(checkpoint_read(out + "/" + name, &h, &data, &err)) << "after kill " << kills << ": " << err;
    }
  }
  EXPECT_EQ(kills, 20) << "the run finished before it was killed 20 times";
  EXPECT_GE(inside_save, 5) << "too few kills landed inside a save (half of them aim there)";
  const bool resume = exists(out + "/state.bin");
  ASSERT_EQ(run_to_end(pretrain_args("killed", resume ? std::vector<std::string>{"--resume", out + "/state.bin"}
                                                      : std::vector<std::string>{}),
                       path("killed.log")),
            0)
      << slurp(path("killed.log"));
  close(inotify);
  EXPECT_TRUE(slurp(out + "/model.bin") == slurp(path("ref/model.bin"))) << "final parameters differ";
  EXPECT_TRUE(slurp(out + "/state.bin") == slurp(path("ref/state.bin"))) << "final training state differs";
  // The log holds each step's loss once, as the uninterrupted run's does (%.17g: the exact double).
  EXPECT_EQ(slurp(out + "/log.jsonl"), slurp(path("ref/log.jsonl")));
  printf("%d kills (%d inside a save); a whole run takes %.0f ms\n", kills, inside_save, run_ms);
}

TEST_F(Crash, AFullDiskDuringASaveKeepsThePreviousCheckpoint) {
  const std::string out = path("full");
  ASSERT_EQ(run_to_end(pretrain_args("full", {"--steps", "6"}), path("full.log")), 0) << slurp(path("full.log"));
  const std::string state = slurp(out + "/state.bin"), model = slurp(out + "/model.bin");
  // Room for model.bin but not for state.bin (three times its size).
  const rlim_t limit = model.size() + 1024;
  ASSERT_LT(limit, state.size());
  const int rc = run_to_end(pretrain_args("full", {"--steps", "12", "--resume", out + "/state.bin"}), path("full.log"),
                            limit);
  const std::string log = slurp(path("full.log"));
  EXPECT_EQ(rc, 1) << log;
  EXPECT_NE(log.find("cannot write " + out + "/state.bin.tmp: File too large"), std::string::npos) << log;
  EXPECT_NE(log.find(out + "/state.bin still holds step 6"), std::string::npos) << log;
  EXPECT_EQ(log.find("step 10/"), std::string::npos) << "it trained on after the failed save:\n" << log;
  EXPECT_TRUE(slurp(out + "/state.bin") == state) << "the previous state.bin was changed";
  EXPECT_TRUE(slurp(out + "/model.bin") == model) << "the previous model.bin was changed";
  EXPECT_FALSE(has_tmp(out)) << "a temporary file was left behind";
}

TEST_F(Crash, ASecondRunIntoTheSameOutIsRefused) {
  const std::string out = path("twice");
  const pid_t first = spawn(pretrain_args("twice", {"--steps", "1000000"}), path("first.log"));
  for (int i = 0; i < 300 && slurp(path("first.log")).find("step 1/") == std::string::npos; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NE(slurp(path("first.log")).find("step 1/"), std::string::npos) << slurp(path("first.log"));
  const int rc = run_to_end(pretrain_args("twice"), path("second.log"));
  const std::string log = slurp(path("second.log"));
  EXPECT_EQ(rc, 1) << log;
  EXPECT_NE(log.find(out + " is in use by another run (pid " + std::to_string(first) + ", which holds " + out +
                     "/.lock)"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("step 1/"), std::string::npos) << "the second run trained:\n" << log;
  kill(first, SIGINT);
  EXPECT_EQ(wait_for(first), 130) << slurp(path("first.log"));
  // The first run saved on its way out; the next run goes ahead.
  EXPECT_EQ(run_to_end(pretrain_args("twice", {"--resume", out + "/state.bin", "--stop-at", "1"}), path("third.log")),
            0)
      << slurp(path("third.log"));
}

// Rewrites a shard with the id at (sequence, position) replaced, and its
// checksums recomputed: a file that passes the checksum but holds a bad id.
static void write_shard_with_id(const std::string& from, const std::string& to, uint64_t seq, int pos, uint16_t id) {
  std::string b = slurp(from);
  ShardHeader h;
  memcpy(&h, b.data(), sizeof h);
  memcpy(&b[sizeof h + (seq * h.seq_len + pos) * 2], &id, 2);
  seal_header(&h, crc32c(0, b.data() + sizeof h, b.size() - sizeof h));
  memcpy(&b[0], &h, sizeof h);
  std::ofstream(to, std::ios::binary) << b;
}

TEST_F(Crash, AnIdOutsideTheVocabularyStopsTheRunBeforeAnyUpdate) {
  fs::create_directories(path("badid"));
  for (const auto& e : fs::directory_iterator(path("shards")))
    fs::copy_file(e.path(), path("badid/") + e.path().filename().string(), fs::copy_options::overwrite_existing);
  const std::string shard = path("badid/train_000002.bin");
  write_shard_with_id(path("shards/train_000002.bin"), shard, 5, 7, 45);  // V = 45
  std::vector<std::string> args = pretrain_args("badrun", {"--save-every", "1"});
  args[3] = path("badid/train_*.bin");
  const int rc = run_to_end(args, path("badrun.log"));
  const std::string log = slurp(path("badrun.log"));
  EXPECT_EQ(rc, 1) << log;
  EXPECT_NE(log.find(shard + ": sequence 5 has the id 45 at position 7, but the vocabulary has 45 tokens"),
            std::string::npos)
      << log;
  // It stopped while reading a batch: every step it logged was saved, none used the bad sequence.
  CkptHeader h;
  std::vector<float> data;
  std::string err;
  ASSERT_TRUE(checkpoint_read(path("badrun/state.bin"), &h, &data, &err)) << err;
  const std::string jl = slurp(path("badrun/log.jsonl"));
  EXPECT_EQ((uint64_t)std::count(jl.begin(), jl.end(), '\n'), h.step) << jl;
  EXPECT_LT(h.step, 200u);
}

TEST_F(Crash, AFlippedBitInAShardIsFoundBeforeTraining) {
  fs::create_directories(path("flip"));
  fs::copy_file(path("shards/train_000000.bin"), path("flip/train_000000.bin"), fs::copy_options::overwrite_existing);
  std::string b = slurp(path("flip/train_000000.bin"));
  b[b.size() - 3] ^= 0x01;  // an id of the last sequence, still < V
  std::ofstream(path("flip/train_000000.bin"), std::ios::binary) << b;
  std::vector<std::string> args = pretrain_args("fliprun");
  args[3] = path("flip/train_*.bin");
  const int rc = run_to_end(args, path("fliprun.log"));
  const std::string log = slurp(path("fliprun.log"));
  EXPECT_EQ(rc, 1) << log;
  EXPECT_NE(log.find(path("flip/train_000000.bin") + ": checksum mismatch"), std::string::npos) << log;
  EXPECT_EQ(log.find("step 1/"), std::string::npos) << "it trained on the damaged shard:\n" << log;
}

TEST_F(Crash, ADamagedOrNonFiniteCheckpointIsRefused) {
  const std::string good = slurp(path("ref/state.bin"));
  CkptHeader h;
  memcpy(&h, good.data(), sizeof h);
  ASSERT_EQ(h.version, kCkptVersion);
  auto resume_from = [&](const std::string& bytes, std::string* log) {
    std::ofstream(path("ck.bin"), std::ios::binary) << bytes;
    const int rc = run_to_end(pretrain_args("ckrun", {"--resume", path("ck.bin"), "--stop-at", "201"}), path("ck.log"));
    *log = slurp(path("ck.log"));
    return rc;
  };
  std::string log;
  // A flipped bit in the moments, far from the parameters.
  std::string flipped = good;
  flipped[flipped.size() - 5] ^= 0x20;
  EXPECT_EQ(resume_from(flipped, &log), 1);
  EXPECT_NE(log.find(path("ck.bin") + ": checksum mismatch"), std::string::npos) << log;
  // A NaN written with a valid checksum (a run that diverged, a converter's bug).
  std::string nan = good;
  const std::vector<TensorInfo> table = param_table(ckpt_config(h));
  const TensorInfo& t = *std::find_if(table.begin(), table.end(), [](const TensorInfo& x) { return !strcmp(x.name, "dv_w"); });
  const float bad = std::nanf("");
  memcpy(&nan[sizeof h + (t.offset + 3) * 4], &bad, 4);
  seal_header(&h, crc32c(0, nan.data() + sizeof h, nan.size() - sizeof h));
  memcpy(&nan[0], &h, sizeof h);
  EXPECT_EQ(resume_from(nan, &log), 1);
  EXPECT_NE(log.find(path("ck.bin") + ": parameter dv_w[3] is nan"), std::string::npos) << log;
  // Version 1 (no checksums) still loads, with a note.
  std::string v1 = good;
  CkptHeader h1;
  memcpy(&h1, good.data(), sizeof h1);
  h1.version = 1, h1.payload_crc = 0, h1.header_crc = 0;
  memcpy(&v1[0], &h1, sizeof h1);
  EXPECT_EQ(resume_from(v1, &log), 0) << log;
  EXPECT_NE(log.find("note: " + path("ck.bin") + " is a version-1 bigs checkpoint, which carries no checksum"),
            std::string::npos)
      << log;
}

// ---------------------------------------------------------------------------
// Fine-tuning's inputs, output folders, resume and checkpoints that
// know their task. Task files are written here with formats.h (V = 45, T = 16,
// the crash vocabulary), the model is the reference run's model.bin.

namespace {

uint32_t crash_vocab_hash() {
  Tokenizer tok;
  std::string err;
  if (!tok.load(path("vocab.txt"), &err)) return 0;
  return vocab_hash_of(size_t(tok.vocab_size()), [&](size_t i) -> const std::string& { return tok.token(int(i)); });
}

// A task file of n examples: [CLS] w... [SEP] [PAD]...; the label is the
// parity of the first word (learnable), -1 without labels.
void write_task(const std::string& p, const char* task, const char* split, int T, int n, bool labels,
                uint32_t vocab_hash, uint32_t seed) {
  TaskHeader h = {};
  h.magic = kTaskMagic, h.version = kTaskVersion, h.seq_len = T, h.vocab_size = 45, h.num_examples = n;
  h.num_labels = 2, h.has_labels = labels, h.vocab_hash = vocab_hash;
  snprintf(h.task, sizeof h.task, "%s", task);
  snprintf(h.split, sizeof h.split, "%s", split);
  snprintf(h.label_names[0], 32, "0");
  snprintf(h.label_names[1], 32, "1");
  std::mt19937 rng(seed);
  std::string body;
  std::vector<uint8_t> rec(task_record_size(T));
  for (int i = 0; i < n; i++) {
    std::vector<uint16_t> ids(T, 0);
    std::vector<uint8_t> types(T, 0);
    const int words = 2 + int(rng() % (T - 3));
    ids[0] = 2;
    for (int k = 1; k <= words; k++) ids[k] = uint16_t(5 + rng() % 40);
    ids[words + 1] = 3;
    pack_task_record(rec.data(), T, ids.data(), types.data(), labels ? float(ids[1] % 2) : -1.0f, uint32_t(i));
    body.append((const char*)rec.data(), rec.size());
  }
  seal_header(&h, crc32c(0, body.data(), body.size()));
  std::ofstream f(p, std::ios::binary);
  f.write((const char*)&h, sizeof h);
  f << body;
}

std::vector<std::string> finetune_args(const std::string& out, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a = {"./build/bigs_cpu", "finetune", "--task", "sst2", "--init", path("ref/model.bin"),
                                "--train", path("task/sst2_train.bin"), "--dev", path("task/sst2_dev.bin"),
                                "--epochs", "3", "--batch", "4", "--micro-batch", "2", "--lr", "1e-3",
                                "--eval-every", "5", "--save-every", "2", "--log-every", "1", "--threads", "1",
                                "--out", path(out)};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

bool has(const std::string& log, const std::string& what) { return log.find(what) != std::string::npos; }

// Waits (generously: only against a hang) until the file holds what.
bool wait_for_text(const std::string& file, const std::string& what) {
  for (int i = 0; i < 3000; i++) {
    if (has(slurp(file), what)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void make_tasks() {
  if (exists(path("task/sst2_train.bin"))) return;
  fs::create_directories(path("task"));
  const uint32_t vh = crash_vocab_hash();
  write_task(path("task/sst2_train.bin"), "sst2", "train", 16, 48, true, vh, 1);
  write_task(path("task/sst2_dev.bin"), "sst2", "dev", 16, 12, true, vh, 2);
  write_task(path("task/sst2_test.bin"), "sst2", "test", 16, 12, false, vh, 3);
  write_task(path("task/sst2_dev_t12.bin"), "sst2", "dev", 12, 12, true, vh, 2);
  write_task(path("task/sst2_dev_empty.bin"), "sst2", "dev", 16, 0, true, vh, 2);
  write_task(path("task/sst2_dev_othervocab.bin"), "sst2", "dev", 16, 12, true, vh ^ 0x5A5A, 2);
  write_task(path("task/qnli_test.bin"), "qnli", "test", 16, 12, false, vh, 3);
}

}  // namespace

// Item 4: finetune --resume continues bit for bit, however it was killed.
TEST_F(Crash, FinetuneKilledResumesToTheSameBytes) {
  make_tasks();
  ASSERT_EQ(run_to_end(finetune_args("ftref"), path("ftref.log")), 0) << slurp(path("ftref.log"));
  const std::string out = path("ftkilled");
  fs::create_directories(out);
  const int inotify = inotify_init1(IN_NONBLOCK);
  ASSERT_GE(inotify, 0);
  ASSERT_GE(inotify_add_watch(inotify, out.c_str(), IN_CREATE), 0);
  std::mt19937 rng(23);
  int kills = 0, inside_save = 0;
  for (int attempt = 0; kills < 12 && attempt < 40; attempt++) {
    const bool resume = exists(out + "/state.bin");
    char drain[4096];
    while (read(inotify, drain, sizeof drain) > 0) {
    }
    const pid_t pid = spawn(finetune_args("ftkilled", resume ? std::vector<std::string>{"--resume", out + "/state.bin"}
                                                             : std::vector<std::string>{"--overwrite"}),
                            path("ftkilled.log"));
    // Inside a save (state.bin.tmp, best.bin.tmp, ...), 0 to 200 us after it began.
    if (!wait_for_nth_tmp(inotify, 1 + int(rng() % 3), 30000)) {
      kill(pid, SIGKILL);
      wait_for(pid);
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    kill(pid, SIGKILL);
    const int rc = wait_for(pid);
    if (rc == 0) break;
    ASSERT_EQ(rc, 128 + SIGKILL) << slurp(path("ftkilled.log"));
    kills++;
    inside_save += has_tmp(out);
  }
  EXPECT_GE(kills, 5);
  const bool resume = exists(out + "/state.bin");
  ASSERT_EQ(run_to_end(finetune_args("ftkilled", resume ? std::vector<std::string>{"--resume", out + "/state.bin"}
                                                        : std::vector<std::string>{"--overwrite"}),
                       path("ftkilled.log")),
            0)
      << slurp(path("ftkilled.log"));
  close(inotify);
  for (const char* f : {"best.bin", "last.bin", "state.bin", "log.jsonl"})
    EXPECT_TRUE(slurp(out + "/" + f) == slurp(path("ftref/") + f)) << f << " differs from the uninterrupted run's";
  printf("%d kills (%d inside a save)\n", kills, inside_save);
}

// Items 1 and 2: every input file is checked at start-up, by name.
TEST_F(Crash, FinetuneChecksEveryInputAtStartUp) {
  make_tasks();
  auto refused = [&](const std::string& dev, const std::string& what) {
    std::vector<std::string> a = finetune_args("ftbad");
    a[9] = dev;
    const int rc = run_to_end(a, path("ftbad.log"));
    const std::string log = slurp(path("ftbad.log"));
    EXPECT_EQ(rc, 1) << log;
    EXPECT_TRUE(has(log, dev)) << "the message does not name " << dev << ":\n" << log;
    EXPECT_TRUE(has(log, what)) << log;
    EXPECT_FALSE(has(log, "step 1/")) << "it trained first:\n" << log;
  };
  refused(path("task/sst2_dev_t12.bin"), "has T = 12");
  refused(path("task/sst2_test.bin"), "without labels");
  refused(path("task/sst2_dev_empty.bin"), "holds no examples");
  refused(path("task/sst2_dev_othervocab.bin"), "vocabulary hash");
}

// Items 3, 4, 6, 7: a lock, a guarded folder, a plain word when a run stops early.
TEST_F(Crash, FinetuneLocksItsFolderAndSaysWhenItStoppedEarly) {
  make_tasks();
  const std::string out = path("ftlock");
  const pid_t first = spawn(finetune_args("ftlock", {"--epochs", "1000"}), path("ftlock1.log"));
  ASSERT_TRUE(wait_for_text(path("ftlock1.log"), "step 1/")) << slurp(path("ftlock1.log"));
  const int rc = run_to_end(finetune_args("ftlock"), path("ftlock2.log"));
  std::string log = slurp(path("ftlock2.log"));
  EXPECT_EQ(rc, 1) << log;
  EXPECT_TRUE(has(log, out + " is in use by another run (pid " + std::to_string(first))) << log;
  EXPECT_FALSE(has(log, "step 1/")) << log;
  kill(first, SIGINT);
  EXPECT_EQ(wait_for(first), 130);
  log = slurp(path("ftlock1.log"));
  EXPECT_TRUE(has(log, "stopped early at step ")) << log;
  EXPECT_TRUE(has(log, "continue with --resume " + out + "/state.bin")) << log;
  EXPECT_TRUE(exists(out + "/state.bin"));
  // A new run into the folder is refused without --resume or --overwrite.
  EXPECT_EQ(run_to_end(finetune_args("ftlock"), path("ftlock3.log")), 1);
  EXPECT_TRUE(has(slurp(path("ftlock3.log")), out + " already holds a run")) << slurp(path("ftlock3.log"));
  // --max-steps stops early and says so; --overwrite starts afresh.
  EXPECT_EQ(run_to_end(finetune_args("ftlock", {"--overwrite", "--max-steps", "3"}), path("ftlock4.log")), 0)
      << slurp(path("ftlock4.log"));
  log = slurp(path("ftlock4.log"));
  EXPECT_TRUE(has(log, "stopped early at step 3 of 36 (--max-steps)")) << log;
  EXPECT_TRUE(has(log, "no best.bin yet")) << log;
  EXPECT_FALSE(exists(out + "/best.bin")) << "an old best.bin was left";
  // The score's meaning is said (item 6).
  EXPECT_EQ(run_to_end(finetune_args("ftlock", {"--resume", out + "/state.bin", "--max-steps", "5"}), path("ftlock5.log")),
            0)
      << slurp(path("ftlock5.log"));
  EXPECT_TRUE(has(slurp(path("ftlock5.log")), "(accuracy): saved " + out + "/best.bin")) << slurp(path("ftlock5.log"));
  // An empty --out is refused.
  EXPECT_EQ(run_to_end(finetune_args("", {"--out", ""}), path("ftlock6.log")), 2) << slurp(path("ftlock6.log"));
}

// Items 5 and 14: a checkpoint knows its task and vocabulary; task names in any case.
TEST_F(Crash, CheckpointsKnowTheirTaskAndVocabulary) {
  make_tasks();
  if (!exists(path("ftref/best.bin"))) {
    ASSERT_EQ(run_to_end(finetune_args("ftref", {"--overwrite"}), path("ftref.log")), 0) << slurp(path("ftref.log"));
  }
  std::string out;
  EXPECT_EQ(run("./build/bigs_cpu predict --device cpu --task qnli --ckpt " + path("ftref/best.bin") + " --test " +
                    path("task/qnli_test.bin") + " --out " + path("sub"),
                &out),
            1)
      << out;
  EXPECT_TRUE(has(out, path("ftref/best.bin") + " was fine-tuned on sst2, not qnli")) << out;
  EXPECT_EQ(run("./build/bigs_cpu eval --device cpu --task sst2 --ckpt " + path("ftref/best.bin") + " --dev " +
                    path("task/sst2_dev_othervocab.bin"),
                &out),
            1)
      << out;
  EXPECT_TRUE(has(out, "another vocabulary than the task file " + path("task/sst2_dev_othervocab.bin"))) << out;
  EXPECT_EQ(run("./build/bigs_cpu eval --device cpu --task SST-2 --ckpt " + path("ftref/best.bin") + " --dev " +
                    path("task/sst2_dev.bin"),
                &out),
            0)
      << out;
  EXPECT_EQ(run("./build/bigs_cpu eval --device cpu --task sst3 --ckpt " + path("ftref/best.bin") + " --dev " +
                    path("task/sst2_dev.bin"),
                &out),
            2)
      << out;
  EXPECT_TRUE(has(out, "did you mean sst2?")) << out;
  EXPECT_EQ(run("./build/bigs_cpu finetune --epohcs 3", &out), 2) << out;
  EXPECT_TRUE(has(out, "did you mean --epochs?")) << out;
  // A fine-tuning state is no pretraining run to continue.
  EXPECT_EQ(run_to_end(pretrain_args("ptfromft", {"--resume", path("ftref/state.bin")}), path("ptfromft.log")), 2)
      << slurp(path("ptfromft.log"));
  EXPECT_TRUE(has(slurp(path("ptfromft.log")), "is the state of a `bigs finetune` run (task sst2)"))
      << slurp(path("ptfromft.log"));
}

// A resumed fine-tuning keeps its length: --partial-batch, which state.bin
// does not record, may not change the number of steps (48 examples in
// batches of 5: 9 steps an epoch, 10 with the partial batch).
TEST_F(Crash, FinetuneResumeKeepsTheRunsLength) {
  make_tasks();
  const std::string out = path("ftlen");
  const std::vector<std::string> five = {"--batch", "5", "--micro-batch", "1", "--epochs", "2"};
  std::vector<std::string> extra = five;
  extra.insert(extra.end(), {"--overwrite", "--max-steps", "2"});
  ASSERT_EQ(run_to_end(finetune_args("ftlen", extra), path("ftlen.log")), 0) << slurp(path("ftlen.log"));
  extra = five;
  extra.insert(extra.end(), {"--resume", out + "/state.bin", "--partial-batch"});
  EXPECT_EQ(run_to_end(finetune_args("ftlen", extra), path("ftlen2.log")), 2) << slurp(path("ftlen2.log"));
  EXPECT_TRUE(has(slurp(path("ftlen2.log")), "these flags give 20 steps, but the run in " + out + "/state.bin has 18"))
      << slurp(path("ftlen2.log"));
  extra = five;
  extra.insert(extra.end(), {"--resume", out + "/state.bin", "--max-steps", "3"});
  EXPECT_EQ(run_to_end(finetune_args("ftlen", extra), path("ftlen3.log")), 0) << slurp(path("ftlen3.log"));
}

// Item 7: pretrain refuses a folder that holds a run, and an empty --out.
TEST_F(Crash, PretrainRefusesAFolderThatHoldsARun) {
  const std::string out = path("guard");
  ASSERT_EQ(run_to_end(pretrain_args("guard", {"--steps", "6"}), path("guard.log")), 0) << slurp(path("guard.log"));
  const std::string model = slurp(out + "/model.bin"), jl = slurp(out + "/log.jsonl");
  EXPECT_EQ(run_to_end(pretrain_args("guard", {"--steps", "6"}), path("guard2.log")), 1);
  EXPECT_TRUE(has(slurp(path("guard2.log")), out + " already holds a run")) << slurp(path("guard2.log"));
  EXPECT_TRUE(slurp(out + "/model.bin") == model && slurp(out + "/log.jsonl") == jl) << "the run was touched";
  EXPECT_EQ(run_to_end(pretrain_args("guard", {"--steps", "6", "--overwrite"}), path("guard3.log")), 0)
      << slurp(path("guard3.log"));
  std::vector<std::string> a = pretrain_args("guard", {"--out", ""});
  EXPECT_EQ(run_to_end(a, path("guard4.log")), 2) << slurp(path("guard4.log"));
  EXPECT_TRUE(has(slurp(path("guard4.log")), "--out is empty")) << slurp(path("guard4.log"));
}

// Item 8: --resume takes the run's settings from state.bin.
TEST_F(Crash, PretrainResumeTakesTheRunsSettings) {
  const std::string out = path("settings");
  ASSERT_EQ(run_to_end(pretrain_args("settings", {"--steps", "12", "--stop-at", "6", "--lr", "0.002", "--dropout", "0.2"}),
                       path("settings.log")),
            0)
      << slurp(path("settings.log"));
  const std::string state = out + "/state.bin";
  auto resume = [&](const std::vector<std::string>& extra, std::string* log) {
    std::vector<std::string> a = pretrain_args("settings", {"--steps", "12", "--resume", state, "--stop-at", "7"});
    a.insert(a.end(), extra.begin(), extra.end());
    const int rc = run_to_end(a, path("settings2.log"));
    *log = slurp(path("settings2.log"));
    return rc;
  };
  std::string log;
  EXPECT_EQ(resume({"--config", "base"}, &log), 2) << log;
  EXPECT_TRUE(has(log, "--config base")) << log;
  EXPECT_EQ(resume({"--lr", "0.001"}, &log), 2) << log;
  EXPECT_TRUE(has(log, "--lr 0.001 contradicts the run in " + state)) << log;
  EXPECT_EQ(resume({"--steps", "5"}, &log), 2) << log;
  EXPECT_TRUE(has(log, "--steps 5 is below the step of " + state + ", 6")) << log;
  // The micro-batch keys dropout and the order of the gradient's sum: another is refused.
  EXPECT_EQ(resume({"--micro-batch", "4"}, &log), 2) << log;
  EXPECT_TRUE(has(log, "--micro-batch 4 contradicts the run in " + state)) << log;
  // Without flags (not even --micro-batch, whose default 8 does not divide
  // the run's --batch 4): the run's own values, printed as such.
  std::vector<std::string> a = pretrain_args("settings", {"--resume", state, "--stop-at", "7"});
  const auto micro = std::find(a.begin(), a.end(), "--micro-batch");
  a.erase(micro, micro + 2);
  EXPECT_EQ(run_to_end(a, path("settings3.log")), 0) << slurp(path("settings3.log"));
  log = slurp(path("settings3.log"));
  EXPECT_TRUE(has(log, "  lr                     0.002\n")) << log;
  EXPECT_TRUE(has(log, "  dropout                0.2\n")) << log;
  EXPECT_TRUE(has(log, "  micro-batch            2\n")) << log;
}

// Item 9: --stop-at then --resume logs what one uninterrupted run logs.
TEST_F(Crash, StopAtThenResumeLogsAsOneRun) {
  std::string out;
  ASSERT_EQ(run("./data_prep pretrain --vocab " + path("vocab.txt") + " --seq 16 --val-fraction 0.2 --out " +
                    path("vshards") + " " + path("text.txt"),
                &out),
            0)
      << out;
  auto args = [&](const std::string& o, const std::vector<std::string>& extra) {
    std::vector<std::string> a = pretrain_args(o, {"--steps", "12", "--eval-every", "4", "--val",
                                                   path("vshards/val_*.bin")});
    a[3] = path("vshards/train_*.bin");
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ASSERT_EQ(run_to_end(args("vref", {}), path("vref.log")), 0) << slurp(path("vref.log"));
  ASSERT_EQ(run_to_end(args("vstop", {"--stop-at", "6"}), path("vstop.log")), 0) << slurp(path("vstop.log"));
  ASSERT_EQ(run_to_end(args("vstop", {"--resume", path("vstop/state.bin")}), path("vstop.log")), 0)
      << slurp(path("vstop.log"));
  EXPECT_EQ(slurp(path("vstop/log.jsonl")), slurp(path("vref/log.jsonl")));
  EXPECT_TRUE(slurp(path("vstop/model.bin")) == slurp(path("vref/model.bin")));
}

// Item 10: a shard set is whole, and data_prep removes stale temporary shards.
TEST_F(Crash, AMixOfTwoShardSetsIsRefused) {
  std::string out;
  const std::string prep = "./data_prep pretrain --vocab " + path("vocab.txt") +
                           " --seq 16 --val-fraction 0 --shard-sequences 64 --out ";
  ASSERT_EQ(run(prep + path("setA") + " " + path("text.txt"), &out), 0) << out;
  fs::create_directories(path("setB"));
  std::ofstream(path("setB/train_000007.bin.tmp")) << "left by a killed run";
  // Another set: the same text in shards of 50 (the same input and settings would give the same bytes and id).
  ASSERT_EQ(run(prep + path("setB") + " --shard-sequences 50 " + path("text.txt"), &out), 0) << out;
  EXPECT_FALSE(exists(path("setB/train_000007.bin.tmp"))) << "a stale temporary shard was left";
  fs::copy_file(path("setA/train_000001.bin"), path("setB/train_000001.bin"), fs::copy_options::overwrite_existing);
  std::vector<std::string> a = pretrain_args("mixrun");
  a[3] = path("setB/train_*.bin");
  EXPECT_EQ(run_to_end(a, path("mixrun.log")), 1);
  std::string log = slurp(path("mixrun.log"));
  EXPECT_TRUE(has(log, path("setB/train_000001.bin")) && has(log, "two different `data_prep pretrain` runs")) << log;
  EXPECT_FALSE(has(log, "step 1/")) << log;
  // A set with a shard missing: said (a glob of part of a set is allowed).
  fs::remove(path("setA/train_000001.bin"));
  a[3] = path("setA/train_*.bin");
  EXPECT_EQ(run_to_end(pretrain_args("mixrun2", {"--steps", "1"}), path("mixrun.log")), 0);
  a = pretrain_args("mixrun2", {"--steps", "1", "--overwrite"});
  a[3] = path("setA/train_*.bin");
  EXPECT_EQ(run_to_end(a, path("mixrun.log")), 0) << slurp(path("mixrun.log"));
  log = slurp(path("mixrun.log"));
  EXPECT_TRUE(has(log, "matches 6 of the 7 shards of its set")) << log;
}

// Item 12: a config that sets a key twice is refused.
TEST_F(Crash, AConfigThatSetsAKeyTwiceIsRefused) {
  std::ofstream(path("twice.cfg")) << "H 8\nI 8\nL 1\nN 2\nH 16\n";
  std::vector<std::string> a = pretrain_args("cfgtwice");
  a[5] = path("twice.cfg");
  EXPECT_EQ(run_to_end(a, path("cfgtwice.log")), 2) << slurp(path("cfgtwice.log"));
  EXPECT_TRUE(has(slurp(path("cfgtwice.log")), "twice.cfg:5: 'H' is set a second time (first on line 1)"))
      << slurp(path("cfgtwice.log"));
}

// Item 15: the CPU's bench reports no MFU against a GPU's peak; runs do not list bf16.
TEST_F(Crash, TheCpuReportsNoGpuMfuOrPrecision) {
  std::string out;
  EXPECT_EQ(run("./build/bigs_cpu bench --device cpu --config " + path("tiny.cfg") + " --seq 16 --batch 2 --steps 1", &out),
            0)
      << out;
  EXPECT_FALSE(has(out, "MFU 0.00%")) << out;
  EXPECT_TRUE(has(out, "no MFU")) << out;
  EXPECT_FALSE(has(slurp(path("ref.log")), "bf16")) << slurp(path("ref.log"));
}
