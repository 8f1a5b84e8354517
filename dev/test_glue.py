#!/usr/bin/env python3
"""Tests dev/glue.sh as a user runs it, on the GLUE-layout fixtures of
test/data/glue and a tiny checkpoint made by a few steps of `bigs pretrain`:

  (a) relative paths everywhere (the script, --glue, --ckpt, --out, --bigs),
      a missing train split (QQP: noted, skipped, the rest run, exit 1), the
      fine-tuning flags passed through, the results table (task, split,
      metric), WNLI as class 0 with no training file, AX predicted
      by the MNLI model, every submission file's rows against the fixture's
      test indices and label names, and the zip;
  (b) the missing split restored and run alone: all eleven files in the zip;
  (c) --mnli: MNLI evaluated and predicted with that model, not fine-tuned;
  (d) a --seq that is not the checkpoint's names the flag to pass, and so
      does bigs for a task file of another T;
  (e) `bigs predict` on the fine-tuned models: no submission file from a
      split with labels; --probs (full precision, summing to 1) gives the
      metrics `bigs eval` prints (recomputed with dev/glue_metrics.py from the
      fixture's gold labels) and the submission's predictions; a replaced
      submission file is said so;
  (f) without MNLI data: --tasks rte alone is skipped (exit 1) with a
      message that names --from-pretrained; with it, RTE is fine-tuned from
      --ckpt with a warning that its numbers are not the paper's, and the
      run exits 0 (the zip's listing still says it is incomplete); a named
      task that fails beside it (MRPC without its folder) makes it exit 1.

    /usr/bin/python3 dev/test_glue.py [--bigs build/bigs_cpu] [--workdir build/test_glue]

Prints one line per check and a summary "N passed, N failed"; exits 1 on any
failure.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import glue_metrics  # noqa: E402
from testlib import Suite, expect  # noqa: E402

FIXTURES = os.path.join(ROOT, "test", "data", "glue")
VOCAB = os.path.join(ROOT, "data", "bert-base-uncased-vocab.txt")
T = 32
ELEVEN = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-m", "MNLI-mm", "QNLI", "RTE", "WNLI", "AX"]
# submission file -> (fixture test file, its index column, the label names a prediction may take)
BINARY, MNLI, NLI = ["0", "1"], ["entailment", "neutral", "contradiction"], ["entailment", "not_entailment"]
TESTS = {
    "CoLA": ("CoLA/test.tsv", "index", BINARY), "SST-2": ("SST-2/test.tsv", "index", BINARY),
    "MRPC": ("MRPC/test.tsv", "index", BINARY), "STS-B": ("STS-B/test.tsv", "index", None),
    "QQP": ("QQP/test.tsv", "id", BINARY), "MNLI-m": ("MNLI/test_matched.tsv", "index", MNLI),
    "MNLI-mm": ("MNLI/test_mismatched.tsv", "index", MNLI), "QNLI": ("QNLI/test.tsv", "index", NLI),
    "RTE": ("RTE/test.tsv", "index", NLI), "WNLI": ("WNLI/test.tsv", "index", BINARY),
    "AX": ("diagnostic/AX.tsv", "index", MNLI),
}
# (task, split) -> the metric names its row must show; qqp's train split is removed in (a)
DEV_ROWS = {("cola", "dev"): ["mcc", "accuracy"], ("sst2", "dev"): ["accuracy"],
            ("mnli", "dev_matched"): ["accuracy"], ("mnli", "dev_mismatched"): ["accuracy"],
            ("qnli", "dev"): ["accuracy"], ("mrpc", "dev"): ["f1", "accuracy"],
            ("stsb", "dev"): ["pearson", "spearman"], ("rte", "dev"): ["accuracy"], ("wnli", "dev"): ["accuracy"]}
FINETUNED = ["cola", "sst2", "mnli", "qnli", "mrpc", "stsb", "rte"]


def tsv(path):
    """Rows of a GLUE TSV as lists of fields (tabs only, no quoting), header first."""
    with open(path, encoding="utf-8-sig") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def column(path, name):
    rows = tsv(path)
    i = rows[0].index(name)
    return [r[i] for r in rows[1:] if len(r) == len(rows[0])]


def run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def glue_sh(work, *args):
    """dev/glue.sh from the work folder, called by its relative path, with relative arguments."""
    r = run(["bash", os.path.relpath(os.path.join(HERE, "glue.sh"), work)] + list(args), work)
    return r.returncode, r.stdout + r.stderr


def results_table(log):
    """{(task, split): result text} from the table glue.sh prints last."""
    lines = log.split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("GLUE results")) + 2
    rows = {}
    for ln in lines[start:]:
        if not ln.strip():
            break
        task, split, _examples, result = ln.split(None, 3)
        rows[(task, split)] = result
    return rows


def check_submission_file(name, path):
    """Header, indices (the fixture's, in order) and values of one submission file."""
    rows = tsv(path)
    expect(rows[0] == ["index", "prediction"], "%s: header %r" % (name, rows[0]))
    fixture, index_col, labels = TESTS[name]
    want = sorted(int(i) for i in column(os.path.join(FIXTURES, fixture), index_col))
    expect([int(r[0]) for r in rows[1:]] == want, "%s: indices %s, the fixture has %s" % (
        name, [r[0] for r in rows[1:]], want))
    for r in rows[1:]:
        if labels is None:
            expect(0.0 <= float(r[1]) <= 5.0, "%s: score %r outside 0..5" % (name, r[1]))
        else:
            expect(r[1] in labels, "%s: prediction %r is not one of %s" % (name, r[1], labels))
    return rows


def check_zip(path, folder, names):
    with zipfile.ZipFile(path) as z:
        expect(sorted(z.namelist()) == sorted(n + ".tsv" for n in names), "%s holds %s" % (path, z.namelist()))
        for n in names:
            with open(os.path.join(folder, n + ".tsv"), "rb") as f:
                expect(z.read(n + ".tsv") == f.read(), "%s: %s.tsv differs from the folder's" % (path, n))


def make_checkpoint(bigs, work):
    """A tiny pretrained checkpoint with BERT's vocabulary: two steps on a few KJV chapters."""
    with open(os.path.join(ROOT, "data", "kjv.txt"), encoding="utf-8") as f:
        text = f.read(20000)
    with open(os.path.join(work, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(work, "tiny.cfg"), "w") as f:
        f.write("H 16\nI 24\nL 1\nN 4\n")
    r = run([os.path.join(ROOT, "data_prep"), "pretrain", "--vocab", VOCAB, "--seq", str(T), "--out", "shards",
             "corpus.txt"], work)
    expect(r.returncode == 0, "data_prep pretrain failed: " + r.stderr)
    r = run([bigs, "pretrain", "--device", "cpu", "--config", "tiny.cfg", "--train", "shards/train_*.bin",
             "--batch", "2", "--micro-batch", "2", "--steps", "2", "--warmup", "1", "--eval-every", "0",
             "--save-every", "0", "--out", "ckpt"], work)
    expect(r.returncode == 0, "bigs pretrain failed: " + r.stderr)


def test_end_to_end(bigs, work):
    """(a)"""
    shutil.copytree(FIXTURES, os.path.join(work, "data", "glue"))
    os.remove(os.path.join(work, "data", "glue", "QQP", "train.tsv"))
    os.remove(os.path.join(work, "data", "glue", "WNLI", "train.tsv"))  # WNLI's submission needs no training file
    rc, log = glue_sh(work, "--glue", "data/glue", "--ckpt", "ckpt/model.bin", "--out", "runs/glue",
                      "--bigs", os.path.relpath(bigs, work), "--epochs", "1", "--batch", "2", "--lr", "3e-4",
                      "--seed", "7", "--device", "cpu", "--threads", "1", "--precision", "fp32")
    with open(os.path.join(work, "glue_a.log"), "w") as f:
        f.write(log)
    expect(rc == 1, "exit %d with a task skipped (want 1); log in glue_a.log" % rc)
    expect("qqp: no train split" in log, "the missing QQP train split is not noted")
    # The fine-tuning flags reach every `bigs finetune` (its settings table, wider than glue.sh's).
    for flag, value in (("epochs", "1"), ("batch", "2"), ("lr", "0.0003"), ("seed", "7"), ("threads", "1"),
                        ("device", "cpu"), ("precision", "fp32")):
        n = len(re.findall(r"^  %s {12,}%s$" % (flag, re.escape(value)), log, re.M))
        expect(n == len(FINETUNED), "--%s %s reached %d of %d fine-tunings" % (flag, value, n, len(FINETUNED)))
    rows = results_table(log)
    for key, metrics in DEV_ROWS.items():
        expect(key in rows, "no results row for %s %s: %s" % (key + (rows,)))
        for m in metrics:
            expect(re.search(r"\b%s [0-9.-]+" % m, rows[key]), "%s %s: no %s in %r" % (key + (m, rows[key])))
    expect("no train split" in rows.get(("qqp", "-"), ""), "no qqp row saying why: %s" % rows)
    # WNLI: class 0 (not_entailment), the class of BERT's 65.1 on test, whatever the training labels say (the
    # fixture's are all 1), and its dev accuracy.
    majority = "0"
    dev = column(os.path.join(FIXTURES, "WNLI", "dev.tsv"), "label")
    want = "accuracy %.4f (class %s)" % (dev.count(majority) / len(dev), majority)
    expect(rows[("wnli", "dev")] == want, "wnli row %r, want %r" % (rows[("wnli", "dev")], want))
    sub = os.path.join(work, "runs", "glue", "submission")
    made = [n for n in ELEVEN if n != "QQP"]
    expect(sorted(os.listdir(sub)) == sorted(n + ".tsv" for n in made), "submission folder: %s" % os.listdir(sub))
    for n in made:
        rows_n = check_submission_file(n, os.path.join(sub, n + ".tsv"))
        if n == "WNLI":
            expect(all(r[1] == majority for r in rows_n[1:]), "WNLI.tsv is not all %s" % majority)
    expect(re.search(r"QQP\.tsv\s+NOT MADE: qqp: no train split", log), "the listing does not name QQP.tsv")
    check_zip(os.path.join(work, "runs", "glue", "submission.zip"), sub, made)
    # AX is the MNLI model's prediction: the same file from that checkpoint directly.
    r = run([bigs, "predict", "--device", "cpu", "--task", "ax", "--ckpt", "runs/glue/mnli/run/best.bin", "--test",
             "runs/glue/ax/data/ax_test.bin", "--out", "ax_direct"], work)
    expect(r.returncode == 0, "bigs predict --task ax: " + r.stderr)
    with open(os.path.join(work, "ax_direct", "AX.tsv")) as a, open(os.path.join(sub, "AX.tsv")) as b:
        expect(a.read() == b.read(), "AX.tsv is not the MNLI model's prediction")
    return "10 of 11 files, QQP noted; wnli %s" % rows[("wnli", "dev")]


def test_all_eleven(bigs, work):
    """(b)"""
    shutil.copy(os.path.join(FIXTURES, "QQP", "train.tsv"), os.path.join(work, "data", "glue", "QQP"))
    rc, log = glue_sh(work, "--glue", "data/glue", "--ckpt", "ckpt/model.bin", "--out", "runs/glue", "--bigs", bigs,
                      "--tasks", "qqp", "--epochs", "1", "--batch", "2", "--device", "cpu", "--threads", "1")
    with open(os.path.join(work, "glue_b.log"), "w") as f:
        f.write(log)
    expect(rc == 0, "exit %d (want 0); log in glue_b.log" % rc)
    expect(re.search(r"QQP\.tsv\s+made now", log) and re.search(r"CoLA\.tsv\s+from an earlier run", log),
           "the listing does not say which files are new: see glue_b.log")
    expect(re.search(r"\bqqp\s+dev\s+\d+\s+f1 [0-9.]+\s+accuracy [0-9.]+", log), "no qqp dev row")
    sub = os.path.join(work, "runs", "glue", "submission")
    check_submission_file("QQP", os.path.join(sub, "QQP.tsv"))
    check_zip(os.path.join(work, "runs", "glue", "submission.zip"), sub, ELEVEN)
    return "the zip holds all 11 files"


def test_mnli_flag(bigs, work):
    """(c)"""
    rc, log = glue_sh(work, "--glue", "data/glue", "--ckpt", "ckpt/model.bin", "--mnli", "runs/glue/mnli/run/best.bin",
                      "--out", "runs/glue_c", "--tasks", "mnli rte ax", "--bigs", bigs, "--epochs", "1", "--batch",
                      "2", "--device", "cpu", "--threads", "1")
    with open(os.path.join(work, "glue_c.log"), "w") as f:
        f.write(log)
    expect(rc == 0, "exit %d (want 0); log in glue_c.log" % rc)
    expect(not os.path.exists(os.path.join(work, "runs", "glue_c", "mnli", "run")), "MNLI was fine-tuned anyway")
    rows = results_table(log)
    expect(("mnli", "dev_matched") in rows and ("rte", "dev") in rows, "rows: %s" % rows)
    for n in ("MNLI-m", "MNLI-mm", "AX"):  # the same model as in (a): the same predictions
        with open(os.path.join(work, "runs", "glue", "submission", n + ".tsv")) as a, \
                open(os.path.join(work, "runs", "glue_c", "submission", n + ".tsv")) as b:
            expect(a.read() == b.read(), "%s.tsv differs from the one the same MNLI model made in (a)" % n)
    return "mnli %s" % rows[("mnli", "dev_matched")]


def test_seq_mismatch(bigs, work):
    """(d)"""
    rc, log = glue_sh(work, "--glue", "data/glue", "--ckpt", "ckpt/model.bin", "--seq", "64", "--bigs", bigs)
    expect(rc == 2, "exit %d (want 2): %s" % (rc, log))
    expect("--seq %d" % T in log, "the message does not say to pass --seq %d: %s" % (T, log))
    return log.strip().split("\n")[-1]


def test_seq_in_bigs(bigs, work):
    """(d) bigs itself, on a task file of another T."""
    r = run([os.path.join(ROOT, "data_prep"), "glue", "--task", "rte", "--vocab", VOCAB, "--seq", "16", "--data-dir",
             "data/glue/RTE", "--out", "rte16"], work)
    expect(r.returncode == 0, r.stderr)
    r = run([bigs, "finetune", "--device", "cpu", "--task", "rte", "--init", "ckpt/model.bin", "--train",
             "rte16/rte_train.bin", "--dev", "rte16/rte_dev.bin", "--out", "rte16/run"], work)
    expect(r.returncode != 0 and "dev/glue.sh" in r.stderr and "--seq %d" % T in r.stderr,
           "exit %d; the message does not name dev/glue.sh's --seq %d: %s" % (r.returncode, T, r.stderr))
    return r.stderr.strip()


# task -> (dev TSV, label column (a header name; CoLA: column 1 of a file without header), label names)
GOLD = {"cola": ("CoLA/dev.tsv", 1, None), "mrpc": ("MRPC/dev.tsv", "Quality", None),
        "stsb": ("STS-B/dev.tsv", "score", None), "mnli": ("MNLI/dev_matched.tsv", "gold_label", MNLI),
        "rte": ("RTE/dev.tsv", "label", NLI)}


def gold_by_row(task):
    """{0-based data row: gold value} of a fixture dev file (the index bigs writes for dev splits)."""
    path, col, names = GOLD[task]
    rows = tsv(os.path.join(FIXTURES, path))
    if isinstance(col, str):
        col, rows = rows[0].index(col), rows[1:]
    gold = {}
    for i, r in enumerate(rows):
        if len(r) > col and (names is None or r[col] in names):
            gold[i] = float(names.index(r[col])) if names else float(r[col])
    return gold


def test_predict(bigs, work):
    """(e)"""
    data = lambda task, split: "runs/glue/%s/data/%s_%s.bin" % (task, task, split)  # noqa: E731
    model = lambda task: "runs/glue/%s/run/best.bin" % task  # noqa: E731
    r = run([bigs, "predict", "--device", "cpu", "--task", "rte", "--ckpt", model("rte"), "--test", data("rte", "dev"),
             "--out", "dev_submission"], work)
    expect(r.returncode == 1 and "with labels" in r.stderr and "bigs eval" in r.stderr,
           "predict on a dev split: exit %d: %s" % (r.returncode, r.stdout + r.stderr))
    expect(not os.path.exists(os.path.join(work, "dev_submission", "RTE.tsv")), "a submission file from a dev split")
    done = []
    for task, split in (("cola", "dev"), ("mrpc", "dev"), ("stsb", "dev"), ("mnli", "dev_matched"), ("rte", "dev")):
        probs = "probs_%s.tsv" % task
        r = run([bigs, "predict", "--device", "cpu", "--task", task, "--ckpt", model(task), "--test", data(task, split),
                 "--probs", probs, "--out", "dev_submission"], work)
        expect(r.returncode == 0, "predict --probs %s: %s" % (task, r.stderr))
        expect(not os.path.exists(os.path.join(work, "dev_submission")), "%s: a submission from a dev split" % task)
        rows = tsv(os.path.join(work, probs))
        values = [[float(x) for x in row[1:]] for row in rows[1:]]
        if task == "stsb":
            expect(rows[0] == ["index", "score"], "stsb header %s" % rows[0])
            pred = [v[0] for v in values]
        else:
            for v in values:
                expect(abs(sum(v) - 1) < 1e-12, "%s: probabilities sum to %.17g" % (task, sum(v)))
            pred = [float(max(range(len(v)), key=v.__getitem__)) for v in values]
        # full precision: a float score as %.9g, the probabilities (doubles) as %.17g
        digits = max(len(x.split("e")[0].replace("-", "").replace(".", "").lstrip("0")) for row in rows[1:]
                     for x in row[1:])
        expect(digits >= (8 if task == "stsb" else 15), "%s: at most %d digits: %s" % (task, digits, rows[1:]))
        gold_rows = gold_by_row(task)
        gold = [gold_rows[int(row[0])] for row in rows[1:]]
        want = dict(glue_metrics.task_metrics(task, pred, gold))
        r = run([bigs, "eval", "--device", "cpu", "--task", task, "--ckpt", model(task), "--dev", data(task, split)],
                work)
        expect(r.returncode == 0, r.stderr)
        got = dict(re.findall(r"\b([a-z][a-z0-9]*) (-?[0-9.]+)", r.stdout.split(":", 1)[1]))
        for name, v in want.items():
            expect(abs(float(got[name]) - v) <= 5e-5, "%s %s: eval prints %s, --probs gives %.6f" % (
                task, name, got[name], v))
        done.append("%s %s" % (task, " ".join("%s %.4f" % kv for kv in want.items())))
    # A test split: the submission's predictions are the probabilities' argmax; a second run says it replaced it.
    for attempt in range(2):
        r = run([bigs, "predict", "--device", "cpu", "--task", "mnli", "--ckpt", model("mnli"), "--test",
                 data("mnli", "test_matched"), "--probs", "probs_test.tsv", "--out", "test_submission"], work)
        expect(r.returncode == 0, r.stderr)
        expect(("replaced" in r.stdout) == (attempt == 1), "run %d: %s" % (attempt + 1, r.stdout))
    probs = tsv(os.path.join(work, "probs_test.tsv"))
    sub = tsv(os.path.join(work, "test_submission", "MNLI-m.tsv"))
    expect(probs[0] == ["index"] + MNLI, "header %s" % probs[0])
    for p, s_ in zip(probs[1:], sub[1:]):
        v = [float(x) for x in p[1:]]
        expect(p[0] == s_[0] and MNLI[max(range(3), key=v.__getitem__)] == s_[1], "%s vs %s" % (p, s_))
    return "; ".join(done)


def test_from_pretrained(bigs, work):
    """(f)"""
    only_rte = os.path.join(work, "data", "glue_rte")
    os.makedirs(only_rte, exist_ok=True)
    shutil.copytree(os.path.join(FIXTURES, "RTE"), os.path.join(only_rte, "RTE"))
    common = ["--glue", "data/glue_rte", "--ckpt", "ckpt/model.bin", "--bigs", bigs, "--epochs", "1", "--batch", "2",
              "--device", "cpu", "--threads", "1"]
    rc, log = glue_sh(work, *common, "--out", "runs/glue_f1", "--tasks", "rte")
    with open(os.path.join(work, "glue_f1.log"), "w") as f:
        f.write(log)
    expect(rc == 1 and "needs the MNLI model" in log and "--from-pretrained" in log,
           "without MNLI and without --from-pretrained: exit %d (want 1 and a message naming the flag); "
           "log in glue_f1.log" % rc)
    rc, log = glue_sh(work, *common, "--out", "runs/glue_f2", "--tasks", "rte", "--from-pretrained")
    with open(os.path.join(work, "glue_f2.log"), "w") as f:
        f.write(log)
    expect(rc == 0, "--tasks rte --from-pretrained: exit %d (want 0); log in glue_f2.log" % rc)
    expect(re.search(r"warning: rte .*not comparable with the paper's", log), "no warning that the numbers are not "
           "the paper's; log in glue_f2.log")
    expect("fine-tuning rte from ckpt/model.bin" in log, "RTE not fine-tuned from --ckpt; log in glue_f2.log")
    rows = results_table(log)
    expect(re.search(r"accuracy [0-9.]+.*\(from the pretrained checkpoint", rows.get(("rte", "dev"), "")),
           "the rte row does not say where it started: %s" % rows)
    sub = os.path.join(work, "runs", "glue_f2", "submission")
    check_submission_file("RTE", os.path.join(sub, "RTE.tsv"))
    check_zip(os.path.join(work, "runs", "glue_f2", "submission.zip"), sub, ["RTE"])
    expect(re.search(r"submission\.zip: 1 of 11 files \(incomplete", log), "no note that the zip is incomplete")
    rc, log = glue_sh(work, *common, "--out", "runs/glue_f3", "--tasks", "rte mrpc", "--from-pretrained")
    with open(os.path.join(work, "glue_f3.log"), "w") as f:
        f.write(log)
    expect(rc == 1 and "mrpc: no folder" in log, "MRPC without its folder: exit %d (want 1); log in glue_f3.log" % rc)
    expect(os.path.exists(os.path.join(work, "runs", "glue_f3", "submission", "RTE.tsv")), "RTE not made beside it")
    return "refused without the flag; with it exit 0, warned, %s; a failed MRPC beside it: exit 1" % rows[("rte", "dev")]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bigs", default="build/bigs_cpu", help="the CPU binary (default %(default)s)")
    parser.add_argument("--workdir", default="build/test_glue", help="scratch directory (default %(default)s)")
    args = parser.parse_args(argv)
    bigs, work = os.path.abspath(args.bigs), os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.time()
    s = Suite()
    s.check("a tiny checkpoint from bigs pretrain", lambda: make_checkpoint(bigs, work))
    s.check("(a) relative paths, a missing train split, WNLI, AX, the zip", lambda: test_end_to_end(bigs, work))
    s.check("(b) all eleven files", lambda: test_all_eleven(bigs, work))
    s.check("(c) --mnli", lambda: test_mnli_flag(bigs, work))
    s.check("(d) --seq that is not the checkpoint's", lambda: test_seq_mismatch(bigs, work))
    s.check("(d) bigs on a task file of another T", lambda: test_seq_in_bigs(bigs, work))
    s.check("(e) bigs predict: labelled splits, --probs against bigs eval", lambda: test_predict(bigs, work))
    s.check("(f) --from-pretrained: MRPC, STS-B, RTE without MNLI", lambda: test_from_pretrained(bigs, work))
    print("test_glue: %d passed, %d failed, %d skipped (%.1f s)" % (s.passed, s.failed, s.skipped,
                                                                   time.time() - start))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
