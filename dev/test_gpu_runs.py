"""Whole GPU runs of bigs on the emulated CUDA device (test/emu), against the
CPU device of the same program.

    /usr/bin/python3 dev/test_gpu_runs.py --build build --workdir build/test_gpu_runs

build/emu/bigs is bigs.cu compiled by g++ against the emulator: `--device
cuda` runs every kernel, cuBLASLt product, cuFFT transform and stream of the
CUDA path on the CPU (strictly: launch limits, device pointers, poisoned
fresh memory, adversarial stream order). build/emu/bigs_mpi adds the
emulated NCCL (over MPI). The checks:

 (a) pretraining with gradient accumulation (micro-batch below batch) and
     dropout on, fp32 on the GPU against the CPU: every step's loss within
     a relative 1e-5. Not a proven bound but a scale: the two devices do the
     same fp32 arithmetic in other orders (fp32's unit roundoff is 2^-24 =
     6e-8, and the longest sums here have about a thousand terms), so after
     12 steps their losses stay some orders of magnitude below it (1e-8
     measured), while a wrong operation moves the loss by far more;
 (b) the same in bf16 and tf32: within 2^-8 and 2^-10 relative of the CPU's
     loss, twice the unit roundoff of bf16 (8 significant bits) and of TF32
     (11) with which each precision stores or multiplies its operands (2e-5
     and 4e-6 measured);
 (c) a checkpoint written by the GPU device (bf16 run) loads on the CPU
     device and gives the GPU's fill-mask top-k: the same tokens, the
     probabilities within 1e-5 relative;
 (d) `mpirun -np 2` on the emulated GPU (NCCL, sharded AdamW) against one
     emulated process: every loss within 1e-6 relative (on a GPU the norm's
     two-stage sums group by rank, so the last bits may differ; the check
     reports whether model.bin came out identical);
 (e) the FFT route inside the model (fp32 at T = 512, where the GPU leaves
     the Toeplitz products) against the CPU, within (a)'s bound;
 (f) finetune, eval and predict of a classification (RTE) and the
     regression task (STS-B) on the GPU against the CPU: losses within
     (a)'s bound, the same dev metrics to 4 places, the same predicted
     classes (RTE) and scores within 1e-3 (STS-B);
 (g) a card too small for the batch (BIGS_EMU_CARD) is refused up front with
     the memory plan's message, not a crash.
Each run waits for the program to end; nothing depends on the machine's speed.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import Suite, expect, fresh_workdir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
HANG = 1800  # seconds: only against a hang


def run(cmd, cwd, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    e.update(env or {})
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=HANG, env=e)
    return r


def ok(r, what):
    expect(r.returncode == 0, "%s failed (%d):\n%s\n%s" % (what, r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


def losses(path):
    """The training losses of a log.jsonl, by step, and the validation losses."""
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                train[rec["step"]] = rec["loss"]
            if "val_loss" in rec:
                val[rec["step"]] = rec["val_loss"]
    return train, val


def close(a, b, rel, what):
    expect(a.keys() == b.keys(), "%s: steps %s against %s" % (what, sorted(a), sorted(b)))
    worst = 0.0
    for k in a:
        d = abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
        worst = max(worst, d)
        expect(d <= rel, "%s: step %s: %.9g against %.9g (relative %.3g > %.3g)" % (what, k, a[k], b[k], d, rel))
    return worst


class Runs:
    def __init__(self, build, work):
        self.cpu = os.path.abspath(os.path.join(build, "bigs_cpu"))
        self.emu = os.path.abspath(os.path.join(build, "emu", "bigs"))
        self.emu_mpi = os.path.abspath(os.path.join(build, "emu", "bigs_mpi"))
        self.work = work
        self.common = ["--config", "tiny", "--batch", "8", "--micro-batch", "4", "--steps", "12", "--lr", "2e-3",
                       "--warmup", "2", "--dropout", "0.1", "--eval-every", "6", "--eval-seqs", "16",
                       "--save-every", "6", "--log-every", "6", "--threads", "1"]

    def corpus(self, T, name):
        """A vocabulary and shards of T tokens from the first 400 kB of the bundled corpus."""
        d = os.path.join(self.work, name)
        if os.path.exists(os.path.join(d, "shards")):
            return d
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(ROOT, "data", "kjv.txt"), "rb") as f, open(os.path.join(d, "corpus.txt"), "wb") as g:
            g.write(f.read(400000))
        ok(run([os.path.join(ROOT, "tokenizer"), "train", "--vocab-size", "1000", "--out", "vocab.txt", "corpus.txt"],
               d), "tokenizer train")
        ok(run([os.path.join(ROOT, "data_prep"), "pretrain", "--vocab", "vocab.txt", "--seq", str(T), "--out",
                "shards", "--val-fraction", "0.05", "corpus.txt"], d), "data_prep pretrain")
        return d

    def pretrain(self, exe, d, out, device, extra=(), launcher=(), common=None):
        args = list(launcher) + [exe, "pretrain", "--device", device, "--train", "shards/train_*.bin", "--val",
                                 "shards/val_*.bin", "--out", out] + (common or self.common) + list(extra)
        ok(run(args, d), " ".join(args[-30:]))
        return losses(os.path.join(d, out, "log.jsonl"))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--workdir", default="build/test_gpu_runs")
    a = ap.parse_args(argv)
    work = fresh_workdir(a.workdir)
    R = Runs(a.build, work)
    for exe in (R.cpu, R.emu):
        if not os.access(exe, os.X_OK):
            print("%s is missing: `make emu build/bigs_cpu` first" % exe)
            return 1
    s = Suite()
    d = R.corpus(64, "t64")

    def fp32():
        ct, cv = R.pretrain(R.cpu, d, "cpu", "cpu")
        gt, gv = R.pretrain(R.emu, d, "fp32", "cuda", ["--precision", "fp32"])
        w = close(gt, ct, 1e-5, "fp32 train")
        w = max(w, close(gv, cv, 1e-5, "fp32 val"))
        return "worst relative difference %.2g over 12 steps and 2 validations" % w

    def low_precision():
        ct, _ = losses(os.path.join(d, "cpu", "log.jsonl"))
        out = []
        for prec, rel in (("bf16", 2.0**-8), ("tf32", 2.0**-10)):
            gt, _ = R.pretrain(R.emu, d, prec, "cuda", ["--precision", prec])
            out.append("%s %.2g" % (prec, close(gt, ct, rel, prec)))
        return "worst relative differences: " + ", ".join(out)

    def checkpoint_to_cpu():
        text = "and the lord [MASK] unto moses, saying"
        args = ["fill-mask", "--ckpt", "bf16/model.bin", "--vocab", "vocab.txt", "--top-k", "5", "--json", text]
        c = json.loads(ok(run([R.cpu] + args + ["--device", "cpu"], d), "fill-mask cpu").stdout)
        g = json.loads(ok(run([R.emu] + args + ["--device", "cuda", "--precision", "fp32"], d), "fill-mask gpu").stdout)
        ct = [(x["token"], x["probability"]) for m in c["masks"] for x in m["candidates"]]
        gt = [(x["token"], x["probability"]) for m in g["masks"] for x in m["candidates"]]
        expect([t for t, _ in ct] == [t for t, _ in gt], "top-k tokens: cpu %s, gpu %s" % (ct, gt))
        for (t, p), (_, q) in zip(ct, gt):
            expect(abs(p - q) <= 1e-5 * p, "%s: cpu %.9g, gpu %.9g" % (t, p, q))
        return "top-5 %s" % [t for t, _ in ct]

    def two_ranks():
        if not os.access(R.emu_mpi, os.X_OK):
            return "skip: no build/emu/bigs_mpi (no mpicxx)"
        gt, gv = losses(os.path.join(d, "fp32", "log.jsonl"))
        r = R.pretrain(R.emu_mpi, d, "mpi2", "cuda", ["--precision", "fp32"], MPIRUN + ["-np", "2"])
        w = max(close(r[0], gt, 1e-6, "2 ranks train"), close(r[1], gv, 1e-6, "2 ranks val"))
        same = open(os.path.join(d, "mpi2", "model.bin"), "rb").read() == open(os.path.join(d, "fp32", "model.bin"),
                                                                               "rb").read()
        return "worst relative difference %.2g; model.bin %s" % (w, "identical" if same else "differs in its bits")

    def fft_route():
        d512 = R.corpus(512, "t512")
        short = ["--config", "tiny", "--batch", "2", "--micro-batch", "2", "--steps", "3", "--lr", "2e-3", "--warmup",
                 "1", "--dropout", "0.1", "--eval-every", "0", "--eval-seqs", "4", "--threads", "1"]
        ct, cv = R.pretrain(R.cpu, d512, "cpu", "cpu", common=short)
        gt, gv = R.pretrain(R.emu, d512, "fp32", "cuda", ["--precision", "fp32"], common=short)
        return "T = 512, worst relative difference %.2g" % max(close(gt, ct, 1e-5, "fft train"),
                                                                close(gv, cv, 1e-5, "fft val"))

    def finetune(task, folder):
        def check():
            g = os.path.join(work, task)
            os.makedirs(g, exist_ok=True)
            ok(run([os.path.join(ROOT, "data_prep"), "glue", "--task", task, "--vocab", os.path.join(d, "vocab.txt"),
                    "--seq", "64", "--data-dir", os.path.join(ROOT, "test", "data", "glue", folder), "--out", "data"],
                   g), "data_prep glue")
            res = {}
            for name, exe, dev in (("cpu", R.cpu, ["--device", "cpu"]),
                                   ("gpu", R.emu, ["--device", "cuda", "--precision", "fp32"])):
                ok(run([exe, "finetune", "--task", task, "--init", os.path.join(d, "cpu", "model.bin"), "--train",
                        "data/%s_train.bin" % task, "--dev", "data/%s_dev.bin" % task, "--epochs", "4", "--batch",
                        "2", "--micro-batch", "1", "--lr", "1e-3", "--eval-every", "3", "--log-every", "1",
                        "--threads", "1", "--out", name] + dev, g), "finetune " + name)
                ev = ok(run([exe, "eval", "--task", task, "--ckpt", name + "/best.bin", "--dev",
                             "data/%s_dev.bin" % task, "--threads", "1"] + dev, g), "eval " + name).stdout
                ok(run([exe, "predict", "--task", task, "--ckpt", name + "/best.bin", "--test",
                        "data/%s_test.bin" % task, "--out", name + "_sub", "--threads", "1"] + dev, g),
                   "predict " + name)
                sub = [f for f in os.listdir(os.path.join(g, name + "_sub")) if f.endswith(".tsv")]
                res[name] = (losses(os.path.join(g, name, "log.jsonl"))[0], ev.split(":", 1)[-1].split("loss")[0],
                             open(os.path.join(g, name + "_sub", sub[0])).read())
            w = close(res["gpu"][0], res["cpu"][0], 1e-5, task + " finetune")
            expect(res["gpu"][1] == res["cpu"][1], "dev metrics: cpu %r, gpu %r" % (res["cpu"][1], res["gpu"][1]))
            if task == "stsb":  # scores: the same to 3 places
                cs = [line.split("\t") for line in res["cpu"][2].splitlines()[1:]]
                gs = [line.split("\t") for line in res["gpu"][2].splitlines()[1:]]
                expect(len(cs) == len(gs), "prediction counts")
                for x, y in zip(cs, gs):
                    expect(x[0] == y[0] and abs(float(x[1]) - float(y[1])) <= 1e-3, "prediction %s against %s" % (x, y))
            else:
                expect(res["gpu"][2] == res["cpu"][2], "the submission files differ")
            return "worst loss difference %.2g; dev%s" % (w, res["cpu"][1].rstrip())
        return check

    def small_card():
        r = run([R.emu, "pretrain", "--device", "cuda", "--config", "tiny", "--train", "shards/train_*.bin", "--out",
                 "small", "--batch", "4096", "--micro-batch", "4096", "--steps", "1"], d, {"BIGS_EMU_CARD": "64MB"})
        expect(r.returncode != 0, "a 4096-sequence micro-batch on a 64 MB card ran")
        expect("Traceback" not in r.stderr and "Aborted" not in r.stderr, r.stderr[-2000:])
        msg = (r.stdout + r.stderr)[-1500:]
        expect("GB" in msg and ("micro-batch" in msg or "--batch" in msg), "no memory plan in the message:\n" + msg)
        return msg.strip().splitlines()[-1][:150]

    s.check("(a) pretraining with accumulation and dropout, fp32 GPU = CPU", fp32)
    s.check("(b) bf16 and tf32 GPU follow the CPU", low_precision)
    s.check("(c) a GPU checkpoint on the CPU: the same fill-mask top-k", checkpoint_to_cpu)
    s.check("(d) 2 ranks through the emulated NCCL = 1 process", two_ranks)
    s.check("(e) the FFT route inside the model, T = 512", fft_route)
    s.check("(f) finetune, eval, predict on the GPU = CPU: RTE", finetune("rte", "RTE"))
    s.check("(f) finetune, eval, predict on the GPU = CPU: STS-B (regression)", finetune("stsb", "STS-B"))
    s.check("(g) a card too small for the batch is refused up front", small_card)
    print("test_gpu_runs: %d passed, %d failed, %d skipped" % (s.passed, s.failed, s.skipped))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
