#!/usr/bin/env python3
"""Tests dev/import_hdf5.py on small files written here in the exact layout
of IntelLabs/academic-budget-bert's dataset/data/create_pretraining_data.py
(datasets, dtypes, gzip, 0-padded positions and ids, 80/10/10 replacement,
with and without next_sentence_labels, a second segment):

  (a) the shards hold the original sequences, bit for bit, with the header of
      formats.h (packed here from the README's table), for inputs read in
      one piece and in chunks of two rows;
  (b) `data_prep inspect` accepts them and `bigs pretrain` trains a step on them;
  (c) other layouts and broken rows are errors that name the problem, and
      leave no shard behind.

    /usr/bin/python3 dev/test_import_hdf5.py [--bigs build/bigs_cpu] [--workdir build/test_import_hdf5]
"""

import argparse
import contextlib
import io
import os
import shutil
import struct
import subprocess
import sys
import time

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import import_hdf5  # noqa: E402
from testlib import Suite, expect  # noqa: E402

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V, T = 100, 16


def make_sequences(rng, n, two_segments):
    """(tokens, segment ids) of n sequences: [CLS] a [SEP] (b [SEP]), lengths 3..T, [UNK] now and then."""
    out = []
    for i in range(n):
        length = T if i == 0 else int(rng.integers(3, T + 1))
        body = [int(x) if rng.random() > 0.1 else UNK for x in rng.integers(5, V, length - 2)]
        toks = [CLS] + body + [SEP]
        seg = [0] * length
        if two_segments and length >= 5:
            cut = int(rng.integers(2, length - 2))
            toks[cut] = SEP
            seg = [0] * (cut + 1) + [1] * (length - cut - 1)
        out.append((toks, seg))
    return out


def mask_like_abb(toks, P, rng, replace_with=None):
    """academic-budget-bert's create_masked_lm_predictions: round(15% of the
    tokens), at most P, never [CLS] or [SEP]; 80% [MASK], 10% kept, 10% any
    vocabulary word (special tokens included); positions ascending."""
    cand = [i for i, t in enumerate(toks) if t not in (CLS, SEP)]
    rng.shuffle(cand)
    k = min(P, max(1, int(round(len(toks) * 0.15))))
    chosen = sorted(cand[:k])
    masked = list(toks)
    for i in chosen:
        if rng.random() < 0.8:
            masked[i] = MASK
        elif rng.random() < 0.5:
            pass
        else:
            masked[i] = int(rng.integers(0, V))
    if replace_with is not None:  # force one random replacement (e.g. [PAD]) inside the sequence
        masked[chosen[0]] = replace_with
    return masked, chosen, [toks[i] for i in chosen]


def write_abb(path, seqs, P, rng, nsp):
    """One shard as write_instance_to_example_file writes it."""
    n = len(seqs)
    f = {k: np.zeros((n, T), np.int32) for k in ("input_ids", "input_mask", "segment_ids")}
    f.update({k: np.zeros((n, P), np.int32) for k in ("masked_lm_positions", "masked_lm_ids")})
    for r, (toks, seg) in enumerate(seqs):
        masked, pos, orig = mask_like_abb(toks, P, rng, replace_with=PAD if r == 1 else None)
        f["input_ids"][r, :len(toks)] = masked
        f["input_mask"][r, :len(toks)] = 1
        f["segment_ids"][r, :len(toks)] = seg
        f["masked_lm_positions"][r, :len(pos)] = pos
        f["masked_lm_ids"][r, :len(pos)] = orig
    with h5py.File(path, "w") as h:
        for k, dtype in (("input_ids", "i4"), ("input_mask", "i1"), ("segment_ids", "i1"),
                         ("masked_lm_positions", "i4"), ("masked_lm_ids", "i4")):
            h.create_dataset(k, data=f[k], dtype=dtype, compression="gzip")
        if nsp:
            h.create_dataset("next_sentence_labels", data=rng.integers(0, 2, n), dtype="i1", compression="gzip")
    return f


def expected_shard(seqs):
    """The bytes of a bigs shard holding seqs (README "Pretraining shard")."""
    head = struct.pack("<IIIIQIIIII", 0x44534742, 1, T, V, len(seqs), PAD, CLS, SEP, MASK, UNK).ljust(256, b"\0")
    body = b"".join(np.asarray(t + [PAD] * (T - len(t)), "<u2").tobytes() for t, _ in seqs)
    return head + body


def run_import(args, chunk=None):
    """import_hdf5.main in this process (chunk: rows per read); returns (rc, output)."""
    buf = io.StringIO()
    old = import_hdf5.CHUNK
    import_hdf5.CHUNK = chunk or old
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = import_hdf5.main(args)
    finally:
        import_hdf5.CHUNK = old
    return rc, buf.getvalue()


class Files:
    def __init__(self, work):
        self.work = work
        rng = np.random.default_rng(5)
        self.vocab = os.path.join(work, "vocab.txt")
        with open(self.vocab, "w") as f:
            f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + ["w%d" % i for i in range(5, V)]) + "\n")
        self.seqs = {"train_shard_0.hdf5": make_sequences(rng, 7, False),  # --no_nsp, as the BiGS corpus
                     "train_shard_1.hdf5": make_sequences(rng, 5, True),   # with NSP segments
                     "test_shard_0.hdf5": make_sequences(rng, 3, False)}
        self.paths = {}
        for name, seqs in self.seqs.items():
            self.paths[name] = os.path.join(work, name)
            # P = 2 fills every position of the longer sequences (no 0 ends them)
            write_abb(self.paths[name], seqs, {"train_shard_0.hdf5": 2, "train_shard_1.hdf5": 4}.get(name, 3), rng,
                      "shard_1" in name)


def test_restore(files):
    """(a)"""
    out = os.path.join(files.work, "shards")
    order = ["train_shard_0.hdf5", "train_shard_1.hdf5", "test_shard_0.hdf5"]
    r = subprocess.run([sys.executable, os.path.join(HERE, "import_hdf5.py"), "--vocab", files.vocab, "--out", out]
                       + [files.paths[n] for n in order], capture_output=True, text=True, timeout=120)
    expect(r.returncode == 0, "import failed: " + r.stdout + r.stderr)
    expect(sorted(os.listdir(out)) == ["train_000000.bin", "train_000001.bin", "val_000000.bin"],
           "shards: %s" % os.listdir(out))
    for shard, name in (("train_000000.bin", order[0]), ("train_000001.bin", order[1]), ("val_000000.bin", order[2])):
        with open(os.path.join(out, shard), "rb") as f:
            expect(f.read() == expected_shard(files.seqs[name]), "%s is not the original %s" % (shard, name))
    second = sum(1 for _, s in files.seqs["train_shard_1.hdf5"] if 1 in s)
    expect("note: %d sequences have a second segment" % second in r.stdout, "no note on segments: " + r.stdout)
    chunked = os.path.join(files.work, "chunked")
    rc, log = run_import(["--vocab", files.vocab, "--out", chunked] + [files.paths[n] for n in order], chunk=2)
    expect(rc == 0, "chunked import failed: " + log)
    for shard in os.listdir(out):
        with open(os.path.join(out, shard), "rb") as a, open(os.path.join(chunked, shard), "rb") as b:
            expect(a.read() == b.read(), "%s differs when read two rows at a time" % shard)
    return "%d sequences restored exactly" % sum(len(s) for s in files.seqs.values())


def test_bigs_reads(files, bigs):
    """(b)"""
    out = os.path.join(files.work, "shards")
    for shard in ("train_000000.bin", "val_000000.bin"):
        r = subprocess.run([os.path.join(ROOT, "data_prep"), "inspect", os.path.join(out, shard), "--vocab",
                            files.vocab], capture_output=True, text=True, timeout=60)
        expect(r.returncode == 0, "data_prep inspect %s: %s" % (shard, r.stdout + r.stderr))
    cfg = os.path.join(files.work, "tiny.cfg")
    with open(cfg, "w") as f:
        f.write("H 8\nI 8\nL 1\nN 2\n")
    r = subprocess.run([bigs, "pretrain", "--device", "cpu", "--config", cfg, "--train", os.path.join(out, "train_*.bin"),
                        "--val", os.path.join(out, "val_*.bin"), "--batch", "4", "--micro-batch", "4", "--steps", "1",
                        "--warmup", "0", "--eval-every", "0", "--save-every", "0", "--out",
                        os.path.join(files.work, "run")], capture_output=True, text=True, timeout=120)
    expect(r.returncode == 0, "bigs pretrain on the imported shards: " + r.stdout[-500:] + r.stderr)
    return "data_prep inspect and one bigs pretrain step"


def test_errors(files):
    """(c)"""
    src = files.paths["train_shard_0.hdf5"]
    with h5py.File(src, "r") as h:
        base = {k: h[k][:] for k in h.keys()}

    def variant(name, change):
        data = {k: v.copy() for k, v in base.items()}
        change(data)
        path = os.path.join(files.work, "bad", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with h5py.File(path, "w") as h:
            for k, v in data.items():
                h.create_dataset(k, data=v)
        return path

    def set_row(k, r, values):
        def change(d):
            d[k][r] = values
        return change

    cases = [
        ("missing masked_lm_ids", lambda d: d.pop("masked_lm_ids"), "missing masked_lm_ids"),
        ("one stacked array", lambda d: [d.clear(), d.update(inputs=np.zeros((5, 7), np.int32))],
         "unexpected inputs"),
        ("float ids", lambda d: d.update(input_ids=d["input_ids"].astype(np.float32)), "not an integer dataset"),
        ("positions of another length", lambda d: d.update(masked_lm_ids=d["masked_lm_ids"][:, :1]),
         "masked_lm_ids has shape"),
        ("a hole in the mask", lambda d: d["input_mask"].__setitem__((2, 1), 0), "row 2: input_mask is not one run"),
        ("no [SEP] at the end", lambda d: d["input_ids"].__setitem__((0, T - 1), 7),
         "row 0: input_ids does not end with [SEP]"),
        ("an id outside the vocabulary", lambda d: d["input_ids"].__setitem__((3, 1), V), "row 3: input_ids outside"),
        ("a position past the end", lambda d: d["masked_lm_positions"].__setitem__((4, 0), T - 1),
         "row 4: a masked position outside"),
        ("positions out of order", set_row("masked_lm_positions", 0, [5, 3]),
         "row 0: masked_lm_positions are not ascending"),
    ]
    for label, change, message in cases:
        path = variant("train_%s.hdf5" % label.replace(" ", "_"), change)
        out = os.path.join(files.work, "bad_out")
        shutil.rmtree(out, ignore_errors=True)
        rc, log = run_import(["--vocab", files.vocab, "--out", out, path])
        expect(rc == 1, "%s: exit %d: %s" % (label, rc, log))
        expect(message in log, "%s: the message does not say %r: %s" % (label, message, log))
        expect(not os.path.isdir(out) or not os.listdir(out), "%s: left %s" % (label, os.listdir(out)))
    plain = os.path.join(files.work, "bad", "shard.hdf5")
    shutil.copy(src, plain)
    rc, log = run_import(["--vocab", files.vocab, "--out", os.path.join(files.work, "bad_out"), plain])
    expect(rc == 1 and "--split" in log, "a name without train/test: exit %d: %s" % (rc, log))
    return "%d bad layouts and rows reported" % (len(cases) + 1)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bigs", default="build/bigs_cpu", help="the CPU binary (default %(default)s)")
    parser.add_argument("--workdir", default="build/test_import_hdf5", help="scratch directory (default %(default)s)")
    args = parser.parse_args(argv)
    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.time()
    s = Suite()
    files = Files(work)
    s.check("(a) the original sequences, in one piece and in chunks", lambda: test_restore(files))
    s.check("(b) data_prep and bigs read the shards", lambda: test_bigs_reads(files, os.path.abspath(args.bigs)))
    s.check("(c) other layouts are errors", lambda: test_errors(files))
    print("test_import_hdf5: %d passed, %d failed, %d skipped (%.1f s)" % (s.passed, s.failed, s.skipped,
                                                                          time.time() - start))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
