#!/usr/bin/env python3
"""Plots the loss curves of a bigs run from its log.jsonl to a PNG.

    python3 dev/plot_log.py out/demo/run/log.jsonl [more logs...] --out loss.png

Train loss per step (light) with a moving average (dark), validation loss
(or dev loss for fine-tuning) as points. Needs matplotlib (Debian:
python3-matplotlib); the trainer itself needs nothing of this.
"""
import argparse
import json
import sys


def read_log(path):
    train, val = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            if "loss" in r:
                train.append((r["step"], r["loss"]))
            for key in ("val_loss", "dev_loss"):
                if key in r:
                    val.append((r["step"], r[key]))
    return train, val


def moving_average(ys, k):
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="log.jsonl files written by bigs pretrain/finetune")
    ap.add_argument("--out", default="loss.png", help="the PNG to write")
    ap.add_argument("--smooth", type=int, default=20, help="moving-average window in steps")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("needs matplotlib: apt-get install python3-matplotlib")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for path in args.logs:
        train, val = read_log(path)
        if not train and not val:
            sys.exit(f"{path}: no loss records")
        if train:
            xs, ys = zip(*train)
            line, = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
            ax.plot(xs, moving_average(list(ys), args.smooth), color=line.get_color(), label=f"{path}: train")
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, "o-", label=f"{path}: validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
