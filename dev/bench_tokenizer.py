#!/usr/bin/env python3
"""Throughput of our tokenizer against Hugging Face's tokenizers, same corpus, same run.

    python3 dev/bench_tokenizer.py ./tokenizer data/bert-base-uncased-vocab.txt [--corpus FILE] [--repeat 3]

The corpus defaults to build/tokenizer_parity/corpus.txt (dev/make_parity_corpus.py
builds it: 18 MB of fortunes in many languages plus hard cases). Ours is timed
as a whole process (start, vocab load, reading, writing ids to a file); HF only
inside encode_batch, the lines already decoded to str, so the ratio is if
anything unfair to us. One thread (ours --threads 1; HF with
TOKENIZERS_PARALLELISM=false) and all threads. Best of --repeat runs. On a
shared machine wall time swings with the load, so one-thread runs also show
CPU seconds (user + sys), which it disturbs less.
"""
import argparse
import os
import resource
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
best, best_cpu = 1e30, 1e30
for _ in range(repeat):
    t, c = time.perf_counter(), time.process_time()
    tok.encode_batch(texts, add_special_tokens=False)
    best = min(best, time.perf_counter() - t)
    best_cpu = min(best_cpu, time.process_time() - c)
print(best, best_cpu)
"""


def time_hf(vocab, corpus, threads_all, repeat):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true" if threads_all else "false")
    out = subprocess.run([sys.executable, "-c", HF_WORKER, vocab, corpus, str(repeat)], env=env,
                         check=True, stdout=subprocess.PIPE).stdout
    wall, cpu = out.decode().strip().split()[-2:]
    return float(wall), float(cpu)


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_ours(binary, vocab, corpus, threads, repeat):
    best, best_cpu = 1e30, 1e30
    with tempfile.TemporaryFile() as out:
        for _ in range(repeat):
            out.seek(0)
            t, c = time.perf_counter(), cpu_children()
            subprocess.run([binary, "encode", "--vocab", vocab, "--threads", str(threads), corpus],
                           check=True, stdout=out, stderr=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, cpu_children() - c)
    return best, best_cpu


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
    print("corpus %s: %.1f MB; best of %d runs; load average %.1f"
          % (args.corpus, mb, args.repeat, os.getloadavg()[0]))
    print("%-16s %12s %12s %8s" % ("threads", "ours MB/s", "HF MB/s", "ratio"))
    for threads in (1, n_cpu):
        ours, ours_cpu = time_ours(args.binary, args.vocab, args.corpus, threads, args.repeat)
        hf, hf_cpu = time_hf(args.vocab, args.corpus, threads > 1, args.repeat)
        name = "1" if threads == 1 else "all (%d)" % threads
        print("%-16s %12.1f %12.1f %7.1fx" % (name, mb / ours, mb / hf, hf / ours))
        if threads == 1:
            print("%-16s %12.1f %12.1f %7.1fx" % ("1, per CPU-s", mb / ours_cpu, mb / hf_cpu,
                                                   hf_cpu / ours_cpu))


if __name__ == "__main__":
    main()
