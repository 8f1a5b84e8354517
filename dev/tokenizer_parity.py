#!/usr/bin/env python3
"""Parity test: our tokenizer against Hugging Face's tokenizers, id for id.

    python3 dev/tokenizer_parity.py ./tokenizer data/bert-base-uncased-vocab.txt
            [--workdir build/tokenizer_parity] [--quick]

Builds the corpus with dev/make_parity_corpus.py (fortunes in many languages, the
hard cases, random lines, every code point), encodes it with both tokenizers and
requires identical ids on every line: single texts without special tokens,
single texts with [CLS]/[SEP] truncated and padded, and pairs (A<TAB>B) with
longest-first truncation at several lengths, ids and token types. Last, it
trains an 8000-token vocab on the corpus with `tokenizer train` and requires
the same ids from both tokenizers with that vocab too (every 4th line). Exits 1 on any
difference, printing the first few. Needs `pip install tokenizers`. The full
run takes several minutes on 2 busy cores (HF is the slow side, truncation most); --quick takes every
8th corpus line (about 56,000 lines, 2.3 MB), every 4th code point line and
8,000 lines for the truncation and pair runs.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.time()


def read_lines(path, every=1):
    """The lines of a file (split on \\n only), every `every`-th one, and their bytes."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = lines[::every]
    return lines, sum(len(l) + 1 for l in lines)


def run_ours(binary, vocab, args, input_bytes):
    cmd = [binary, "encode", "--vocab", vocab] + args
    p = subprocess.run(cmd, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.decode()))
    out = p.stdout.decode().split("\n")
    if out and out[-1] == "":
        out.pop()
    return [[int(x) for x in line.split()] for line in out]


def compare(name, texts, ours, theirs):
    """Counts differing lines, printing the first few."""
    if len(ours) != len(theirs):
        print("%s: FAIL: %d output lines from us, %d from HF" % (name, len(ours), len(theirs)))
        return 1
    bad = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    for i in bad[:5]:
        print("%s: line %d differs\n  text: %r\n  ours: %s\n  hf:   %s"
              % (name, i + 1, texts[i][:300], ours[i][:40], theirs[i][:40]))
    print("%s: %d lines, %s (%.0f s)" % (name, len(ours), "FAIL: %d differ" % len(bad) if bad
                                         else "ok", time.time() - T0), flush=True)
    return len(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", help="the tokenizer executable")
    ap.add_argument("vocab", help="vocab.txt (bert-base-uncased)")
    ap.add_argument("--workdir", default="build/tokenizer_parity")
    ap.add_argument("--quick", action="store_true", help="a subset: every 8th corpus line")
    ap.add_argument("--sample", type=int, default=20000,
                    help="corpus lines for the truncation and pair runs (default 20000)")
    args = ap.parse_args()
    try:
        from tokenizers import BertWordPieceTokenizer
    except ImportError:
        sys.exit("tokenizers is not installed: python3 -m pip install tokenizers")
    subprocess.run([sys.executable, os.path.join(HERE, "make_parity_corpus.py"), args.workdir],
                   check=True)
    hf = BertWordPieceTokenizer(args.vocab, lowercase=True)
    failures = 0
    t0 = time.time()

    # Single texts, no special tokens: the corpus and every code point.
    every = {"corpus.txt": 8, "codepoints.txt": 4} if args.quick else {}
    for name in ("corpus.txt", "codepoints.txt"):
        raw, n_bytes = read_lines(os.path.join(args.workdir, name), every.get(name, 1))
        texts = [r.decode("utf-8", "replace") for r in raw]
        ours = run_ours(args.binary, args.vocab, [], b"\n".join(raw) + b"\n")
        theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        failures += compare("%s (%d lines, %.2f MB)" % (name, len(texts), n_bytes / 1e6),
                            texts, ours, theirs)

    # Truncation is slow in HF (it keeps every overflowing piece), so the
    # truncating runs take an evenly spaced sample of the corpus.
    raw, _ = read_lines(os.path.join(args.workdir, "corpus.txt"), every.get("corpus.txt", 1))
    sample = min(args.sample, 8000) if args.quick else args.sample
    raw = raw[::max(1, len(raw) // sample)]
    texts = [r.decode("utf-8", "replace") for r in raw]
    single_input = b"\n".join(raw) + b"\n"

    # Single texts with [CLS] ... [SEP], truncated and padded.
    hf.enable_truncation(max_length=16, strategy="longest_first")
    hf.enable_padding(length=16)
    ours = run_ours(args.binary, args.vocab, ["--special", "--max-len", "16", "--pad"],
                    single_input)
    theirs = [e.ids for e in hf.encode_batch(texts)]
    failures += compare("single --special --max-len 16 --pad", texts, ours, theirs)
    hf.no_padding()

    # Pairs: consecutive sample lines (tabs inside a text become spaces).
    pair_raw = [(raw[i].replace(b"\t", b" "), raw[i + 1].replace(b"\t", b" "))
                for i in range(0, len(raw) - 1, 2)]
    pair_texts = [(a.decode("utf-8", "replace"), b.decode("utf-8", "replace"))
                  for a, b in pair_raw]
    pair_input = b"".join(a + b"\t" + b + b"\n" for a, b in pair_raw)
    for max_len, pad in ((0, False), (5, False), (16, True), (64, False), (128, True)):
        if max_len:
            hf.enable_truncation(max_length=max_len, strategy="longest_first")
        else:
            hf.no_truncation()
        if pad:
            hf.enable_padding(length=max_len)
        else:
            hf.no_padding()
        flags = ["--pair"] + (["--max-len", str(max_len)] if max_len else []) + \
            (["--pad"] if pad else [])
        encs = hf.encode_batch(pair_texts)
        failures += compare("pairs %s" % " ".join(flags), pair_texts,
                            run_ours(args.binary, args.vocab, flags, pair_input),
                            [e.ids for e in encs])
        failures += compare("pairs %s --types" % " ".join(flags), pair_texts,
                            run_ours(args.binary, args.vocab, flags + ["--types"], pair_input),
                            [e.type_ids for e in encs])
    # A vocab of our own training, loaded by both.
    corpus = os.path.join(args.workdir, "corpus.txt")
    trained = os.path.join(args.workdir, "trained-vocab.txt")
    subprocess.run([args.binary, "train", "--vocab-size", "8000", "--out", trained, corpus],
                   check=True, stderr=subprocess.DEVNULL)
    hf_trained = BertWordPieceTokenizer(trained, lowercase=True)
    raw, _ = read_lines(corpus, every.get("corpus.txt", 4))
    texts = [r.decode("utf-8", "replace") for r in raw]
    ours = run_ours(args.binary, trained, [], b"\n".join(raw) + b"\n")
    theirs = [e.ids for e in hf_trained.encode_batch(texts, add_special_tokens=False)]
    failures += compare("corpus.txt with a trained 8000-token vocab", texts, ours, theirs)

    print("parity: %s (%.0f s)" % ("FAIL" if failures else "all lines identical",
                                   time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
