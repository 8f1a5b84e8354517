#!/usr/bin/env python3
"""Draws the learned S4D kernels of every layer of a bigs checkpoint.

    /usr/bin/python3 dev/plot_kernels.py out/demo/run/model.bin --out kernels.png [--npz kernels.npz]

Each layer has two SSMs, forward (fs) and backward (bs), and each SSM one
kernel K (T) shared by all H channels (docs/MODEL.md, "The SSM"):

    dt = exp(log_step),  A_n = min(A_re_n, -1e-4) + i A_im_n
    K[l] = Re sum_n C_n (exp(dt A_n) - 1) / A_n  exp(l dt A_n),   l = 0 .. T-1

computed here in float64 with numpy, as bigs.cu's s4d_kernel_forward_cpu
does. The forward SSM weighs token t - l by K[l] when it computes token t;
the backward SSM weighs token t + l. So |K| against the lag l shows how far
back, and how far ahead, each layer looks.

The figure: |K| against lag (log scale) for each direction, a line per
layer; the share of sum_l |K[l]| that lies within lag l (both directions);
and per layer the lags within which half and 90% of that sum lie (its
"reach"). The same numbers are printed as a table. The skip term D (the
SSM's y = K * u + D u) is not part of K; the table prints it.

Reads checkpoints of either kind (model.bin, state.bin) through
convert_hf.read_ckpt, the one Python reader of the bigs format (it checks
the magic, the version, the kind and the size). Needs numpy and matplotlib
(Debian: python3-numpy, python3-matplotlib); convert_hf.py also imports
torch (python3-torch).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    from convert_hf import ConvertError, read_ckpt  # noqa: E402
except ImportError as e:  # convert_hf imports reference.py, which imports torch
    sys.exit("plot_kernels.py: %s; the checkpoint reader needs numpy and torch (python3-torch)" % e)

A_RE_MAX = -1e-4  # bigs.cu kMaxARe: A_re is clipped to at most this, so every mode decays
DIRECTIONS = (("fs", "forward SSM: weight of token t - lag"), ("bs", "backward SSM: weight of token t + lag"))


def s4d_kernel(a_re, a_im, c, log_step, T):
    """K (T) of one SSM in float64. a_re, a_im (N); c (N, 2) real and
    imaginary parts; log_step a scalar."""
    a_re, a_im, c = (np.asarray(x, dtype=np.float64) for x in (a_re, a_im, c))
    dt = np.exp(np.float64(log_step))
    A = np.minimum(a_re, A_RE_MAX) + 1j * a_im  # (N)
    ct = (c[:, 0] + 1j * c[:, 1]) * (np.exp(dt * A) - 1.0) / A  # (N) zero-order hold
    # exp(l dt A) for every lag directly, not as powers of exp(dt A): no
    # error growth along l (the same choice as bigs.cu).
    powers = np.exp(np.outer(np.arange(T, dtype=np.float64) * dt, A))  # (T, N)
    return (powers @ ct).real  # (T)


def kernels(c, params):
    """{"fs": K (L, T), "bs": K (L, T)} for every layer of a model."""
    return {
        d: np.stack([
            s4d_kernel(params[d + "_a_re"][l], params[d + "_a_im"][l], params[d + "_c"][l],
                       params[d + "_log_step"][l], c.T) for l in range(c.L)
        ]) for d, _ in DIRECTIONS
    }


def reach(K, share):
    """The smallest lag (per row of K) within which `share` of sum |K| lies."""
    cum = np.cumsum(np.abs(K), axis=-1)
    total = cum[..., -1:]
    return np.argmax(cum >= share * np.where(total > 0, total, np.inf), axis=-1)


def print_table(c, params, K):
    print("layer  SSM  dt        D         |K[0]|     reach 50%%  reach 90%%  (lags, of T = %d)" % c.T)
    r50 = {d: reach(K[d], 0.5) for d in K}
    r90 = {d: reach(K[d], 0.9) for d in K}
    for l in range(c.L):
        for d, _ in DIRECTIONS:
            print("%5d  %-3s  %-8.4g  %-8.4g  %-9.4g  %9d  %9d" %
                  (l, d, np.exp(np.float64(params[d + "_log_step"][l])), params[d + "_d"][l], abs(K[d][l, 0]),
                   r50[d][l], r90[d][l]))


def plot(path, c, K, title, log_lag):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    lags = np.arange(c.T)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, c.L))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=100, layout="constrained")
    top = max(np.abs(K[d]).max() for d in K)
    floor = top * 1e-7 if top > 0 else 1e-30  # keeps exact zeros on the log axis
    for ax, (d, label) in zip(axes[0], DIRECTIONS):
        for l in range(c.L):
            ax.plot(lags, np.maximum(np.abs(K[d][l]), floor), color=colors[l], linewidth=1.0, label="layer %d" % l)
        ax.set_yscale("log")
        ax.set_ylim(floor, top * 2)
        ax.set_title(label, fontsize=10)
        ax.set_ylabel("|K[lag]|")
    ax = axes[1, 0]
    for l in range(c.L):
        for d, style in (("fs", "-"), ("bs", "--")):
            cum = np.cumsum(np.abs(K[d][l]))
            ax.plot(lags, cum / cum[-1] if cum[-1] > 0 else cum, style, color=colors[l], linewidth=1.0)
    ax.plot([], [], "k-", label="forward")
    ax.plot([], [], "k--", label="backward")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share of sum |K| within lag")
    ax.set_title("how far each layer looks (cumulative |K|)", fontsize=10)
    ax = axes[1, 1]
    width = 0.2
    layers = np.arange(c.L)
    for k, (d, share, shade) in enumerate((("fs", 0.5, 0.45), ("fs", 0.9, 0.8), ("bs", 0.5, 0.45), ("bs", 0.9, 0.8))):
        base = "tab:blue" if d == "fs" else "tab:orange"
        bars = ax.bar(layers + (k - 1.5) * width, reach(K[d], share), width, color=base, alpha=shade,
                      label="%s, %d%%" % ("forward" if d == "fs" else "backward", round(100 * share)))
        if c.L <= 8:  # a reach of 0 draws no bar; its number still shows
            ax.bar_label(bars, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("lag")
    ax.set_title("reach: lags holding 50% and 90% of sum |K|", fontsize=10)
    ticks = layers[::-(-c.L // 12)]  # at most 12 layer numbers
    ax.set_xticks(ticks)
    many = c.L > 8  # then a colour bar names the layers, not a legend per line
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if not (many and ax in axes[0]):
            ax.legend(fontsize=7)
    if many:
        shades = matplotlib.colors.LinearSegmentedColormap.from_list("layers", colors)
        scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, c.L - 1), shades)
        fig.colorbar(scale, ax=list(axes[0]), label="layer", fraction=0.03, pad=0.02, ticks=ticks)
    for ax in list(axes[0]) + [axes[1, 0]]:
        ax.set_xlabel("lag (tokens)")
        if log_lag:
            ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, c.T - 1)
    fig.suptitle(title, fontsize=11)
    # Saved through a palette of 128 colours (Pillow comes with matplotlib):
    # a third of the size of matplotlib's RGBA file, with no visible change.
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    Image.fromarray(rgb).quantize(colors=128).save(path, format="PNG", optimize=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="a bigs checkpoint (model.bin, state.bin or best.bin)")
    ap.add_argument("--out", default="kernels.png", help="the PNG to write (default %(default)s)")
    ap.add_argument("--npz", help="also write the kernels as arrays: fs and bs (L, T), d_fs, d_bs, dt_fs, dt_bs (L)")
    ap.add_argument("--log-lag", action="store_true", help="lag axis on a log scale (long T)")
    args = ap.parse_args(argv)
    try:
        header, c, params, _ = read_ckpt(args.ckpt)
    except (ConvertError, OSError) as e:
        sys.exit("plot_kernels.py: %s (pass a checkpoint written by bigs or dev/convert_hf.py)" % e)
    K = kernels(c, params)
    print("%s: L = %d layers, N = %d modes, T = %d, step %d" % (args.ckpt, c.L, c.N, c.T, header["step"]))
    print_table(c, params, K)
    try:
        if args.npz:
            np.savez(args.npz, fs=K["fs"], bs=K["bs"], **{
                "%s_%s" % (what, d):
                (params[d + "_d"] if what == "d" else np.exp(params[d + "_log_step"].astype(np.float64)))
                for d, _ in DIRECTIONS for what in ("d", "dt")
            })
            print("wrote %s" % args.npz)
        plot(args.out, c, K, "S4D kernels of %s (step %d; L %d, N %d, T %d)" %
             (os.path.basename(args.ckpt), header["step"], c.L, c.N, c.T), args.log_lag)
    except ImportError:
        sys.exit("plot_kernels.py: needs matplotlib: apt-get install python3-matplotlib")
    except OSError as e:
        sys.exit("plot_kernels.py: cannot write the output: %s" % e)
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
