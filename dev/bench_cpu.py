"""bigs on the CPU against PyTorch, the same BiGS training step side by side.

    python3 dev/bench_cpu.py [--bigs build/bigs_cpu] [--threads 1,2] [--rounds 3]

For each config (docs/CPU.md's table) and thread count, runs `bigs bench
--device cpu` and a PyTorch peer in turn, --rounds times interleaved, and
prints the best tokens/s of each, their ratio and the load average. The peer
is dev/reference.py's BiGS in float32 with the same step as `bigs bench`:
dropout 0.1 after the embeddings, the MLM head on the masked rows only
(min(20, 0.15 T) per sequence), cross-entropy, backward,
clip_grad_norm_(1.0), AdamW (0.9, 0.98, eps 1e-6, weight decay 0.05 on the
same parameters), torch.set_num_threads = the thread count. Its SSM
convolution is the faster of reference.py's two (FFT, or the Toeplitz
matrix product), chosen per config by timing both.

The peer needs an optimised BLAS: Debian's python3-torch is built with
BLAS_INFO=generic and calls the system libblas.so.3, which is the netlib
reference BLAS (an unblocked triple loop: 1.9 GFLOP/s on a 1024^3 sgemm on
an AMD EPYC core, where OpenBLAS gave 25 on the same loaded machine) unless
OpenBLAS is installed (`apt-get install libopenblas0-pthread`; dev/deps.sh
installs it). The peer runs with --blas-dir (default: OpenBLAS's directory,
when it is there) first on LD_LIBRARY_PATH, so it does not depend on
update-alternatives, and OPENBLAS_NUM_THREADS = the thread count (OpenBLAS
ignores torch.set_num_threads).

Before any timing, a probe of the peer's environment says which BLAS torch
does its products with (torch.__config__.show()'s BLAS_INFO: mkl, open, blis
are built in; generic means the libblas.so.3 it loaded, read from
/proc/self/maps and named by its real path) and measures a 1024^3 sgemm.
A reference BLAS, or any BLAS below 8 GFLOP/s (4x the reference BLAS above,
a third of OpenBLAS on one loaded core; an optimised sgemm on any x86-64 core
since SSE2 exceeds it), is refused: the ratio would measure the BLAS, not
bigs (a fresh Debian machine printed 13.69 where the fair ratio is about 1.5).
--allow-slow-blas runs anyway and marks every ratio invalid. --blas-check
runs the probe alone. torch.compile rows are added where the torch has it
(Debian 12's 1.13 does not).
"""

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"

# name: (V, H, I, L, N, T, batch, timed steps), as docs/CPU.md lists them.
CONFIGS = {
    "tiny": (4096, 64, 128, 2, 16, 128, 32, 20),
    "small": (30522, 256, 512, 4, 64, 128, 16, 5),
    "medium": (30522, 512, 1536, 6, 64, 128, 8, 3),
    "long": (30522, 128, 256, 2, 64, 1024, 4, 4),
}


# The BLAS a torch uses, by name (of its build, or of the library it loaded)
OPTIMISED = ("openblas", "mkl", "blis", "atlas", "armpl", "accelerate", "essl", "flexiblas")
GFLOPS_FLOOR = 8.0  # 1024^3 sgemm; see the module's docstring


def blas_of(config, maps):
    """(kind, name): kind "optimised", "reference" or "unknown", from torch.__config__.show()
    (CONFIG) and the real paths of the shared libraries the process has loaded (MAPS)."""
    m = re.search(r"BLAS_INFO=([\w-]+)", config)
    info = m.group(1).lower() if m else "?"
    if info in ("mkl", "open", "openblas", "blis", "accelerate", "atlas", "armpl", "flexi"):
        return "optimised", "built in (BLAS_INFO=%s)" % info
    libs = [x for x in maps if re.search(r"(blas|mkl|blis|atlas|armpl|essl)[^/]*\.so", os.path.basename(x))]
    # Debian's netlib reference BLAS (libblas3 installs it as .../blas/libblas.so.3)
    # loaded: torch's sgemm_ binds to it by the libblas.so.3 soname, even where
    # OpenBLAS came in too (as liblapack.so.3's, say).
    ref = [x for x in libs if re.search(r"/blas/libblas\.so", x)]
    if ref:
        return "reference", " ".join(sorted(libs)) + " (the netlib reference BLAS)"
    good = [x for x in libs if any(k in x.lower() for k in OPTIMISED)]
    if good:
        return "optimised", " ".join(sorted(os.path.basename(x) for x in good))
    if any(re.search(r"libblas\.so", os.path.basename(x)) for x in libs):
        return "reference", " ".join(sorted(libs)) + " (a plain libblas.so: taken for the reference BLAS)"
    return "unknown", "BLAS_INFO=%s, no BLAS library loaded that can be named" % info


def sgemm_gflops(torch):
    """GFLOP/s of a 1024^3 float32 product on torch's BLAS, after one warm-up: the mean of five."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def probe(threads):
    """What the peer's BLAS is and how fast: one line, 'peer-blas: KIND GFLOPS NAME'."""
    import torch

    torch.set_num_threads(threads)
    gflops = sgemm_gflops(torch)
    maps = sorted({os.path.realpath(line.split()[-1]) for line in open("/proc/self/maps")
                   if ".so" in line.split()[-1]})
    kind, name = blas_of(torch.__config__.show(), maps)
    print("peer-blas: %s %.1f %s" % (kind, gflops, name))
    return kind, gflops, name


def blas_verdict(kind, gflops):
    """None when the peer's BLAS is fit for the comparison, else why not."""
    if kind == "reference":
        return "the PyTorch peer multiplies with the reference BLAS"
    if gflops < GFLOPS_FLOOR:
        return "the PyTorch peer's BLAS does a 1024^3 sgemm at %.1f GFLOP/s, below the %.0f of any optimised BLAS" % (
            gflops, GFLOPS_FLOOR)
    return None


# ---------------------------------------------------------------------------
# The PyTorch peer (run in its own process: the BLAS thread count is read at
# load time)


def peer(name, threads, steps, warmup, mode):
    import torch

    sys.path.insert(0, HERE)
    import reference as ref

    torch.set_num_threads(threads)
    V, H, I, L, N, T, B, _ = CONFIGS[name]
    gflops = sgemm_gflops(torch)
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps") if "blas" in line and ".so" in line})
    print("peer: torch %s, %d threads, BLAS %s, 1024^3 sgemm %.0f GFLOP/s" %
          (torch.__version__, threads, " ".join(os.path.basename(x) for x in blas) or "?", gflops))

    per_seq = min(20, max(1, round(0.15 * T)))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(999, V, (B, T), generator=g)
    types = torch.zeros(B, T, dtype=torch.long)
    pos = [1 + k * (T - 1) // per_seq for k in range(per_seq)]
    rows = torch.tensor([s * T + t for s in range(B) for t in pos])
    targets = torch.randint(999, V, (len(rows),), generator=g)

    def one(conv, compiled):
        config = ref.Config(V=V, H=H, I=I, L=L, N=N, T=T, types=2, labels=0, dropout=0.1)
        model = ref.build_model(config, "cpu", torch.float32, conv=conv, seed=1)
        model.train()
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if ref.is_decayed(n)], "weight_decay": 0.05},
                  {"params": [p for n, p in named if not ref.is_decayed(n)], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
        params = [p for _, p in named]

        def loss_fn(ids, types, rows, targets):
            x = model.encode(ids, types).reshape(-1, H)[rows]  # the masked rows only
            return model.loss(model.mlm_logits(x), targets)

        if compiled:
            loss_fn = torch.compile(loss_fn)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(ids, types, rows, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return B * T * steps / (time.perf_counter() - t0)

    compiled = mode == "compile"
    if compiled and not hasattr(torch, "compile"):
        print("peer-compile: unavailable (torch %s has no torch.compile)" % torch.__version__)
        return
    try:
        best = max((one(conv, compiled), conv) for conv in ("fft", "direct"))
    except Exception as e:  # torch.compile failing on this machine is a result, not a crash
        if not compiled:
            raise
        print("peer-compile: unavailable (%s)" % (str(e).strip().splitlines() or [type(e).__name__])[0][:160])
        return
    print("peer-%s: %.0f tokens/s (conv %s)" % (mode, best[0], best[1]))


# ---------------------------------------------------------------------------
# The driver


def run_bigs(bigs, name, threads, steps, workdir):
    V, H, I, L, N, T, B, _ = CONFIGS[name]
    path = os.path.join(workdir, name + ".cfg")
    with open(path, "w") as f:
        f.write("V %d\nH %d\nI %d\nL %d\nN %d\nT %d\n" % (V, H, I, L, N, T))
    out = subprocess.run([bigs, "bench", "--device", "cpu", "--config", path, "--seq", str(T), "--batch", str(B),
                          "--steps", str(steps), "--warmup", "2", "--threads", str(threads)],
                         capture_output=True, text=True)
    m = re.search(r"([0-9.]+) tokens/s", out.stdout)
    if out.returncode != 0 or not m:
        sys.exit("bench_cpu: bigs bench failed:\n" + out.stdout + out.stderr)
    return float(m.group(1))


def peer_env(threads, blas_dir):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    if blas_dir:
        env["LD_LIBRARY_PATH"] = blas_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def run_probe(threads, python, blas_dir):
    out = subprocess.run([python, os.path.abspath(__file__), "--probe", "--threads", str(threads)],
                         capture_output=True, text=True, env=peer_env(threads, blas_dir))
    m = re.search(r"^peer-blas: (\w+) ([0-9.]+) (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        sys.exit("bench_cpu: the PyTorch peer's BLAS probe failed:\n" + out.stdout + out.stderr)
    return m.group(1), float(m.group(2)), m.group(3)


def run_peer(name, threads, steps, mode, python, blas_dir):
    out = subprocess.run([python, os.path.abspath(__file__), "--peer", name, "--threads", str(threads), "--steps",
                          str(steps), "--mode", mode], capture_output=True, text=True, env=peer_env(threads, blas_dir))
    info = re.search(r"^peer: .*$", out.stdout, re.M)
    m = re.search(r"peer-\w+: ([0-9.]+) tokens/s \(conv (\w+)\)", out.stdout)
    if out.returncode != 0:
        sys.exit("bench_cpu: the PyTorch peer failed:\n" + out.stdout + out.stderr)
    note = re.search(r"peer-\w+: unavailable.*", out.stdout)
    return (float(m.group(1)) if m else None), (m.group(2) if m else (note.group(0) if note else "?")), \
        (info.group(0) if info else "")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bigs", default="build/bigs_cpu", help="the bigs binary (default %(default)s)")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default %(default)s)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of %s" % ", ".join(CONFIGS))
    p.add_argument("--rounds", type=int, default=3, help="interleaved runs of each, best kept (default %(default)s)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every config's timed steps")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows where torch has it")
    p.add_argument("--python", default="/usr/bin/python3", help="the peer's Python (default %(default)s)")
    p.add_argument("--workdir", default="build/bench_cpu", help="(default %(default)s)")
    p.add_argument("--blas-dir", default=OPENBLAS_DIR if os.path.isdir(OPENBLAS_DIR) else "",
                   help="put first on the peer's LD_LIBRARY_PATH (default: %s when it exists)" % OPENBLAS_DIR)
    p.add_argument("--allow-slow-blas", action="store_true",
                   help="run with a reference or slow BLAS anyway, every ratio marked invalid")
    p.add_argument("--blas-check", action="store_true", help="only say whether the peer's BLAS is fit; exit 1 if not")
    p.add_argument("--peer", help=argparse.SUPPRESS)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="eager", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.peer:
        peer(a.peer, int(a.threads), a.steps, 2, a.mode)
        return 0
    if a.probe:
        probe(int(a.threads))
        return 0
    names = [c for c in a.configs.split(",") if c]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        p.error("unknown config %s" % ", ".join(bad))
    threads = [int(t) for t in a.threads.split(",")]
    kind, gflops, blas = run_probe(min(threads), a.python, a.blas_dir)
    invalid = blas_verdict(kind, gflops)
    print("bench_cpu: the PyTorch peer's BLAS: %s (%s), 1024^3 sgemm %.1f GFLOP/s on %d thread%s%s" % (
        blas, kind, gflops, min(threads), "" if min(threads) == 1 else "s",
        "" if a.blas_dir == "" else "; --blas-dir %s" % a.blas_dir))
    if invalid:
        fix = ("install OpenBLAS (Debian: apt-get install libopenblas0-pthread, or bash dev/deps.sh ensure), or "
               "pass --blas-dir with an optimised libblas.so.3")
        if a.blas_check or not a.allow_slow_blas:
            print("bench_cpu: refused: %s, so a ratio would measure the BLAS, not bigs; %s (--allow-slow-blas runs "
                  "anyway with every ratio marked invalid)" % (invalid, fix), file=sys.stderr)
            return 1
        print("bench_cpu: WARNING: %s: every ratio below is INVALID (--allow-slow-blas)" % invalid)
    if a.blas_check:
        print("bench_cpu: the peer's BLAS is fit for the comparison")
        return 0
    if not os.access(a.bigs, os.X_OK):
        p.error("%s is not an executable; build it with `make build/bigs_cpu`" % a.bigs)
    os.makedirs(a.workdir, exist_ok=True)
    modes = ["eager"] + (["compile"] if a.compile else [])
    print("bench_cpu: %s, %s, %d rounds interleaved, best of each; load average %.2f %.2f %.2f at start" %
          (a.bigs, time.strftime("%Y-%m-%d %H:%M"), a.rounds, *os.getloadavg()))
    print("| config | threads | bigs tok/s | PyTorch tok/s | ratio | peer | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|")
    infos = set()
    for name in names:
        steps = max(1, round(CONFIGS[name][7] * a.steps_scale))
        for t in threads:
            best_b, best_p, loads = 0.0, {m: None for m in modes}, []
            conv = {m: "?" for m in modes}
            for _ in range(a.rounds):
                loads.append(os.getloadavg()[0])
                best_b = max(best_b, run_bigs(a.bigs, name, t, steps, a.workdir))
                for m in modes:
                    tok, c, info = run_peer(name, t, steps, m, a.python, a.blas_dir)
                    infos.add(info)
                    conv[m] = c
                    if tok is not None:
                        best_p[m] = max(best_p[m] or 0.0, tok)
            loads.append(os.getloadavg()[0])
            for m in modes:
                label = "torch" + ("" if m == "eager" else ".compile")
                if best_p[m] is None:
                    print("| %s | %d | %.0f | %s | | %s | |" % (name, t, best_b, label, conv[m]))
                    continue
                ratio = "%.2f" % (best_b / best_p[m]) + (" INVALID (slow BLAS)" if invalid else "")
                print("| %s | %d | %.0f | %.0f | %s | %s (conv %s) | %.1f-%.1f |" %
                      (name, t, best_b, best_p[m], ratio, label, conv[m], min(loads), max(loads)))
            sys.stdout.flush()
    for info in sorted(i for i in infos if i):
        print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
