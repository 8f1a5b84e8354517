#!/usr/bin/env python3
"""Data-parallel training on the CPU through MPI (README "Data-parallel
training"), run as a user runs it: `mpirun -np K bigs pretrain ...` with
Open MPI on one machine (--oversubscribe: more ranks than cores), against
one process of the MPI-free build:

  (a) 2 ranks x 1 micro-batch = 1 process x 2 micro-batches over 20 steps:
      the log (every loss as %.17g, the validation lines), state.bin and
      model.bin byte for byte; `mpirun -np 1` too; each rank's parameter
      checksum equal to the CRC-32C of model.bin's parameters;
  (b) 3 ranks against 1 (batch 6, micro-batch 1: two rounds per rank, three
      shards, the last shorter; a model with I = 4096, so that a shard
      boundary cuts through the layers' buckets of the gradient exchange):
      byte for byte, each rank's checksum, and two 3-rank runs identical;
  (c) resume across world sizes: 2 ranks stopped with --stop-at 10, resumed
      with 1 and with 3, against the straight run of one process;
  (d) kill -9 of one rank mid-run: the job ends non-zero within 30 s, the
      last checkpoint loads and the resumed run finishes;
  (e) SIGUSR1 and SIGTERM on mpirun, and SIGUSR1 to rank 1 alone: every
      rank stops after the same step, rank 0 saves, the state resumes;
  (f) a rank that hangs (SIGSTOP): the others end the job after --timeout;
  (g) fine-tuning, 2 ranks against 1, with a partial last batch: log,
      best.bin and last.bin byte for byte; 4 ranks against 1 at batch 8,
      where the last batch of an epoch leaves two ranks without work;
  (h) bad input, said once, before any work: a batch that does not divide,
      ranks started with different flags, different data or a different
      config behind the same path, a one-process command under mpirun, a
      command line that every rank or a single rank got wrong.

    /usr/bin/python3 dev/test_mpi.py [--bigs-mpi build/bigs_mpi] [--bigs build/bigs_cpu] [--workdir build/test_mpi]
                                     [--only abcdefgh]

Prints one line per check and a summary "N passed, N failed"; exits 1 on any
failure.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import crc32c

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from testlib import Suite, expect, fresh_workdir  # noqa: E402

VOCAB = os.path.join(ROOT, "data", "bert-base-uncased-vocab.txt")
# Open MPI refuses root unless told (CI and the device machines run as root).
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
CKPT_HEADER = 256  # bytes before a checkpoint's floats


class Env:
    def __init__(self, work, bigs_mpi, bigs):
        self.work, self.bigs_mpi, self.bigs = work, bigs_mpi, bigs
        self.shards = os.path.join(work, "shards")
        self.cfg = os.path.join(work, "mini.cfg")
        self.wide_cfg = os.path.join(work, "wide.cfg")

    def path(self, *names):
        return os.path.join(self.work, *names)

    def pretrain_args(self, out, extra=(), shards=None, cfg=None):
        shards = shards or self.shards
        return ["pretrain", "--train", shards + "/train_*.bin", "--val", shards + "/val_*.bin",
                "--config", cfg or self.cfg, "--steps", "20", "--warmup", "2", "--lr", "3e-3",
                "--eval-every", "10", "--eval-seqs", "8", "--log-every", "5", "--save-every", "10",
                "--threads", "1", "--out", out] + list(extra)


def run(cmd, cwd=None, timeout=300):
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def ok(r, what):
    expect(r.returncode == 0, "%s: exit %d\n%s%s" % (what, r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


def one(env, args):
    """One process of the MPI-free build."""
    return ok(run([env.bigs] + args), "bigs " + args[0])


def ranks(env, k, args, extra_mpirun=()):
    return ok(run(MPIRUN + list(extra_mpirun) + ["-np", str(k), env.bigs_mpi] + args),
              "mpirun -np %d bigs %s" % (k, args[0]))


def slurp(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def loss_lines(out):
    return [l for l in slurp(os.path.join(out, "log.jsonl"), "r").splitlines() if '"loss"' in l]


def same_files(a, b, names):
    for n in names:
        expect(slurp(os.path.join(a, n)) == slurp(os.path.join(b, n)), "%s differs between %s and %s" % (n, a, b))


def same_run(a, b):
    """Two pretraining runs that must be one: log, state and model."""
    expect(loss_lines(a) == loss_lines(b) and len(loss_lines(a)) == 20, "the losses differ:\n%s\n%s" % (
        "\n".join(loss_lines(a)[:3]), "\n".join(loss_lines(b)[:3])))
    same_files(a, b, ["log.jsonl", "state.bin", "model.bin"])


def rank_checksums(output, k, model_bin):
    """The last "parameters on the K ranks" line: every rank's CRC-32C of its
    parameters, each equal to the CRC-32C of the saved model's parameters."""
    lines = re.findall(r"parameters on the %d ranks \(CRC-32C\):((?: [0-9a-f]{8})+)" % k, output)
    expect(lines, "no per-rank checksums in:\n" + output[-2000:])
    crcs = lines[-1].split()
    want = "%08x" % crc32c.crc32c(slurp(model_bin)[CKPT_HEADER:])
    expect(len(crcs) == k and all(c == want for c in crcs), "rank checksums %s, model.bin's parameters %s" % (
        crcs, want))
    return want


def test_two_ranks(env):
    single, two, np1 = env.path("a1"), env.path("a2"), env.path("a_np1")
    one(env, env.pretrain_args(single, ["--batch", "2", "--micro-batch", "1"]))
    r = ranks(env, 2, env.pretrain_args(two, ["--batch", "2", "--micro-batch", "1"]))
    ranks(env, 1, env.pretrain_args(np1, ["--batch", "2", "--micro-batch", "1"]))
    same_run(single, two)
    same_run(single, np1)
    expect("world: 2 ranks through MPI" in r.stdout, r.stdout[:2000])
    expect(re.search(r"tokens/s \(2 ranks, \d+ each\)", r.stdout), "no per-rank tokens/s:\n" + r.stdout[-1500:])
    crc = rank_checksums(r.stdout, 2, os.path.join(two, "model.bin"))
    return "20 steps identical, parameters %s on both ranks" % crc


def test_three_ranks(env):
    single, three, again = env.path("b1"), env.path("b3"), env.path("b3_again")
    extra = ["--batch", "6", "--micro-batch", "1"]
    one(env, env.pretrain_args(single, extra, cfg=env.wide_cfg))
    r = ranks(env, 3, env.pretrain_args(three, extra, cfg=env.wide_cfg))
    ranks(env, 3, env.pretrain_args(again, extra, cfg=env.wide_cfg))
    same_run(single, three)
    same_run(three, again)
    crc = rank_checksums(r.stdout, 3, os.path.join(three, "model.bin"))
    return "identical to one process and from run to run, parameters %s on all ranks" % crc


def test_resume_across_world_sizes(env):
    extra = ["--batch", "6", "--micro-batch", "1", "--save-every", "0"]
    straight, sliced = env.path("c_straight"), env.path("c_sliced")
    one(env, env.pretrain_args(straight, extra))
    ranks(env, 2, env.pretrain_args(sliced, extra + ["--stop-at", "10"]))
    to_one, to_three = env.path("c_to_one"), env.path("c_to_three")
    for d in (to_one, to_three):
        shutil.copytree(sliced, d)
    one(env, env.pretrain_args(to_one, extra + ["--resume", os.path.join(to_one, "state.bin")]))
    ranks(env, 3, env.pretrain_args(to_three, extra + ["--resume", os.path.join(to_three, "state.bin")]))
    for d in (to_one, to_three):
        expect(loss_lines(d) == loss_lines(straight), "the losses of %s differ from the straight run" % d)
        same_files(straight, d, ["state.bin", "model.bin"])
    return "2 ranks to step 10, then 1 or 3 ranks to step 20 = one process throughout"


def rank_pids(mpirun_pid):
    """The ranks that mpirun started on this machine (its children), by rank."""
    pids = {}
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(mpirun_pid)], capture_output=True,
                              text=True).stdout.split():
        try:
            environ = slurp("/proc/%s/environ" % pid).split(b"\0")
        except OSError:
            continue
        for v in environ:
            if v.startswith(b"OMPI_COMM_WORLD_RANK="):
                pids[int(v.split(b"=")[1])] = int(pid)
    return pids


def start_long_run(env, out, k, extra, mpirun_extra=(), ready=None, what="reach step 12", deadline_s=60):
    """A run far too long to finish, started in the background (its output in
    OUT.log); returns once ready() (default: it has logged 12 steps) and its
    ranks are known. It prints little: mpirun may stop passing the ranks'
    output on once it is signalled, and a rank blocked on a full pipe would
    never stop. deadline_s is only against a run that hangs."""
    if ready is None:
        ready = lambda: os.path.exists(os.path.join(out, "log.jsonl")) and len(loss_lines(out)) >= 12  # noqa: E731
    log = open(out + ".log", "w")
    args = env.pretrain_args(out, ["--batch", "4", "--micro-batch", "1", "--steps", "1000000", "--log-every",
                                   "100000", "--eval-every", "0"] + list(extra))
    p = subprocess.Popen(MPIRUN + list(mpirun_extra) + ["-np", str(k), env.bigs_mpi] + args, env=ENV, stdout=log,
                         stderr=subprocess.STDOUT)
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if ready() and len(rank_pids(p.pid)) == k:
            return p, rank_pids(p.pid)
        expect(p.poll() is None, "the run ended early:\n" + slurp(out + ".log", "r")[-2000:])
        time.sleep(0.1)
    kill_job(p, rank_pids(p.pid))
    raise AssertionError("the run did not %s in %d s:\n%s" % (what, deadline_s, slurp(out + ".log", "r")[-2000:]))


def kill_job(p, pids):
    """mpirun and its ranks, killed: a failed check leaves no job behind."""
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    p.kill()
    p.wait()


def wait_or_kill(p, pids, timeout):
    """mpirun's exit status, or a failure after timeout seconds."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(p, pids)
        raise AssertionError("mpirun still ran %d s later: killed it and its ranks" % timeout)


def state_step(path):
    """The step a checkpoint holds (CkptHeader: magic, version, kind, 4
    bytes, the 8 config fields, num_params, then step)."""
    return int.from_bytes(slurp(path)[16 + 8 * 4 + 8:16 + 8 * 4 + 16], "little")


def saved_step(out):
    text = slurp(out + ".log", "r") if os.path.exists(out + ".log") else ""
    steps = re.findall(r"saved \S+state.bin and \S+ at step (\d+)", text)
    return int(steps[-1]) if steps else None


def test_kill_one_rank(env):
    out = env.path("d_kill")
    state = os.path.join(out, "state.bin")
    # The kill comes once state.bin (renamed into place whole) holds step 10 or later: the
    # checkpoint itself, not a count of log lines nor mpirun's forwarded "saved ..." line,
    # which on a loaded machine may arrive long after the file.
    p, pids = start_long_run(env, out, 2, ["--save-every", "5"], ready=lambda: os.path.exists(state) and
                             state_step(state) >= 10, what="save a checkpoint at step 10 or later", deadline_s=300)
    start = time.time()
    os.kill(pids[1], signal.SIGKILL)
    rc = wait_or_kill(p, pids, 120)
    elapsed = time.time() - start
    expect(rc != 0, "mpirun exited 0 after a rank was killed")
    expect(elapsed < 30, "the job took %.1f s to end after the kill" % elapsed)
    step = state_step(state)  # the last checkpoint: the one seen, or a later one saved before the job ended
    expect(step >= 10 and step % 5 == 0, "state.bin holds step %d:\n%s" % (step, slurp(out + ".log", "r")[-1500:]))
    r = ranks(env, 2, env.pretrain_args(out, ["--batch", "4", "--micro-batch", "1", "--steps", str(step + 3),
                                              "--resume", os.path.join(out, "state.bin")]))
    expect("resumed from" in r.stdout and "at step %d" % (step + 3) in r.stdout, r.stdout[-1500:])
    return "mpirun exited %d %.1f s after the kill; step %d's checkpoint resumed to step %d" % (
        rc, elapsed, step, step + 3)


def test_signals(env):
    said = []
    # (what, signal, to rank 1 alone rather than to mpirun, mpirun's flags)
    for name, sig, alone, mpirun_extra in [("SIGUSR1", signal.SIGUSR1, False, ()),
                                           # rank 0 must learn of it from rank 1, or it would wait for
                                           # rank 1 in the next step's collectives (until --timeout)
                                           ("SIGUSR1 to rank 1", signal.SIGUSR1, True, ()),
                                           # mpirun passes SIGTERM on only after odls_base_sigkill_timeout
                                           # seconds and kills the ranks as many seconds later (default 1).
                                           ("SIGTERM", signal.SIGTERM, False,
                                            ("--mca", "odls_base_sigkill_timeout", "10"))]:
        out = env.path("e_" + name.replace(" ", "_"))
        p, pids = start_long_run(env, out, 2, ["--save-every", "0", "--timeout", "20"], mpirun_extra)
        if alone:
            os.kill(pids[1], sig)
        else:
            p.send_signal(sig)
        rc = wait_or_kill(p, pids, 120)
        text = slurp(out + ".log", "r")
        # The state saved holds the last step logged: every rank stopped after it (ranks that
        # disagreed would wait forever in different collectives, and nothing would be saved).
        step = state_step(os.path.join(out, "state.bin"))
        expect(step == len(loss_lines(out)) >= 12, "%s: state.bin holds step %d, the log %d steps:\n%s" % (
            name, step, len(loss_lines(out)), text[-2000:]))
        if sig == signal.SIGUSR1:  # the job goes on: all of the ranks' output comes through
            expect(rc == 128 + sig, "mpirun exited %d after %s, want %d" % (rc, name, 128 + sig))
            stops = re.findall(r"^signal %d: stopping after step (\d+)$" % sig, text, re.M)
            expect(stops == [str(step)], "want one stop line (from rank 0):\n" + text[-2000:])
            expect(saved_step(out) == step and "interrupted; continue with --resume" in text, text[-2000:])
        r = ranks(env, 2, env.pretrain_args(out, ["--batch", "4", "--micro-batch", "1", "--steps", str(step + 2),
                                                  "--resume", os.path.join(out, "state.bin")]))
        expect("resumed from" in r.stdout, r.stdout[-1500:])
        said.append("%s: stopped after step %d, exit %d, resumed" % (name, step, rc))
    return "; ".join(said)


def test_hung_rank(env):
    out = env.path("f_hang")
    p, pids = start_long_run(env, out, 2, ["--save-every", "0", "--timeout", "3"])
    start = time.time()
    os.kill(pids[1], signal.SIGSTOP)
    rc = wait_or_kill(p, pids, 60)
    elapsed = time.time() - start
    text = slurp(out + ".log", "r")
    expect(rc != 0 and elapsed < 3 + 20, "exit %d after %.1f s" % (rc, elapsed))
    expect("rank 0 of 2 has waited 3 s for the others" in text, text[-1500:])
    return "rank 0 ended the job %.1f s after rank 1 stopped (exit %d)" % (elapsed, rc)


def make_task(env):
    """An SST-2-layout task from the corpus: does a verse name the LORD? 42
    training verses (a partial last batch of 2 at batch 4), 10 dev."""
    d = env.path("glue")
    os.makedirs(d, exist_ok=True)
    verses = [l.strip() for l in slurp(os.path.join(ROOT, "data", "kjv.txt"), "r").splitlines() if l.strip()]
    verses = [v for v in verses if len(v.split()) < 20][:52]
    for name, rows in (("train", verses[:42]), ("dev", verses[42:])):
        with open(os.path.join(d, name + ".tsv"), "w") as f:
            f.write("sentence\tlabel\n" + "".join("%s\t%d\n" % (v, "LORD" in v) for v in rows))
    ok(run([os.path.join(ROOT, "data_prep"), "glue", "--task", "sst2", "--vocab", VOCAB, "--seq", "32",
            "--data-dir", d, "--out", os.path.join(d, "bin")]), "data_prep glue")
    return os.path.join(d, "bin")


def test_finetune(env):
    init = env.path("g_init")
    one(env, env.pretrain_args(init, ["--batch", "2", "--micro-batch", "2", "--steps", "3"]))
    task = make_task(env)
    def args(out, batch=4):
        return ["finetune", "--task", "sst2", "--init", os.path.join(init, "model.bin"), "--train",
                os.path.join(task, "sst2_train.bin"), "--dev", os.path.join(task, "sst2_dev.bin"), "--epochs", "2",
                "--batch", str(batch), "--micro-batch", "1", "--lr", "1e-3", "--eval-every", "5", "--threads", "1",
                "--partial-batch",  # the last batch of an epoch, partial: ranks without a micro-batch
                "--out", out]
    single, two = env.path("g1"), env.path("g2")
    one(env, args(single))
    r = ranks(env, 2, args(two))
    same_files(single, two, ["log.jsonl", "best.bin", "last.bin"])
    crc = rank_checksums(r.stdout, 2, os.path.join(two, "last.bin"))
    # 4 ranks at batch 8: the last batch of an epoch (42 = 5 x 8 + 2) leaves ranks 2 and 3 without a
    # micro-batch; they send zeros.
    single8, four = env.path("g1_batch8"), env.path("g4")
    one(env, args(single8, 8))
    ranks(env, 4, args(four, 8))
    same_files(single8, four, ["log.jsonl", "best.bin", "last.bin"])
    return "2 epochs of 11 steps identical, parameters %s on both ranks; 4 ranks with 2 idle in the last batch" % crc


def test_bad_input(env):
    def refused(cmd, want, cwd=None, out=None):
        r = run(cmd, cwd=cwd)
        said = r.stdout + r.stderr
        expect(r.returncode != 0, "exit 0 for %s" % cmd)
        expect(said.count(want) == 1, "want %r once, got:\n%s" % (want, said[-2500:]))
        expect(out is None or not os.path.exists(out), "%s was made: work was done" % out)

    out = env.path("h_x")
    refused(MPIRUN + ["-np", "3", env.bigs_mpi] + env.pretrain_args(out, ["--batch", "4", "--micro-batch", "1"]),
            "3 ranks x --micro-batch 1 = 3 does not divide --batch 4", out=out)
    a = env.pretrain_args(out, ["--batch", "2", "--micro-batch", "1"])
    refused(MPIRUN + ["-np", "1", env.bigs_mpi] + a + ["--lr", "1e-3", ":", "-np", "1", env.bigs_mpi] + a,
            "the ranks were started with different flags", out=out)
    # The same command line in two directories whose files differ: other shards, another config.
    for d, lines, h in (("h_dir_a", (0, 400), 16), ("h_dir_b", (400, 800), 16), ("h_dir_c", (0, 400), 24)):
        d = env.path(d)
        os.makedirs(d)
        text = slurp(os.path.join(ROOT, "data", "kjv.txt"), "r").splitlines()[lines[0]:lines[1]]
        with open(os.path.join(d, "text.txt"), "w") as f:
            f.write("\n".join(text) + "\n")
        with open(os.path.join(d, "mini.cfg"), "w") as f:
            f.write("H %d\nI 24\nL 2\nN 4\n" % h)
        ok(run([os.path.join(ROOT, "data_prep"), "pretrain", "--vocab", VOCAB, "--seq", "32", "--out", "shards",
                "--val-fraction", "0.2", "text.txt"], cwd=d), "data_prep pretrain")
    rel = env.pretrain_args("out", ["--batch", "2", "--micro-batch", "1"], shards="shards", cfg="mini.cfg")
    for other, want in (("h_dir_b", "the ranks read different data"),
                        ("h_dir_c", "the ranks start from different parameters")):
        refused(MPIRUN + ["-np", "1", "--wdir", env.path("h_dir_a"), env.bigs_mpi] + rel +
                [":", "-np", "1", "--wdir", env.path(other), env.bigs_mpi] + rel, want,
                out=env.path("h_dir_a", "out"))
    refused(MPIRUN + ["-np", "2", env.bigs_mpi, "eval", "--help"], "runs in one process")
    # A command line every rank got wrong, said once; one that a single rank got wrong, said by that rank.
    refused(MPIRUN + ["-np", "3", env.bigs_mpi] + a + ["--bacth", "2"], "unknown or incomplete option '--bacth'", out=out)
    refused(MPIRUN + ["-np", "1", env.bigs_mpi] + a + [":", "-np", "1", env.bigs_mpi] + a + ["--lr", "x"],
            "rank 1 of 2: --lr", out=out)
    return "each refused with one message"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bigs-mpi", default="build/bigs_mpi", help="bigs built with MPI (default %(default)s)")
    parser.add_argument("--bigs", default="build/bigs_cpu", help="bigs without MPI (default %(default)s)")
    parser.add_argument("--workdir", default="build/test_mpi", help="scratch directory (default %(default)s)")
    parser.add_argument("--only", default="abcdefgh", help="the checks to run, by letter (default all: %(default)s)")
    args = parser.parse_args(argv)
    work = fresh_workdir(args.workdir)
    start = time.time()
    s = Suite()
    if not shutil.which("mpirun"):
        print("test_mpi: no mpirun (Debian: openmpi-bin; dev/deps.sh installs it)")
        return 1
    env = Env(work, os.path.abspath(args.bigs_mpi), os.path.abspath(args.bigs))
    # Shards of T = 32 from the first 400 lines of the bundled corpus, BERT's vocabulary, a mini model.
    with open(os.path.join(work, "text.txt"), "w") as f:
        f.write("\n".join(slurp(os.path.join(ROOT, "data", "kjv.txt"), "r").splitlines()[:400]) + "\n")
    with open(env.cfg, "w") as f:
        f.write("H 16\nI 24\nL 2\nN 4\n")
    # 931,698 parameters, [488,928, 900,872) in the two layers: on 3 ranks the
    # shards are 327,680 long, and the boundary at 655,360 is in the layers.
    with open(env.wide_cfg, "w") as f:
        f.write("H 16\nI 4096\nL 2\nN 4\n")
    ok(run([os.path.join(ROOT, "data_prep"), "pretrain", "--vocab", VOCAB, "--seq", "32", "--out", env.shards,
            "--val-fraction", "0.2", os.path.join(work, "text.txt")]), "data_prep pretrain")
    checks = [
        ("a", "2 ranks x 1 micro-batch = 1 process x 2", test_two_ranks),
        ("b", "3 ranks = 1 process, every rank alike, run to run", test_three_ranks),
        ("c", "resume across world sizes", test_resume_across_world_sizes),
        ("d", "kill -9 of one rank", test_kill_one_rank),
        ("e", "SIGUSR1 and SIGTERM on mpirun, SIGUSR1 to one rank", test_signals),
        ("f", "a hung rank and --timeout", test_hung_rank),
        ("g", "fine-tuning, 2 ranks = 1 process", test_finetune),
        ("h", "bad input", test_bad_input),
    ]
    for letter, name, fn in checks:
        if letter in args.only:
            s.check("(%s) %s" % (letter, name), lambda fn=fn: fn(env))
    print("test_mpi: %d passed, %d failed, %d skipped (%.1f s)" % (s.passed, s.failed, s.skipped,
                                                                   time.time() - start))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
