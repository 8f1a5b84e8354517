#!/usr/bin/env python3
"""Checks the emulated cuBLASLt and cuFFT against numpy.

build/emu/test_emu_libs (test/test_emu_libs.cpp) writes, for each product
and transform it ran through the emulator (test/emu/cublaslt.cpp,
test/emu/cufft.cpp), its inputs and the emulator's outputs as raw files and
one line of manifest.txt with the parameters. This script recomputes each
one here, independently: numpy's matmul in float64 on the operands gathered
by their column-major strides, its own bf16 / TF32 rounding (frexp-based,
not the emulator's bit tricks), numpy.fft. It also checks what must be left
alone: D outside the m x n matrices, an untouched bias, output gaps of an
advanced FFT layout; and what must be destroyed: an out-of-place C2R's input.

Usage: test_emu_libs.py DIR   (exit status 0 when every case passes)
"""
import sys

import numpy as np

EPS32 = 2.0**-24


def load(path, t):
    """A raw file of fp32 or bf16 values, as float64 (bf16 exactly)."""
    if t == "f32":
        return np.fromfile(path, dtype="<f4").astype(np.float64)
    raw = np.fromfile(path, dtype="<u2").astype(np.uint32) << 16
    return raw.view(np.float32).astype(np.float64)


def round_sig(x, bits, ties_even):
    """x rounded to `bits` significant bits (normal range), via frexp."""
    m, e = np.frexp(x)  # x = m 2^e, 0.5 <= |m| < 1
    s = m * 2.0**bits
    if ties_even:
        s = np.rint(s)
    else:  # ties away from zero
        s = np.sign(s) * np.floor(np.abs(s) + 0.5)
    return np.ldexp(s / 2.0**bits, e)


def tf32(x):  # 10 explicit mantissa bits + the implicit one, to nearest (ties away)
    return round_sig(x, 11, ties_even=False)


def bf16(x):  # 7 explicit + 1, to nearest even
    return round_sig(x, 8, ties_even=True)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def matrix(flat, rows, cols, ld, off):
    """The column-major (rows, cols) matrix at flat[off] with leading dimension ld."""
    idx = off + np.arange(rows)[:, None] + np.arange(cols)[None, :] * ld
    return flat[idx]


def parse(line):
    kind, *kv = line.split()
    d = {"kind": kind}
    for item in kv:
        k, v = item.split("=", 1)
        d[k] = v
    return d


class Checker:
    def __init__(self):
        self.failures = 0

    def expect(self, ok, name, what):
        if not ok:
            self.failures += 1
            print(f"FAIL {name}: {what}")
        return ok


def check_gemm(c, d, ck):
    name = c["name"]
    I = lambda k: int(c[k])  # noqa: E731
    m, n, k, batch = I("m"), I("n"), I("k"), I("batch")
    ta, tb = I("ta"), I("tb")
    lda, ldb, ldd = I("lda"), I("ldb"), I("ldd")
    sa, sb, sd = I("sa"), I("sb"), I("sd")
    alpha, beta = float(c["alpha"]), float(c["beta"])
    ab, cd, bt, epi = c["ab"], c["cd"], c["bias"], c["epi"]
    ld_aux, s_aux = I("ld_aux"), I("s_aux")
    A = load(f"{d}/{name}.A", ab)
    B = load(f"{d}/{name}.B", ab)
    C = load(f"{d}/{name}.C", cd)
    D = load(f"{d}/{name}.D", cd)
    aux = load(f"{d}/{name}.aux", cd)
    bias = load(f"{d}/{name}.bias", bt)
    bias_out = load(f"{d}/{name}.bias_out", bt)
    tf = c["compute"] == "tf32"
    worst = 0.0
    sensitive = False  # the other rounding mode would have failed somewhere
    written = np.zeros(D.size, dtype=bool)
    for q in range(batch):
        a = matrix(A, k if ta else m, m if ta else k, lda, q * sa)
        b = matrix(B, n if tb else k, k if tb else n, ldb, q * sb)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        ra, rb = (tf32(opa), tf32(opb)) if tf else (opa, opb)
        prod = ra @ rb
        mag = np.abs(ra) @ np.abs(rb)
        cm = matrix(C, m, n, ldd, q * sd) if beta != 0 else np.zeros((m, n))
        pre = alpha * prod + beta * cm
        tol = (k + 4) * EPS32 * (abs(alpha) * mag + abs(beta) * np.abs(cm)) + 1e-30
        if epi in ("bias", "gelu_aux_bias"):
            pre = pre + bias[:m][:, None]
            tol = tol + 2 * EPS32 * np.abs(pre)
        out = gelu(pre) if epi == "gelu_aux_bias" else pre
        tol_out = 1.2 * tol + 8 * EPS32 * np.abs(out) if epi == "gelu_aux_bias" else tol
        if cd == "bf16":
            tol_out = tol_out + 2.0**-8 * np.abs(out)
        got = matrix(D, m, n, ldd, q * sd)
        err = np.abs(got - out)
        bad = ~(err <= tol_out)
        ck.expect(not bad.any(), name, f"batch {q}: D differs at {np.argwhere(bad)[:3].tolist()}, "
                  f"max error {err.max():.3g} (tolerance {tol_out.max():.3g})")
        worst = max(worst, float((err / (tol_out + 1e-30)).max()))
        idx = q * sd + np.arange(m)[:, None] + np.arange(n)[None, :] * ldd
        written[idx.ravel()] = True
        if epi == "gelu_aux_bias":
            tol_aux = tol + (2.0**-8 * np.abs(pre) if cd == "bf16" else 0)
            got_aux = matrix(aux, m, n, ld_aux, q * s_aux)
            ck.expect(np.all(np.abs(got_aux - pre) <= tol_aux), name, f"batch {q}: aux (GELU input) differs, "
                      f"max error {np.abs(got_aux - pre).max():.3g}")
        if epi == "bgradb":
            want = opb.sum(axis=0)
            tolb = (k + 4) * EPS32 * np.abs(opb).sum(axis=0)
            ck.expect(np.all(np.abs(bias_out[:n] - want) <= tolb), name, "BGRADB bias gradient differs")
        # Sensitivity: TF32 products must differ from exact-fp32 ones by more
        # than the tolerance somewhere (and fp32 ones from TF32 ones).
        if ab == "f32" and k >= 7 and epi != "gelu_aux_bias":
            other = (opa @ opb) if tf else (tf32(opa) @ tf32(opb))
            other = alpha * other + beta * cm + (bias[:m][:, None] if epi == "bias" else 0)
            sensitive |= bool((np.abs(got - other) > tol_out).any())
    if ab == "f32" and k >= 7 and epi != "gelu_aux_bias":
        ck.expect(sensitive, name, "the TF32 and exact-fp32 references cannot be told apart here")
    # Nothing outside the m x n matrices written (D0 is D before the call).
    raw_d = np.fromfile(f"{d}/{name}.D", dtype=np.uint8).reshape(D.size, -1)
    raw_d0 = np.fromfile(f"{d}/{name}.D0", dtype=np.uint8).reshape(D.size, -1)
    ck.expect(np.array_equal(raw_d[~written], raw_d0[~written]), name, "D changed outside its matrices")
    if epi == "bias":
        ck.expect(np.array_equal(bias, bias_out), name, "the bias changed")
    return worst


def check_fft(c, d, ck):
    name, typ = c["name"], c["type"]
    I = lambda k: int(c[k])  # noqa: E731
    n, batch = I("n"), I("batch")
    istride, idist, ostride, odist = I("istride"), I("idist"), I("ostride"), I("odist")
    nf = n // 2 + 1
    n_in = nf if typ == "c2r" else n
    n_out = nf if typ == "r2c" else n
    fin = np.fromfile(f"{d}/{name}.in", dtype="<f4").astype(np.float64)
    fout = np.fromfile(f"{d}/{name}.out", dtype="<f4").astype(np.float64)
    fafter = np.fromfile(f"{d}/{name}.in_after", dtype="<f4")
    cin = fin if typ == "r2c" else fin[0::2] + 1j * fin[1::2]
    cout = fout if typ == "c2r" else fout[0::2] + 1j * fout[1::2]
    worst = 0.0
    out_written = np.zeros(cout.size, dtype=bool)
    in_read = np.zeros(cin.size, dtype=bool)
    for q in range(batch):
        ii = q * idist + np.arange(n_in) * istride
        oi = q * odist + np.arange(n_out) * ostride
        in_read[ii] = True
        out_written[oi] = True
        x = cin[ii]
        if typ == "r2c":
            want = np.fft.rfft(x)
        elif typ == "c2r":
            want = np.fft.irfft(x, n) * n  # cuFFT is unnormalised
        elif I("direction") == -1:
            want = np.fft.fft(x)
        else:
            want = np.fft.ifft(x) * n
        got = cout[oi]
        tol = 4 * EPS32 * np.abs(x).sum() * np.log2(max(n, 2)) + 1e-30
        err = np.abs(got - want).max()
        ck.expect(err <= tol, name, f"signal {q}: max error {err:.3g} > {tol:.3g}")
        worst = max(worst, err / tol)
    if not int(c["in_place"]):
        gaps = ~out_written
        if typ != "c2r":  # complex output: a gap is a float pair
            ck.expect(np.all(np.isnan(fout[0::2][gaps])) and np.all(np.isnan(fout[1::2][gaps])), name,
                      "the transform wrote between its output elements")
        else:
            ck.expect(np.all(np.isnan(fout[gaps])), name, "the transform wrote between its output elements")
        if typ == "c2r":  # cuFFT "Data Layout": an out-of-place C2R overwrites its input
            ck.expect(np.all(np.isnan(fafter[0::2][in_read])), name, "the C2R input was not overwritten")
        else:
            ck.expect(np.array_equal(fafter, fin.astype(np.float32)), name, "the input changed")
    return worst


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "build/emu_libs"
    with open(f"{d}/manifest.txt") as f:
        cases = [parse(line) for line in f if line.strip()]
    ck = Checker()
    kinds = {"gemm": 0, "fft": 0}
    for c in cases:
        before = ck.failures
        worst = check_gemm(c, d, ck) if c["kind"] == "gemm" else check_fft(c, d, ck)
        kinds[c["kind"]] += 1
        status = "ok  " if ck.failures == before else "FAIL"
        print(f"{status} {c['kind']:4s} {c['name']:22s} worst error / tolerance {worst:.3f}")
    if kinds["gemm"] == 0 or kinds["fft"] == 0:
        ck.expect(False, "manifest", f"cases missing: {kinds}")
    print(f"{len(cases)} cases ({kinds['gemm']} products, {kinds['fft']} transforms), {ck.failures} failures")
    return 1 if ck.failures else 0


if __name__ == "__main__":
    sys.exit(main())
