#!/usr/bin/env python3
"""Writes the fuzz harnesses' seed corpora, fuzz/corpus/NAME/ (committed; run
this again when a file format changes). Real files, made by the real writers
where there is one: data_prep for shards and task files, bigs pretrain for
checkpoints, convert_hf for the released layouts; each small.

    /usr/bin/python3 dev/fuzz_seeds.py [--bigs build/bigs_cpu] [--data-prep ./data_prep] [--only NAME...]

--only rewrites the named corpora alone (e.g. a new harness's), leaving the
others, and the inputs that fuzzing added to them, as they are.

Needs numpy, torch and crc32c, as dev/convert_hf.py does.
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "dev"))
import convert_hf  # noqa: E402

CORPUS = os.path.join(ROOT, "fuzz", "corpus")
TEXT = ("The beginning of the story.\nIn the beginning God created the heaven and the earth.\n\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
        "Ünïcödé, 中文 text, emoji \U0001F600, tabs\tand  spaces.\n\nA third document.\n")
GLUE = {  # task index in data_prep's glue_tasks() -> its fixture folder, and the splits in order
    0: ("CoLA", ["train.tsv", "dev.tsv", "test.tsv"]), 1: ("SST-2", ["train.tsv", "dev.tsv", "test.tsv"]),
    2: ("MRPC", ["train.tsv", "dev.tsv", "test.tsv"]), 3: ("STS-B", ["train.tsv", "dev.tsv", "test.tsv"]),
    4: ("QQP", ["train.tsv", "dev.tsv", "test.tsv"]),
    5: ("MNLI", ["train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv", "test_mismatched.tsv"]),
    6: ("QNLI", ["train.tsv", "dev.tsv", "test.tsv"]), 7: ("RTE", ["train.tsv", "dev.tsv", "test.tsv"]),
    8: ("WNLI", ["train.tsv", "dev.tsv", "test.tsv"]), 9: ("diagnostic", ["AX.tsv"]),
}


ONLY = None  # --only: the harnesses whose seeds are written


def put(harness, name, data):
    if ONLY is not None and harness not in ONLY:
        return
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def run(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("fuzz_seeds: %s failed:\n%s%s" % (" ".join(map(str, cmd)), r.stdout, r.stderr))


def as_version1(blob, crc_at):
    """The same file as a version-1 writer would have made it: no checksums."""
    b = bytearray(blob)
    b[4:8] = struct.pack("<I", 1)
    b[crc_at : crc_at + 8] = bytes(8)
    return bytes(b)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bigs", default=os.path.join(ROOT, "build", "bigs_cpu"))
    ap.add_argument("--data-prep", default=os.path.join(ROOT, "data_prep"))
    ap.add_argument("--only", nargs="+", metavar="NAME", help="write these corpora only")
    args = ap.parse_args(argv)
    global ONLY
    if args.only:
        ONLY = set(args.only)
        for h in ONLY:
            shutil.rmtree(os.path.join(CORPUS, h), ignore_errors=True)
    else:
        shutil.rmtree(CORPUS, ignore_errors=True)
    work = tempfile.mkdtemp(prefix="bigs_seeds_")
    bert = os.path.join(ROOT, "data", "bert-base-uncased-vocab.txt")

    # Tokenizer: flags byte, max_len byte, text.
    for i, line in enumerate(TEXT.split("\n")[:4]):
        put("tokenizer_encode", "text%d" % i, bytes([i & 3, 16 + 8 * i]) + line.encode())
    put("tokenizer_encode", "pair", b"\x03\x20" + b"Is this the question?\tThis is the answer.")
    # Vocab: a small vocab, NUL, a text.
    small = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "begin", "##ning", "god", ",", ".", "un", "##able"]
    put("vocab_load", "small", ("\n".join(small) + "\n").encode() + b"\0" + b"The beginning, unable.")
    put("vocab_load", "crlf", ("\r\n".join(small)).encode() + b"\0" + b"god")
    # GLUE TSVs: task byte, split byte, T byte, the fixture file.
    for task, (folder, splits) in GLUE.items():
        for s, name in enumerate(splits):
            with open(os.path.join(ROOT, "test", "data", "glue", folder, name), "rb") as f:
                put("glue_tsv", "%s_%s" % (folder, name), bytes([task, s, 29]) + f.read()[:1500])
    # Pretraining text: flags (bit 0: .gz), T byte, shard-sequences byte, the file.
    put("pretrain_text", "plain", b"\x00\x0d\x02" + TEXT.encode())
    put("pretrain_text", "gz", b"\x01\x0d\x02" + gzip.compress(TEXT.encode(), mtime=0))

    # Shards and task files from data_prep (BERT vocab), each also as version 1.
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        f.write(TEXT)
    run(args.data_prep, "pretrain", "--vocab", bert, "--seq", 12, "--out", os.path.join(work, "shards"),
        "--val-fraction", 0, "--shard-sequences", 4, text)
    shard = open(os.path.join(work, "shards", "train_000000.bin"), "rb").read()
    run(args.data_prep, "glue", "--task", "mnli", "--vocab", bert, "--seq", 12, "--data-dir",
        os.path.join(ROOT, "test", "data", "glue", "MNLI"), "--out", os.path.join(work, "glue"))
    task = open(os.path.join(work, "glue", "mnli_dev_matched.bin"), "rb").read()
    test = open(os.path.join(work, "glue", "mnli_test_matched.bin"), "rb").read()
    run(args.data_prep, "glue", "--task", "stsb", "--vocab", bert, "--seq", 12, "--data-dir",
        os.path.join(ROOT, "test", "data", "glue", "STS-B"), "--out", os.path.join(work, "glue"))
    stsb = open(os.path.join(work, "glue", "stsb_dev.bin"), "rb").read()
    for h in ("inspect", "bigs_shards"):
        put(h, "shard", shard)
        put(h, "shard_v1", as_version1(shard, 44))
    for h in ("inspect", "bigs_task"):
        put(h, "task", task)
        put(h, "task_test", test)
        put(h, "task_stsb", stsb)
        put(h, "task_v1", as_version1(task, 336))

    # Checkpoints from bigs pretrain: a tiny model on a tiny vocab (V = 13).
    vocab = os.path.join(work, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(small) + "\n")
    with open(text, "w") as f:
        f.write("the beginning , god .\n\nun ##able the god .\n\nthe the god , beginning .\n")
    run(args.data_prep, "pretrain", "--vocab", vocab, "--seq", 8, "--out", os.path.join(work, "tiny"),
        "--val-fraction", 0, text)
    cfg = os.path.join(work, "tiny.cfg")
    with open(cfg, "w") as f:
        f.write("# a model for the seeds\nH 4\nI 4\nL 1\nN 2\n")
    run(args.bigs, "pretrain", "--train", os.path.join(work, "tiny", "train_*.bin"), "--config", cfg, "--batch", 2,
        "--micro-batch", 2, "--steps", 1, "--warmup", 0, "--out", os.path.join(work, "run"), "--threads", 1)
    model = open(os.path.join(work, "run", "model.bin"), "rb").read()
    state = open(os.path.join(work, "run", "state.bin"), "rb").read()
    put("checkpoint", "model", model)
    put("checkpoint", "state", state)
    put("checkpoint", "model_v1", as_version1(model, 80))
    with open(cfg, "rb") as f:
        put("config", "tiny", f.read())
    put("config", "full", b"V 30522\nH 64\nI 128\nL 2\nN 16\nT 128\ntypes 2\nlabels 3\n# end\n")
    # cli.h: NUL-separated arguments.
    put("cli_numbers", "flags", b"--n\x0042\x00--x=0.25\x00--name\x00a b\x00--on\x00file")
    put("cli_numbers", "numbers", b"1e-3\x00-17\x000x10\x00 7\x00+3\x009223372036854775808")

    # Released layouts, written by convert_hf from the tiny checkpoint.
    for fmt, name in (("flax", "flax_model.msgpack"), ("torch", "pytorch_model.bin")):
        out = os.path.join(work, name)
        if convert_hf.main(["to-torch", "--ckpt", os.path.join(work, "run", "model.bin"), "--out", out]) != 0:
            raise SystemExit("fuzz_seeds: convert_hf to-torch failed")
        put("convert_msgpack" if fmt == "flax" else "convert_torch", fmt, open(out, "rb").read())
    # fuzz/convert_safetensors.py: a mode byte, then a model.safetensors (mode 0), or length-prefixed
    # sections (mode 1): an .index.json and its shards, here the same model in two.
    out = os.path.join(work, "model.safetensors")
    if convert_hf.main(["to-torch", "--ckpt", os.path.join(work, "run", "model.bin"), "--out", out]) != 0:
        raise SystemExit("fuzz_seeds: convert_hf to-torch (safetensors) failed")
    put("convert_safetensors", "single", b"\x00" + open(out, "rb").read())
    tensors = convert_hf.safetensors_load(out)
    keys = sorted(tensors)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    shards, weight_map = [], {}
    for i, ks in enumerate(halves):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, len(halves))
        path = os.path.join(work, name)
        convert_hf.safetensors_save(path, {k: tensors[k] for k in ks}, {"format": "pt"})
        shards.append(open(path, "rb").read())
        weight_map.update({k: name for k in ks})
    index = json.dumps({"metadata": {"total_size": sum(len(s) for s in shards)}, "weight_map": weight_map},
                       indent=2).encode()
    put("convert_safetensors", "sharded",
        b"\x01" + b"".join(struct.pack("<I", len(b)) + b for b in [index] + shards))
    shutil.rmtree(work)
    for h in sorted(ONLY or os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, h))
        size = sum(os.path.getsize(os.path.join(CORPUS, h, f)) for f in files)
        print("fuzz/corpus/%-18s %2d files, %6d bytes" % (h, len(files), size))


if __name__ == "__main__":
    main(sys.argv[1:])
