// bigsc/commands.h continues bigs.cu (included where its Commands begin): what every command
// stands on: the stop signals, failures and their exit statuses, parsing the flags on every rank,
// output folders (made, named, claimed), a resumed run's settings, config files, and the log a
// resumed run keeps.

#pragma once

// The one global: a signal handler can reach nothing else. The training
// loop polls it between steps, saves, and returns.
static volatile sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

// SIGINT and SIGTERM (Ctrl-C, kill, Slurm's scancel), and SIGUSR1, which Open
// MPI's mpirun passes on to every rank at once without ending the job, ask a
// training run to stop after the current step.
static void stop_on_signals() {
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) signal(sig, on_stop_signal);
}

// The signal that stops the run after this step (0: none). When any rank
// was signalled, every rank stops after the same step.
static int agreed_stop_signal(World& w) {
  double sig = g_stop_signal;
  world_reduce(w, &sig, 1, Reduce::Max);
  if (sig > 0) w.agreed = true;
  return (int)sig;
}

// Every command reports a failure the same way, "bigs CMD: message" on
// stderr, and returns its exit status: 1 when the run failed, 2 when the
// command line was wrong.
static int fail(const char* cmd, const std::string& msg, int status = 1) {
  fprintf(stderr, "bigs %s: %s\n", cmd, msg.c_str());
  return status;
}

// Parses a command's flags: -1 to go on; else the exit status (0 after
// --help, 2 after saying what is wrong). positional: where the other
// arguments go; null when the command takes none.
static int parse_command(const char* cmd, int argc, char** argv, const std::vector<Flag>& flags, const char* usage,
                         std::vector<std::string>* positional) {
  std::vector<std::string> rest;
  std::string err;
  int rc = parse_flags(argc, argv, flags, usage, positional ? positional : &rest, &err);
  if (rc == 1) return 0;
  if (rc == 0 && !rest.empty()) err = "unexpected argument '" + rest[0] + "'", rc = 2;
  return rc == 0 ? -1 : fail(cmd, err, 2);
}

// parse_command for the commands that run on every rank of a job: the ranks
// first agree on the outcome, so that a command line they all got wrong is
// said once (by rank 0) and every rank ends cleanly. A rank that alone got
// it wrong (another command line, another environment) says so with its
// rank, and the others stop too instead of waiting for it.
static int world_parse_command(World& w, const char* cmd, int argc, char** argv, const std::vector<Flag>& flags,
                               const char* usage) {
  std::vector<std::string> rest;
  std::string err;
  int rc = parse_flags(argc, argv, flags, usage, &rest, &err);  // 0 go on, 1 --help was printed, 2 wrong
  if (rc == 0 && !rest.empty()) err = "unexpected argument '" + rest[0] + "'", rc = 2;
  double seen[3] = {0, 0, 0};  // how many ranks had each outcome
  seen[rc] = 1;
  world_reduce(w, seen, 3);
  if (seen[0] == w.size) return -1;
  w.agreed = true;
  if (rc == 2 && seen[2] == w.size) return w.rank == 0 ? fail(cmd, err, 2) : 2;
  if (rc == 2) return fail(cmd, strf("rank %d of %d: %s", w.rank, w.size, err.c_str()), 2);
  if (rc == 0 && w.rank == 0)
    fail(cmd, "the ranks were started with different command lines: start every rank with the same one", 2);
  return rc == 1 ? 0 : 2;
}

static std::string format_duration(double s) {
  long long t = (long long)s;
  return t >= 3600 ? strf("%lldh%02lldm", t / 3600, t / 60 % 60) : strf("%lldm%02llds", t / 60, t % 60);
}

static bool make_dir(const std::string& dir, std::string* err) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); i++) {  // mkdir -p
    if (i == dir.size() || dir[i] == '/') {
      if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
        *err = strf("cannot create directory %s: %s", cur.c_str(), strerror(errno));
        return false;
      }
    }
    if (i < dir.size()) cur += dir[i];
  }
  return true;
}

// The files that mark a folder as holding a run (pretrain: state.bin and
// model.bin; finetune: state.bin, best.bin and last.bin). Without --resume or
// --overwrite a run refuses such a folder instead of replacing its work;
// with --overwrite it removes them first, so nothing of the old run mixes
// with the new one. Called with the folder's lock held.
static bool out_dir_claim(const std::string& out, const std::vector<const char*>& names, bool resuming,
                          bool overwrite, std::string* err) {
  std::string found;
  for (const char* n : names) {
    struct stat st;
    const std::string p = out + "/" + n;
    if (stat(p.c_str(), &st) == 0) found += (found.empty() ? "" : ", ") + p;
  }
  if (found.empty() || resuming) return true;
  if (!overwrite) {
    *err = strf("%s already holds a run (%s): continue it with --resume %s/state.bin, replace it with "
                "--overwrite, or choose another --out",
                out.c_str(), found.c_str(), out.c_str());
    return false;
  }
  for (const char* n : names) remove((out + "/" + n).c_str());
  printf("--overwrite: removed %s\n", found.c_str());
  return true;
}

// --out "" would write into the root directory.
static bool out_dir_named(const std::string& out, std::string* err) {
  if (!out.empty()) return true;
  *err = "--out is empty: name the directory the run writes to";
  return false;
}

static const Flag* find_flag(const std::vector<Flag>& flags, const char* name) {
  for (const Flag& f : flags)
    if (!strcmp(f.name, name)) return &f;
  return nullptr;
}

// What a flag that contradicts the run being resumed is told.
static std::string contradicts(const char* flag, const std::string& given, const std::string& run,
                               const std::string& resume) {
  return strf("--%s %s contradicts the run in %s, which has --%s %s: leave the flag out to continue that run as it "
              "was, or start a new run",
              flag, given.c_str(), resume.c_str(), flag, run.c_str());
}

// On --resume, a setting takes the run's value (stored in state.bin); a flag
// on the command line that names another value is refused.
static bool take_setting(const std::vector<Flag>& flags, const char* name, double stored, const std::string& from,
                         std::string* err) {
  const Flag* f = find_flag(flags, name);
  const double now = f->kind == Flag::Num ? *(double*)f->value : (double)*(long long*)f->value;
  if (f->given && now != stored) {
    *err = contradicts(name, flag_value(*f), strf("%.17g", stored), from);
    return false;
  }
  if (f->kind == Flag::Num)
    *(double*)f->value = stored;
  else
    *(long long*)f->value = (long long)stored;
  return true;
}

// The config of a run: a preset name or a file of "key value" lines
// (H, I, L, N, types, labels; V and T come from the data).
static bool config_load(const std::string& spec, Config* c, std::string* err) {
  if (config_preset(spec, c)) return true;
  FILE* f = fopen(spec.c_str(), "r");
  if (!f) {
    *err = strf("--config %s: not a preset (tiny, base, large) and not a readable file", spec.c_str());
    return false;
  }
  *c = Config{};
  char* buf = nullptr;
  size_t cap = 0;
  ssize_t len;
  int line = 0;
  bool ok = true;
  std::vector<std::pair<std::string, int>> seen;  // key, line
  while (ok && (len = getline(&buf, &cap, f)) >= 0) {  // whole lines, however long
    line++;
    if (buf[0] == '#' || strspn(buf, " \t\r\n\v\f") == (size_t)len) continue;
    // Two words and nothing else (end == len: no third word, no NUL byte),
    // the second a whole integer: "H 64.5" or "H 64 # hidden" is an error.
    std::vector<char> kbuf(len + 1), vbuf(len + 1);
    char* key = kbuf.data();
    int end = -1;
    long long v = 0;
    std::string why;
    if (sscanf(buf, "%s %s %n", key, vbuf.data(), &end) != 2 || end != len ||
        !parse_int(vbuf.data(), -(1LL << 30), 1LL << 30, key, &v, &why)) {  // config_check narrows it
      *err = strf("%s:%d: expected 'key integer'%s%s", spec.c_str(), line, why.empty() ? "" : ": ", why.c_str());
      ok = false;
    } else {
      bool known = false;
#define X(f, dflt, tiny, base, large, lo, hi, what) \
  if (!strcmp(key, #f)) c->f = (int)std::max<long long>(INT_MIN, std::min<long long>(INT_MAX, v)), known = true;
      BIGS_CONFIG(X)
#undef X
      auto dup = std::find_if(seen.begin(), seen.end(), [&](const auto& k) { return k.first == key; });
      if (known && dup != seen.end()) {
        *err = strf("%s:%d: '%s' is set a second time (first on line %d); set each key once", spec.c_str(), line, key,
                    dup->second);
        ok = false;
      }
      seen.push_back({key, line});
      if (!known) {
        std::string keys;
#define X(f, dflt, tiny, base, large, lo, hi, what) keys += std::string(keys.empty() ? "" : " ") + #f;
        BIGS_CONFIG(X)
#undef X
        *err = strf("%s:%d: unknown key '%s' (known: %s)", spec.c_str(), line, key, keys.c_str());
        ok = false;
      }
    }
  }
  free(buf);
  fclose(f);
  return ok;
}

// A resumed run redoes the steps after its checkpoint, so the log of the run
// it continues loses its lines for those steps (and any line a kill cut
// short): each step is then logged once, as in a run never stopped.
static bool log_keep_until(const std::string& path, uint64_t step, std::string* err) {
  FILE* in = fopen(path.c_str(), "r");
  if (!in) return true;  // no log yet
  AtomicFile out;
  if (!out.open(path, err)) {
    fclose(in);
    return false;
  }
  char* line = nullptr;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, in)) > 0) {
    unsigned long long s;
    if (line[len - 1] == '\n' && sscanf(line, "{\"step\": %llu", &s) == 1 && s <= step) out.write(line, (size_t)len);
  }
  free(line);
  fclose(in);
  return out.commit(err);
}
