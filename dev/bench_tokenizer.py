#!/usr/bin/env python3
"""Throughput of our tokenizer against Hugging Face's tokenizers, same corpus, same run.

    python3 dev/bench_tokenizer.py ./tokenizer data/bert-base-uncased-vocab.txt [--corpus FILE] [--repeat 3]

The corpus defaults to build/tokenizer_parity/corpus.txt (dev/make_parity_corpus.py
builds it: 18 MB of fortunes in many languages plus hard cases). Ours is timed
as a whole process (start, vocab load, reading, writing ids to a file); HF only
inside encode_batch, the lines already decoded to str, so the ratio is if
anything unfair to us. One thread (ours --threads 1; HF with
TOKENIZERS_PARALLELISM=false) and all threads. Best of --repeat runs.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

HF_WORKER = r"""
import sys, time
from tokenizers import BertWordPieceTokenizer
vocab, corpus, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(corpus, "rb").read().split(b"\n")
if data and data[-1] == b"":
    data.pop()
texts = [l.decode("utf-8", "replace") for l in data]
tok = BertWordPieceTokenizer(vocab, lowercase=True)
best = 1e30
for _ in range(repeat):
    t = time.perf_counter()
    tok.encode_batch(texts, add_special_tokens=False)
    best = min(best, time.perf_counter() - t)
print(best)
"""


def time_hf(vocab, corpus, threads_all, repeat):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true" if threads_all else "false")
    out = subprocess.run([sys.executable, "-c", HF_WORKER, vocab, corpus, str(repeat)], env=env,
                         check=True, stdout=subprocess.PIPE).stdout
    return float(out.decode().strip().split()[-1])


def time_ours(binary, vocab, corpus, threads, repeat):
    best = 1e30
    with tempfile.TemporaryFile() as out:
        for _ in range(repeat):
            out.seek(0)
            t = time.perf_counter()
            subprocess.run([binary, "encode", "--vocab", vocab, "--threads", str(threads), corpus],
                           check=True, stdout=out, stderr=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("vocab")
    ap.add_argument("--corpus", default="build/tokenizer_parity/corpus.txt")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(args.corpus):
        subprocess.run([sys.executable, os.path.join(HERE, "make_parity_corpus.py"),
                        os.path.dirname(args.corpus) or "."], check=True)
    mb = os.path.getsize(args.corpus) / 1e6
    n_cpu = os.cpu_count() or 1
    print("corpus %s: %.1f MB; best of %d runs" % (args.corpus, mb, args.repeat))
    print("%-14s %12s %12s %8s" % ("threads", "ours MB/s", "HF MB/s", "ratio"))
    for threads in (1, n_cpu):
        ours = time_ours(args.binary, args.vocab, args.corpus, threads, args.repeat)
        hf = time_hf(args.vocab, args.corpus, threads > 1, args.repeat)
        print("%-14s %12.1f %12.1f %7.1fx" % ("1" if threads == 1 else "all (%d)" % threads,
                                               mb / ours, mb / hf, hf / ours))


if __name__ == "__main__":
    main()
