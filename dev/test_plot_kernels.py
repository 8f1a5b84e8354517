#!/usr/bin/env python3
"""Tests dev/plot_kernels.py on checkpoints with known SSM parameters.

    /usr/bin/python3 dev/test_plot_kernels.py [--workdir build/test_plot_kernels]

Every check runs the script as a user would (its --npz output holds the
kernels it drew) and compares with a computation that is not the script's:

  (a) N = 1, written out in real arithmetic (exp, cos, sin: no complex
      numbers), per layer and direction, with a clipped A_re, a real mode
      (A_im = 0) and a fast, oscillating one;
  (b) N = 8, T = 37, random parameters with clipped modes, against the
      oracle's reference.ssm_kernel (PyTorch, float64), for the model file
      and for the same parameters as a training state (kind 2);
  (c) the PNG is written (PNG signature, the figure's size), and the table
      prints D;
  (d) bad input: a missing file, a foreign file, a checkpoint version this
      reader does not know, a truncated file, an output it cannot write:
      exit status 1 and a message naming the problem; --help exits 0.

Prints one line per check and "N passed, N failed"; exits 1 on any failure.
"""

import argparse
import math
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import convert_hf  # noqa: E402
import reference  # noqa: E402
from reference import Config, param_shapes  # noqa: E402

SCRIPT = os.path.join(HERE, "plot_kernels.py")
PYTHON = sys.executable
RTOL, ATOL = 1e-11, 1e-13  # float64 on both sides; only the summation order differs

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, "" if ok or not detail else ": " + detail))


def run_script(*args):
    return subprocess.run([PYTHON, SCRIPT, *args], capture_output=True, text=True)


def zero_params(c):
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in param_shapes(c)}


def kernels_of(ckpt, workdir, tag):
    """Runs the script; returns its kernels (npz) and the process."""
    png, npz = os.path.join(workdir, tag + ".png"), os.path.join(workdir, tag + ".npz")
    p = run_script(ckpt, "--out", png, "--npz", npz)
    if p.returncode != 0:
        return None, p
    with np.load(npz) as z:
        return {k: z[k] for k in z.files}, p


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False, "shape %s, expected %s" % (a.shape, b.shape)
    err = np.abs(a - b) - (ATOL + RTOL * np.abs(b))
    return bool((err <= 0).all()), "worst |a - b| - tol = %.3g at %s" % (err.max(), np.unravel_index(err.argmax(), err.shape))


def kernel_n1(a_re, a_im, c0, c1, log_step, T):
    """K (T) of one mode in real arithmetic: with a = min(A_re, -1e-4),
    b = A_im, E = (exp(dt (a + ib)) - 1) / (a + ib) and Ct = (c0 + i c1) E,
    K[l] = exp(l dt a) (Re Ct cos(l dt b) - Im Ct sin(l dt b))."""
    dt = math.exp(log_step)
    a, b = min(a_re, -1e-4), a_im
    num_re, num_im = math.exp(dt * a) * math.cos(dt * b) - 1.0, math.exp(dt * a) * math.sin(dt * b)
    den = a * a + b * b
    e_re, e_im = (num_re * a + num_im * b) / den, (num_im * a - num_re * b) / den
    ct_re, ct_im = c0 * e_re - c1 * e_im, c0 * e_im + c1 * e_re
    return np.array([math.exp(l * dt * a) * (ct_re * math.cos(l * dt * b) - ct_im * math.sin(l * dt * b))
                     for l in range(T)])


def test_closed_form(workdir):
    c = Config(V=11, H=4, I=6, L=3, N=1, T=50, types=2, labels=0)
    p = zero_params(c)
    # (a_re, a_im, c0, c1, log_step, D) per direction and layer; float32 as stored.
    modes = {
        "fs": [(-0.5, 0.0, 0.7, 0.0, math.log(0.1), 1.0),  # a real, slowly decaying mode
               (0.3, 2.5, -0.4, 0.9, math.log(0.02), 0.5),  # A_re > 0: clipped to -1e-4
               (-2.0, 17.0, 1.3, -0.2, math.log(0.9), -1.5)],  # fast and oscillating
        "bs": [(-0.05, -3.0, 0.2, 0.6, math.log(0.3), 2.0),
               (-1e-5, 0.4, 1.0, 1.0, math.log(1.0), 0.0),  # just above the clip: clipped too
               (-0.7, 6.0, -0.9, -0.3, math.log(0.05), 0.25)],
    }
    for d, rows in modes.items():
        for l, (a_re, a_im, c0, c1, log_step, D) in enumerate(rows):
            p[d + "_a_re"][l, 0], p[d + "_a_im"][l, 0] = a_re, a_im
            p[d + "_c"][l, 0] = (c0, c1)
            p[d + "_log_step"][l], p[d + "_d"][l] = log_step, D
    ckpt = os.path.join(workdir, "n1.bin")
    convert_hf.write_ckpt(ckpt, c, p)
    got, proc = kernels_of(ckpt, workdir, "n1")
    check("(a) N = 1: the script runs", got is not None, proc.stderr.strip())
    if got is None:
        return
    for d, rows in modes.items():
        stored = [[float(np.float32(x)) for x in row] for row in rows]
        want = np.stack([kernel_n1(*row[:5], c.T) for row in stored])
        ok, why = close(got[d], want)
        check("(a) N = 1 closed form, %s, 3 layers" % d, ok, why)
        ok, why = close(got["d_" + d], [row[5] for row in stored])
        check("(a) D of %s in the npz" % d, ok, why)
    check("(a) the table prints D", "-1.5" in proc.stdout and "0.25" in proc.stdout, proc.stdout)


def random_ssm_params(c, rng):
    p = zero_params(c)
    for d in ("fs", "bs"):
        a = rng.uniform(-0.9, -0.05, (c.L, c.N))
        a[:, 2] = 0.2  # clipped
        a[1, 5] = -3e-4  # just inside the clip
        p[d + "_a_re"] = a.astype(np.float32)
        p[d + "_a_im"] = rng.normal(0.0, 4.0, (c.L, c.N)).astype(np.float32)
        p[d + "_c"] = rng.normal(0.0, 0.7, (c.L, c.N, 2)).astype(np.float32)
        p[d + "_d"] = rng.normal(1.0, 0.3, c.L).astype(np.float32)
        p[d + "_log_step"] = rng.uniform(math.log(0.01), math.log(1.0), c.L).astype(np.float32)
    p["wte"] = rng.normal(0.0, 0.02, p["wte"].shape).astype(np.float32)  # not all zero, as a real file
    return p


def oracle_kernels(c, p, d):
    rows = []
    for l in range(c.L):
        t = [torch.tensor(p[d + s][l], dtype=torch.float64) for s in ("_a_re", "_a_im", "_c", "_log_step")]
        rows.append(reference.ssm_kernel(t[0], t[1], t[2], t[3], c.T).numpy())
    return np.stack(rows)


def test_oracle(workdir):
    c = Config(V=13, H=6, I=10, L=3, N=8, T=37, types=2, labels=2)
    p = random_ssm_params(c, np.random.default_rng(7))
    model = os.path.join(workdir, "n8.bin")
    convert_hf.write_ckpt(model, c, p, step=123)
    # The same parameters as a training state: kind 2, then AdamW's two moments.
    with open(model, "rb") as f:
        blob = bytearray(f.read())
    struct.pack_into("<I", blob, 8, convert_hf.KIND_TRAIN_STATE)
    moments = np.random.default_rng(8).normal(0, 1, 2 * convert_hf.num_params(c)).astype("<f4").tobytes()
    state = os.path.join(workdir, "n8_state.bin")
    with open(state, "wb") as f:
        f.write(bytes(blob) + moments)
    for path, tag in ((model, "model"), (state, "training state")):
        got, proc = kernels_of(path, workdir, "n8_" + tag.replace(" ", "_"))
        check("(b) N = 8 %s: the script runs" % tag, got is not None, proc.stderr.strip())
        if got is None:
            continue
        for d in ("fs", "bs"):
            ok, why = close(got[d], oracle_kernels(c, p, d))
            check("(b) N = 8 %s, %s against reference.ssm_kernel" % (tag, d), ok, why)
        ok, why = close(got["dt_fs"], np.exp(p["fs_log_step"].astype(np.float64)))
        check("(b) dt of fs in the npz", ok, why)
        check("(b) the header's step is printed", "step 123" in proc.stdout, proc.stdout.splitlines()[0])


def test_png(workdir):
    png = os.path.join(workdir, "n8_model.png")
    ok = os.path.exists(png)
    check("(c) the PNG exists", ok)
    if not ok:
        return
    with open(png, "rb") as f:
        head = f.read(24)
    check("(c) it is a PNG", head[:8] == b"\x89PNG\r\n\x1a\n", repr(head[:8]))
    width, height = struct.unpack(">II", head[16:24])
    check("(c) 1100 x 750 pixels (11 x 7.5 in at 100 dpi)", (width, height) == (1100, 750), "%d x %d" % (width, height))


def test_bad_input(workdir):
    def fails(name, path, words):
        p = run_script(path, "--out", os.path.join(workdir, "bad.png"))
        ok = p.returncode == 1 and all(w in p.stderr for w in words) and "Traceback" not in p.stderr
        check("(d) %s: exit 1 naming it" % name, ok, "rc %d, stderr %r" % (p.returncode, p.stderr.strip()))

    fails("missing file", os.path.join(workdir, "nope.bin"), ["nope.bin"])
    foreign = os.path.join(workdir, "foreign.bin")
    with open(foreign, "wb") as f:
        f.write(b"\x89PNG" + bytes(300))
    fails("foreign file", foreign, ["not a bigs checkpoint"])
    with open(os.path.join(workdir, "n8.bin"), "rb") as f:
        blob = bytearray(f.read())
    later = os.path.join(workdir, "version9.bin")
    struct.pack_into("<I", blob, 4, 9)
    with open(later, "wb") as f:
        f.write(blob)
    fails("unknown version 9", later, ["version 9"])
    truncated = os.path.join(workdir, "truncated.bin")
    struct.pack_into("<I", blob, 4, convert_hf.CKPT_VERSION)
    with open(truncated, "wb") as f:
        f.write(blob[:-4])
    fails("truncated file", truncated, ["bytes, expected"])
    p = run_script(os.path.join(workdir, "n8.bin"), "--out", os.path.join(workdir, "no_such_dir", "k.png"))
    ok = p.returncode == 1 and "cannot write" in p.stderr and "no_such_dir" in p.stderr
    check("(d) --out in a missing directory: exit 1 naming it", ok, "rc %d, stderr %r" % (p.returncode, p.stderr.strip()))
    p = run_script("--help")
    check("(d) --help exits 0", p.returncode == 0 and "--out" in p.stdout, p.stderr)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="build/test_plot_kernels", help="scratch directory (emptied first)")
    args = ap.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    test_closed_form(args.workdir)
    test_oracle(args.workdir)
    test_png(args.workdir)
    test_bad_input(args.workdir)
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
