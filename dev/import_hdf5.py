#!/usr/bin/env python3
"""Import pretraining shards in the NVIDIA / academic-budget-bert hdf5 layout
(the layout of the BiGS authors' published corpus) as bigs pretraining shards.

    /usr/bin/python3 dev/import_hdf5.py --vocab data/bert-base-uncased-vocab.txt --out DIR FILE.hdf5 ...

The layout, as IntelLabs/academic-budget-bert writes it
(dataset/data/create_pretraining_data.py, write_instance_to_example_file) and
reads it (pretraining/dataset/pretraining_dataset.py; jxiw/BiGS
bigs_dataset/pretraining_dataset.py reads the same): one hdf5 file per shard,
named {train,test}_shard_{i}.hdf5, with the datasets

    input_ids            (N, T) int32   [CLS] tokens [SEP] (tokens [SEP]), then 0 ([PAD]) to T,
                                        the masked positions already replaced (80% [MASK],
                                        10% a random token, 10% kept)
    input_mask           (N, T) int8    1 on the real tokens, then 0
    segment_ids          (N, T) int8    0, or 1 on a second segment (not in --no_nsp files)
    masked_lm_positions  (N, P) int32   the masked positions, ascending, then 0 to P
                                        (position 0 is [CLS], never masked: the first 0 ends them)
    masked_lm_ids        (N, P) int32   the original token at each position, then 0
    next_sentence_labels (N,)   int8    only in files made without --no_nsp; ignored

Each sequence gets its original tokens back from masked_lm_ids, so bigs masks
it afresh every epoch (dynamic masking), and is written as the shard format
wants it: [CLS] ... [SEP], [PAD] to T (README "Pretraining shard"). A second
segment keeps its inner [SEP]; its segment ids are dropped (bigs shards have
no token types; the sequence trains with type 0) and the sequences that had
one are counted. Any other layout (missing or extra datasets, other shapes,
non-integer types, a mask that is not one run of 1s, padding that is not
[PAD], a sequence that does not start with [CLS] and end with [SEP], masked
positions outside the sequence or out of order, ids outside the vocabulary)
is an error that names the file, the dataset and the first bad row.

One output shard per input file: DIR/train_NNNNNN.bin for names containing
"train", DIR/val_NNNNNN.bin for "test" or "valid" (or all of them as --split
says), numbered in the order given. As `data_prep pretrain` does, a run
replaces the shards of an earlier run of the same split in DIR (higher-numbered
leftovers are deleted). Writes NAME.tmp and renames it when complete. Needs
numpy and h5py (Debian's python3-h5py).
"""

import argparse
import glob
import os
import re
import struct
import sys

import numpy as np

SHARD_MAGIC, SHARD_VERSION = 0x44534742, 1
SHARD_HEADER = struct.Struct("<4IQ5I212x")  # bigsc/formats.h ShardHeader
assert SHARD_HEADER.size == 256
REQUIRED = ["input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids"]
OPTIONAL = ["next_sentence_labels"]
CHUNK = 65536  # rows read and checked at a time: memory stays O(CHUNK T)


class LayoutError(Exception):
    pass


def special_ids(vocab_path):
    """(V, {token: id}) of the five special tokens in a BERT vocab.txt."""
    with open(vocab_path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    ids = {}
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        if t not in tokens:
            raise LayoutError("%s has no %s token: use the vocab.txt of the model (bert-large-uncased)" % (
                vocab_path, t))
        ids[t] = tokens.index(t)
    if len(tokens) > 65536:
        raise LayoutError("%s has %d tokens; bigs shards hold uint16 ids (at most 65536)" % (vocab_path, len(tokens)))
    return len(tokens), ids


def open_layout(f, path):
    """Checks the datasets' names, kinds and shapes; returns (N, T, P)."""
    expected = ("expected the academic-budget-bert layout: datasets %s (and optionally %s)" %
                (", ".join(REQUIRED), ", ".join(OPTIONAL)))
    names = sorted(f.keys())
    missing = [k for k in REQUIRED if k not in f]
    extra = [k for k in names if k not in REQUIRED + OPTIONAL]
    if missing or extra:
        raise LayoutError("%s: %s%s; %s" % (
            path, "missing %s" % ", ".join(missing) if missing else "",
            ("; " if missing else "") + "unexpected %s" % ", ".join(extra) if extra else "", expected))
    for k in names:
        d = f[k]
        if not hasattr(d, "dtype") or not np.issubdtype(d.dtype, np.integer):
            raise LayoutError("%s: %s is %s, not an integer dataset; %s" % (
                path, k, getattr(d, "dtype", "a group"), expected))
    n, t = f["input_ids"].shape if f["input_ids"].ndim == 2 else (None, None)
    if n is None:
        raise LayoutError("%s: input_ids has shape %s, expected (sequences, T); %s" % (
            path, f["input_ids"].shape, expected))
    p = f["masked_lm_positions"].shape[1] if f["masked_lm_positions"].ndim == 2 else None
    want = {"input_ids": (n, t), "input_mask": (n, t), "segment_ids": (n, t), "masked_lm_positions": (n, p),
            "masked_lm_ids": (n, p), "next_sentence_labels": (n,)}
    for k in names:
        if f[k].shape != want[k]:
            raise LayoutError("%s: %s has shape %s, expected %s (input_ids is %s); %s" % (
                path, k, f[k].shape, want[k], (n, t), expected))
    if t < 3:
        raise LayoutError("%s: T = %d; a sequence needs at least [CLS], a token and [SEP]" % (path, t))
    return n, t, p


def first_bad(rows_ok, offset):
    return offset + int(np.flatnonzero(~rows_ok)[0])


def restore_chunk(ids, mask, seg, pos, mids, V, sp, path, offset):
    """The original sequences of one chunk of rows, (rows, T) uint16, checked
    row by row; returns (sequences, rows with a second segment, [MASK]s left)."""
    rows, T = ids.shape
    P = pos.shape[1]
    ar = np.arange(T)

    def check(ok, what):
        if not np.all(ok):
            raise LayoutError("%s: row %d: %s" % (path, first_bad(ok, offset), what))

    check(np.all((mask == 0) | (mask == 1), axis=1), "input_mask holds values other than 0 and 1")
    length = mask.sum(axis=1)
    check(np.all(mask == (ar[None, :] < length[:, None]), axis=1),
          "input_mask is not one run of 1s from position 0 followed by 0s")
    check(length >= 3, "fewer than 3 real tokens ([CLS] x [SEP])")
    check(np.all((ids == sp["[PAD]"]) | (mask == 1), axis=1), "input_ids after input_mask's end are not [PAD]")
    check(np.all((ids >= 0) & (ids < V), axis=1), "input_ids outside the vocabulary's %d tokens" % V)
    check(ids[:, 0] == sp["[CLS]"], "input_ids does not start with [CLS]")
    check(ids[np.arange(rows), length - 1] == sp["[SEP]"], "input_ids does not end with [SEP] at input_mask's end")
    check(np.all((seg == 0) | (seg == 1), axis=1), "segment_ids holds values other than 0 and 1")
    # The predictions end at the first 0 position ([CLS] is never masked).
    count = np.where((pos == 0).any(axis=1), (pos == 0).argmax(axis=1), P)
    real = np.arange(P)[None, :] < count[:, None]
    check(np.all(real | ((pos == 0) & (mids == 0)), axis=1),
          "masked_lm_positions / masked_lm_ids are not 0 after the first 0 position")
    check(np.all(~real | ((pos >= 1) & (pos < length[:, None] - 1)), axis=1),
          "a masked position outside the sequence's tokens (between [CLS] and the last [SEP])")
    check(np.all(~real[:, 1:] | (pos[:, 1:] > pos[:, :-1]), axis=1), "masked_lm_positions are not ascending")
    check(np.all(~real | ((mids >= 0) & (mids < V)), axis=1), "masked_lm_ids outside the vocabulary")
    # The writer never picks [CLS] or [SEP] to mask.
    check(np.all(~real | ~np.isin(mids, [sp["[CLS]"], sp["[SEP]"]]), axis=1), "masked_lm_ids holds [CLS] or [SEP]")
    out = ids.astype(np.int64)
    r, j = np.nonzero(real)
    out[r, pos[r, j]] = mids[r, j]
    masks_left = int((out == sp["[MASK]"]).sum())
    return out.astype("<u2"), int((seg == 1).any(axis=1).sum()), masks_left


def import_file(path, dest, V, sp):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise LayoutError("%s: not an hdf5 file (%s)" % (path, e))
    with f:
        n, T, P = open_layout(f, path)
        tmp = dest + ".tmp"
        second, masks_left, predictions = 0, 0, 0
        try:
            with open(tmp, "wb") as out:
                out.write(SHARD_HEADER.pack(SHARD_MAGIC, SHARD_VERSION, T, V, n, sp["[PAD]"], sp["[CLS]"],
                                            sp["[SEP]"], sp["[MASK]"], sp["[UNK]"]))
                for a in range(0, n, CHUNK):
                    b = min(n, a + CHUNK)
                    cols = [np.asarray(f[k][a:b], dtype=np.int64) for k in REQUIRED]
                    seqs, s2, ml = restore_chunk(*cols, V, sp, path, a)
                    out.write(seqs.tobytes())
                    second, masks_left = second + s2, masks_left + ml
                    predictions += int((cols[3] != 0).sum())
        except BaseException:
            os.remove(tmp)  # no half-written shard
            raise
        os.replace(tmp, dest)
    return n, T, P, predictions, second, masks_left


def split_of(path, forced):
    if forced != "auto":
        return forced
    name = os.path.basename(path).lower()
    if "train" in name:
        return "train"
    if "test" in name or "valid" in name:
        return "val"
    raise LayoutError("%s: cannot tell train from validation by its name (train_shard_*, test_shard_*); "
                      "pass --split train or --split val" % path)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("files", nargs="+", help="hdf5 shards")
    parser.add_argument("--vocab", required=True, help="the vocab.txt the ids come from (bert-large-uncased)")
    parser.add_argument("--out", required=True, help="directory for train_NNNNNN.bin / val_NNNNNN.bin")
    parser.add_argument("--split", choices=["auto", "train", "val"], default="auto",
                        help="which shards the files become (default: from each name)")
    args = parser.parse_args(argv)
    try:
        V, sp = special_ids(args.vocab)
        splits = [split_of(p, args.split) for p in args.files]
        os.makedirs(args.out, exist_ok=True)
        written = {"train": 0, "val": 0}
        for path, split in zip(args.files, splits):
            dest = os.path.join(args.out, "%s_%06d.bin" % (split, written[split]))
            n, T, P, predictions, second, masks_left = import_file(path, dest, V, sp)
            written[split] += 1
            print("%s -> %s: %d sequences of T = %d, %d masked tokens restored (at most %d a sequence)" % (
                path, dest, n, T, predictions, P))
            if second:
                print("  note: %d sequences have a second segment (segment_ids 1); bigs shards have no token "
                      "types, they train as type 0" % second)
            if masks_left:
                print("  warning: %d [MASK] tokens remain at positions that masked_lm_positions does not list"
                      % masks_left)
        for split, count in written.items():  # leftovers of an earlier, longer run
            for old in glob.glob(os.path.join(args.out, split + "_*.bin")):
                m = re.fullmatch(split + r"_(\d{6})\.bin", os.path.basename(old))
                if m and int(m.group(1)) >= count and count > 0:
                    os.remove(old)
                    print("removed %s (left by an earlier run)" % old)
    except LayoutError as e:
        print("import_hdf5: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
