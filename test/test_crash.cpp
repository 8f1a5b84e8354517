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
  ASSERT_EQ(h.version, 2u);
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
