"""The PyTorch peer of `bigs bench`: times BiGS training steps of dev/reference.py.

    python3 dev/bench_torch.py --config large --seq 128 --batch 64

One step is what `bigs bench` does: forward with dropout, the MLM head on the
masked rows only, cross-entropy, backward, clip_grad_norm_(1.0), AdamW. The
line per mode has the C++ bench's fields and FLOP count, so the two compare
directly (dev/gpu_check.sh greps 'tokens/s'). Nothing here is fatal: a missing
torch, a failing torch.compile or an out-of-memory prints a line and moves on,
and the exit status is 0.
"""

import argparse
import gc
import math
import os
import sys
import time

CONFIGS = {  # name: (H, I, L, N), as bigs.cu's built-in configs
    "tiny": (64, 128, 2, 16),
    "base": (768, 2304, 12, 64),
    "large": (1024, 3072, 23, 64),
}
V = 30522  # bert-large-uncased's vocabulary
PEAK_FLOPS = 989e12  # dense bf16 peak of an H100/H200 SXM, as in bigs bench


def flops_per_step(H, I, L, B, T, per_seq):
    """bigs bench's formula: the seven dense layers per layer, the MLM head on
    the P masked rows, and six real FFTs of length n per channel and SSM."""
    tokens, P = B * T, B * per_seq
    n = 1 << (2 * T - 1).bit_length()  # smallest power of two >= 2T
    dense = L * (3 * I * H + 4 * H * H)
    return 6 * dense * tokens + 6 * P * (H * H + V * H) + 12 * L * B * H * 2.5 * n * math.log2(n)


def is_oom(torch, e):
    # torch < 2.0 has no OutOfMemoryError; compile may also wrap the OOM.
    return isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())) or "out of memory" in str(e)


def first_line(e):
    text = str(e).strip().splitlines()
    return ((text[0] if text else "") or type(e).__name__)[:200]


def run_mode(torch, ref, args, mode):
    H, I, L, N = CONFIGS[args.config]
    B, T, dev = args.batch, args.seq, args.device
    per_seq = min(20, max(1, round(0.15 * T)))
    # dropout 0.1 as bigs bench sets; reference.py applies it after the
    # embedding LayerNorm in training mode (its only MLM-path dropout).
    config = ref.Config(V=V, H=H, I=I, L=L, N=N, T=T, types=2, labels=0, dropout=0.1)
    model = ref.build_model(config, dev, torch.float32, conv="fft", seed=1)
    model.train()
    # bf16 = fp32 parameters under autocast; fp32 = plain fp32 (TF32 stays at
    # torch's default, off for matmuls, like bigs bench --precision fp32).
    autocast_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(999, V, (B, T), generator=g).to(dev)
    types = torch.zeros(B, T, dtype=torch.long, device=dev)
    pos = [1 + k * (T - 1) // per_seq for k in range(per_seq)]
    rows = torch.tensor([b * T + t for b in range(B) for t in pos], device=dev)
    targets = torch.randint(999, V, (len(pos) * B,), generator=g).to(dev)

    def loss_fn(ids, types, rows, targets):
        with ref.autocast_context(dev, autocast_dtype):
            x = model.encode(ids, types)
            # Gather the masked rows first: logits are (P, V), never (B, T, V).
            x = x.reshape(-1, H)[rows]
            return model.loss(model.mlm_logits(x), targets)

    params = list(model.parameters())
    decayed = [p for name, p in model.named_parameters() if ref.is_decayed(name)]
    plain = [p for name, p in model.named_parameters() if not ref.is_decayed(name)]
    groups = [{"params": decayed, "weight_decay": 0.05}, {"params": plain, "weight_decay": 0.0}]
    hyper = dict(lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
    opt = None
    if dev == "cuda":
        try:
            opt = torch.optim.AdamW(groups, fused=True, **hyper)
        except (TypeError, RuntimeError, ValueError):  # no fused AdamW in this torch
            pass
    if opt is None:
        try:
            opt = torch.optim.AdamW(groups, foreach=True, **hyper)
        except (TypeError, RuntimeError, ValueError):
            opt = torch.optim.AdamW(groups, **hyper)

    if mode == "compile":
        if not hasattr(torch, "compile"):
            print("torch-compile: unavailable (torch %s has no torch.compile)" % torch.__version__)
            return
        try:
            loss_fn = torch.compile(loss_fn)
        except Exception as e:
            print("torch-compile: unavailable (%s)" % first_line(e))
            return

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ids, types, rows, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        # Warm-up: compilation (compile mode), cuBLAS/cuFFT plans, allocator.
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        sync()
        if mode == "compile":
            print("torch-compile: compile and %d warm-up steps %.1f s" % (args.warmup, time.perf_counter() - start))
        if dev == "cuda":
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            for _ in range(args.steps):
                loss = step()
            t1.record()
            t1.synchronize()
            ms = t0.elapsed_time(t1) / args.steps
        else:
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = step()
            ms = (time.perf_counter() - start) * 1e3 / args.steps
    except Exception as e:
        if dev == "cuda" and is_oom(torch, e):
            print("torch-%s: out of memory at batch %d" % (mode, B))
        elif mode == "compile":
            print("torch-compile: unavailable (%s)" % first_line(e))
        else:
            raise
        return

    flops = flops_per_step(H, I, L, B, T, per_seq)
    seconds = ms / 1e3
    line = "torch-%s %s: T %d  batch %d  %d steps  %.2f ms/step  %.0f tokens/s  %.1f TFLOP/s  MFU %.2f%% (of 989 " \
        "TFLOP/s)" % (mode, args.dtype, T, B, args.steps, ms, B * T / seconds, flops / seconds / 1e12,
                      100 * flops / seconds / PEAK_FLOPS)
    if dev == "cuda":
        line += "  peak %.1f GiB" % (torch.cuda.max_memory_allocated() / 2**30)
    print(line)
    if not math.isfinite(loss.item()):
        print("torch-%s: warning: loss is %s" % (mode, loss.item()))


def parse_modes(values):
    modes = [m.strip() for v in (values or ["eager,compile"]) for m in v.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("eager", "compile")]
    if bad:
        raise argparse.ArgumentTypeError("unknown --mode %s (eager or compile)" % ", ".join(bad))
    return list(dict.fromkeys(modes))  # unique, in the given order


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="large", choices=sorted(CONFIGS), help="model size (default %(default)s)")
    parser.add_argument("--seq", type=int, default=128, help="sequence length T (default %(default)s)")
    parser.add_argument("--batch", type=int, default=64, help="sequences per step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first, compilation included (default %(default)s)")
    parser.add_argument("--mode", action="append", metavar="{eager,compile}",
                        help="eager, compile, or a comma list; repeatable (default: both)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="(default %(default)s)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"],
                        help="bf16: fp32 parameters under bf16 autocast; fp32: no autocast (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        modes = parse_modes(args.mode)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if args.seq < 2 or args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --seq >= 2, --batch >= 1, --steps >= 1, --warmup >= 0")

    try:
        import torch
    except Exception as e:
        print("torch: not available (%s)" % first_line(e))
        return 0
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import reference as ref
    except Exception as e:
        print("torch: %s, but dev/reference.py does not import (%s)" % (torch.__version__, first_line(e)))
        return 0

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("torch: %s, device cuda not available" % torch.__version__)
            return 0
        name = torch.cuda.get_device_name()
    else:
        name = "cpu (%d threads)" % torch.get_num_threads()
    print("torch: %s, device %s" % (torch.__version__, name))

    for mode in modes:
        try:
            run_mode(torch, ref, args, mode)
        except Exception as e:  # an OOM while building the model or its inputs
            if not (args.device == "cuda" and is_oom(torch, e)):
                raise
            print("torch-%s: out of memory at batch %d" % (mode, args.batch))
        # Each mode starts from a fresh model and an empty allocator.
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        if mode == "compile" and hasattr(torch, "_dynamo"):
            torch._dynamo.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
