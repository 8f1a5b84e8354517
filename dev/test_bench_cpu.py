#!/usr/bin/env python3
"""Tests dev/bench_cpu.py's guard on the PyTorch peer's BLAS:

  (a) blas_of names the BLAS from torch.__config__.show() and the loaded
      libraries: Debian's generic torch on the netlib libblas.so.3 is the
      reference BLAS, on OpenBLAS optimised, an MKL build optimised; a BLAS
      that cannot be named is judged by its measured GFLOP/s alone;
  (b) the bench on the reference BLAS (the system's when OpenBLAS is absent,
      else forced with --blas-dir) refuses before any timing, exit 1, with the
      fix; with --allow-slow-blas its ratio is marked INVALID;
  (c) where OpenBLAS is installed, --blas-check passes with it (without it:
      skipped).

    /usr/bin/python3 dev/test_bench_cpu.py [--bigs build/bigs_cpu] [--workdir build/test_bench_cpu]

No check depends on the machine's speed beyond the 8 GFLOP/s floor that only
an unoptimised BLAS falls below.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_cpu  # noqa: E402
from testlib import Suite, expect, fresh_workdir  # noqa: E402

DEBIAN_TORCH = "  - Build settings: BLAS_INFO=generic, BUILD_TYPE=RelWithDebInfo, LAPACK_INFO=generic, TORCH_VERSION=1.13.0"
REFERENCE_DIR = "/usr/lib/x86_64-linux-gnu/blas"  # Debian's libblas3


def test_classify():
    cases = [
        (DEBIAN_TORCH, ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0", "/usr/lib/x86_64-linux-gnu/libc.so.6"],
         "reference"),
        (DEBIAN_TORCH, ["/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"], "optimised"),
        # the reference libblas.so.3 first on the path, OpenBLAS loaded for LAPACK: sgemm_ is the reference's
        (DEBIAN_TORCH, ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0",
                        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"], "reference"),
        (DEBIAN_TORCH, ["/opt/intel/lib/libmkl_rt.so.2"], "optimised"),
        (DEBIAN_TORCH, ["/usr/lib/x86_64-linux-gnu/libblis.so.4.0.0"], "optimised"),
        ("  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release", [], "optimised"),
        ("  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release", [], "optimised"),
        (DEBIAN_TORCH, ["/usr/lib/x86_64-linux-gnu/libc.so.6"], "unknown"),
    ]
    for config, maps, want in cases:
        kind, name = bench_cpu.blas_of(config, maps)
        expect(kind == want, "%s with %s: %s (%s), want %s" % (config.split("BLAS_INFO=")[1][:8], maps, kind, name,
                                                              want))
    expect(bench_cpu.blas_verdict("reference", 100.0), "a reference BLAS is refused, however fast it measures")
    expect(bench_cpu.blas_verdict("unknown", 2.0) and bench_cpu.blas_verdict("optimised", 2.0),
           "2 GFLOP/s is refused")
    expect(bench_cpu.blas_verdict("unknown", 30.0) is None and bench_cpu.blas_verdict("optimised", 30.0) is None,
           "30 GFLOP/s of an optimised or unnamed BLAS is taken")
    return "%d libraries named; the floor applies to an unnamed BLAS" % len(cases)


def bench(work, bigs, *extra):
    cmd = [sys.executable, os.path.join(HERE, "bench_cpu.py"), "--bigs", bigs, "--configs", "tiny", "--threads", "1",
           "--rounds", "1", "--steps-scale", "0.05", "--workdir", work] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_reference_refused(work, bigs):
    if not os.path.isdir(REFERENCE_DIR):
        return "skip: no %s (Debian's libblas3)" % REFERENCE_DIR
    forced = [] if not os.path.isdir(bench_cpu.OPENBLAS_DIR) else ["--blas-dir", REFERENCE_DIR]
    r = bench(work, bigs, *forced)
    log = r.stdout + r.stderr
    expect(r.returncode == 1 and "refused" in log and "reference BLAS" in log and "libopenblas0-pthread" in log,
           "on the reference BLAS: exit %d:\n%s" % (r.returncode, log[-1500:]))
    expect("| tiny |" not in r.stdout, "a table row was printed:\n" + r.stdout)
    r = bench(work, bigs, "--allow-slow-blas", *forced)
    log = r.stdout + r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| tiny | 1 |")]
    expect(r.returncode == 0 and len(rows) == 1 and "INVALID" in rows[0] and "WARNING" in r.stdout,
           "--allow-slow-blas: exit %d, rows %s:\n%s" % (r.returncode, rows, log[-1500:]))
    return "refused%s; --allow-slow-blas: %s" % (" (forced with --blas-dir)" if forced else "", rows[0])


def test_openblas_taken(work, bigs):
    if not os.path.isdir(bench_cpu.OPENBLAS_DIR):
        return "skip: OpenBLAS is not installed (%s; dev/deps.sh installs libopenblas0-pthread)" % bench_cpu.OPENBLAS_DIR
    r = bench(work, bigs, "--blas-check")
    expect(r.returncode == 0 and "(optimised)" in r.stdout, "exit %d:\n%s" % (r.returncode, r.stdout + r.stderr))
    return r.stdout.splitlines()[0]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bigs", default="build/bigs_cpu")
    p.add_argument("--workdir", default="build/test_bench_cpu")
    a = p.parse_args(argv)
    work, bigs = fresh_workdir(a.workdir), os.path.abspath(a.bigs)
    start = time.time()
    s = Suite()
    s.check("(a) the BLAS named from torch's build and its loaded libraries", test_classify)
    s.check("(b) the reference BLAS refused; --allow-slow-blas marks the ratio", lambda: test_reference_refused(work,
                                                                                                                bigs))
    s.check("(c) OpenBLAS taken", lambda: test_openblas_taken(work, bigs))
    print("test_bench_cpu: %d passed, %d failed, %d skipped (%.1f s)" % (s.passed, s.failed, s.skipped,
                                                                        time.time() - start))
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
