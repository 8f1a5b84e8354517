"""BiGS reference in PyTorch: the independent test oracle for bigs.cu.

This file re-implements BiGS (the attention-free BERT of "Pretraining Without
Attention") from a written specification of the model (docs/MODEL.md
describes the same model), without looking at the C++ code, so that the two
implementations can only agree if both follow the spec. All
gradients come from autograd, all math runs in float64, and the results are
written to one binary fixture that the C++ tests (test/fixture.h) read:

    /usr/bin/python3 dev/reference.py --out build/fixture.bin

The run is deterministic (fixed seed) and takes a few seconds on two cores.
What the fixture holds, by record-name prefix:

    mlm/ cls/ reg/   three small models (pure MLM, 3-way classification,
                     regression), each with its inputs, its parameters
                     (float32), the encoder output, the logits, the loss and
                     d loss / d parameter for every parameter (float64)
    adamw/           one AdamW step from zero moments on the mlm parameters
    hippo/           the HiPPO-LegS initial A_im for N = 8 and N = 64
    ssm/             one S4D kernel on its own and its parameter gradients;
                     ssm/conv_*: the whole SSM (kernel, causal convolution,
                     D skip) on a small input, with all its gradients

Before writing, it checks itself: the FFT and the direct convolution give the
same model, autograd through the complex kernel matches finite differences,
and the written file reads back bit for bit.

The same model code can be imported and timed elsewhere (dev/bench_torch.py):
build_model(config, device, dtype) returns a BiGS module whose parameters are
named and shaped exactly like the fixture's, and importing this file has no
side effects.

Dimension legend: B batch, T sequence, H hidden, I intermediate, V vocab,
N SSM modes (complex), L layers.
"""

import argparse
import contextlib
import math
import os
import struct
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Configuration and the parameter table

LN_EPS = 1e-12  # docs/MODEL.md section 1; BERT's value, much smaller than torch's 1e-5
A_RE_MAX = -1e-4  # A_re is clipped to at most this, keeping every mode decaying
PAD_ID = 0
CLS_ID = 2
SEP_ID = 3


@dataclass
class Config:
    V: int  # vocabulary
    H: int  # hidden size
    I: int  # intermediate size
    L: int  # layers
    N: int  # complex SSM modes per SSM
    T: int  # sequence length = max_position_embeddings
    types: int  # token type vocabulary
    labels: int  # 0: pure MLM model; 1: regression (MSE); > 1: classification
    dropout: float = 0.0  # after the embeddings and before the classifier


def param_shapes(c):
    """The parameter table: (name, shape) in fixture order. Per-layer tensors
    are stacked over layers first; dense weights are (out, in) as in
    torch.nn.Linear, so a dense layer is y = x @ W.T + b."""
    shapes = [
        ("wte", (c.V, c.H)),  # word embeddings, also the tied MLM decoder
        ("wpe", (c.T, c.H)),
        ("wtt", (c.types, c.H)),
        ("ln_emb_w", (c.H,)),
        ("ln_emb_b", (c.H,)),
        ("ln_w", (c.L, c.H)),  # the per-layer pre-norm
        ("ln_b", (c.L, c.H)),
        ("dv_w", (c.L, c.I, c.H)),
        ("dv_b", (c.L, c.I)),
        ("duf_w", (c.L, c.H, c.H)),
        ("duf_b", (c.L, c.H)),
        ("dub_w", (c.L, c.H, c.H)),
        ("dub_b", (c.L, c.H)),
    ]
    for s in ("fs", "bs"):  # forward and backward SSM
        shapes += [
            (s + "_a_re", (c.L, c.N)),
            (s + "_a_im", (c.L, c.N)),
            (s + "_c", (c.L, c.N, 2)),  # last axis: real, imaginary
            (s + "_d", (c.L,)),
            (s + "_log_step", (c.L,)),
        ]
    shapes += [
        ("ducf_w", (c.L, c.H, c.H)),
        ("ducf_b", (c.L, c.H)),
        ("ducb_w", (c.L, c.H, c.H)),
        ("ducb_b", (c.L, c.H)),
        ("dol_w", (c.L, c.I, c.H)),
        ("dol_b", (c.L, c.I)),
        ("do_w", (c.L, c.H, c.I)),
        ("do_b", (c.L, c.H)),
        ("head_w", (c.H, c.H)),  # cls.predictions.transform.dense
        ("head_b", (c.H,)),
        ("head_ln_w", (c.H,)),  # cls.predictions.transform.LayerNorm
        ("head_ln_b", (c.H,)),
        ("head_bias", (c.V,)),  # cls.predictions.bias
    ]
    if c.labels > 0:
        shapes += [
            ("pool_w", (c.H, c.H)),
            ("pool_b", (c.H,)),
            ("cls_w", (c.labels, c.H)),
            ("cls_b", (c.labels,)),
        ]
    return shapes


LAYERNORM_PARAMS = {"ln_emb_w", "ln_emb_b", "ln_w", "ln_b", "head_ln_w", "head_ln_b"}


def is_decayed(name):
    """AdamW weight decay mask (docs/MODEL.md section 12): no decay on biases and
    LayerNorm parameters. The SSM parameters are not biases, so they decay."""
    is_bias = name.endswith("_b") or name == "head_bias"
    return not is_bias and name not in LAYERNORM_PARAMS


# ----------------------------------------------------------------------------
# Layers


def gelu_tanh(x):
    # The tanh approximation, the JAX default the official model uses inside
    # the layers (the MLM head uses the exact erf form, see BiGS.mlm_logits).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def dense(x, w, b):
    return x @ w.transpose(-1, -2) + b


def ssm_kernel(a_re, a_im, c, log_step, T):
    """S4D kernel with zero-order hold (docs/MODEL.md section 4), K (T,).
    a_re, a_im (N); c (N, 2); log_step scalar. Complex math in the parameter
    precision, at least float32: bf16 has no complex type and would lose the
    phase of exp(l dt A) for long sequences anyway."""
    real = torch.promote_types(a_re.dtype, torch.float32)
    a_re, a_im, c, log_step = (t.to(real) for t in (a_re, a_im, c, log_step))
    dt = torch.exp(log_step)
    # torch.clamp passes no gradient where it clips: dA_re = 0 on clipped modes.
    A = torch.complex(torch.clamp(a_re, max=A_RE_MAX), a_im)  # (N)
    Ct = torch.complex(c[:, 0], c[:, 1]) * (torch.exp(dt * A) - 1.0) / A  # (N)
    l = torch.arange(T, dtype=real, device=a_re.device)
    powers = torch.exp((l[:, None] * dt) * A[None, :])  # (T, N)
    return (powers * Ct[None, :]).sum(-1).real  # (T)


def causal_conv_direct(K, u):
    """y[b, t, h] = sum_{s <= t} K[t - s] u[b, s, h] as one (T, T) lower
    triangular Toeplitz matrix times u: the plain O(T^2) definition."""
    T = u.shape[1]
    lag = torch.arange(T, device=u.device)[:, None] - torch.arange(T, device=u.device)[None, :]
    toeplitz = torch.where(lag >= 0, K[lag.clamp(min=0)], torch.zeros((), dtype=K.dtype, device=K.device))
    return toeplitz.to(u.dtype) @ u


def causal_conv_fft(K, u):
    """The same convolution through an FFT of length 2T: the zero padding makes
    the circular convolution equal to the linear one on the first T outputs."""
    T = u.shape[1]
    uf = torch.fft.rfft(u.to(K.dtype), n=2 * T, dim=1)  # (B, T+1, H)
    kf = torch.fft.rfft(K, n=2 * T)  # (T+1)
    return torch.fft.irfft(uf * kf[None, :, None], n=2 * T, dim=1)[:, :T].to(u.dtype)


def ssm_forward_with_kernel(K, u, d, conv):
    """y = K * u + D u on u (B, T, H): the same kernel on every channel."""
    return conv(K, u) + d * u


def ssm_forward(u, a_re, a_im, c, d, log_step, conv):
    K = ssm_kernel(a_re, a_im, c, log_step, u.shape[1])
    return ssm_forward_with_kernel(K, u, d, conv)


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)


# ----------------------------------------------------------------------------
# The model


class BiGS(torch.nn.Module):
    """BiGS with the flat, layer-stacked parameter layout of param_shapes().
    forward(ids, types) returns (hidden, logits); loss() turns logits into the
    training loss of this model's kind (MLM, classification or regression)."""

    def __init__(self, config, device="cpu", dtype=torch.float64, conv="direct"):
        super().__init__()
        self.config = config
        self.conv = {"direct": causal_conv_direct, "fft": causal_conv_fft}[conv]
        for name, shape in param_shapes(config):
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape, device=device, dtype=dtype)))

    def encode(self, ids, types):
        """The encoder output after the last layer, (B, T, H). Every position,
        padding included, runs through both SSMs (docs/MODEL.md section 10)."""
        c, p = self.config, self
        T = ids.shape[1]
        x = p.wte[ids] + p.wpe[:T][None] + p.wtt[types]
        x = F.dropout(layer_norm(x, p.ln_emb_w, p.ln_emb_b), c.dropout, self.training)
        for l in range(c.L):
            h = layer_norm(x, p.ln_w[l], p.ln_b[l])
            v = gelu_tanh(dense(h, p.dv_w[l], p.dv_b[l]))  # (B, T, I)
            uf = gelu_tanh(dense(h, p.duf_w[l], p.duf_b[l]))  # (B, T, H)
            # The backward branch runs the causal SSM on the reversed sequence
            # and flips its result back, so it sees the future of each token.
            ub = gelu_tanh(dense(h.flip(1), p.dub_w[l], p.dub_b[l]))
            sf = ssm_forward(uf, p.fs_a_re[l], p.fs_a_im[l], p.fs_c[l], p.fs_d[l], p.fs_log_step[l], self.conv)
            sb = ssm_forward(ub, p.bs_a_re[l], p.bs_a_im[l], p.bs_c[l], p.bs_d[l], p.bs_log_step[l], self.conv)
            cf = dense(sf, p.ducf_w[l], p.ducf_b[l])
            cb = dense(sb, p.ducb_w[l], p.ducb_b[l]).flip(1)
            g = gelu_tanh(dense(cf * cb, p.dol_w[l], p.dol_b[l]))  # (B, T, I)
            x = x + dense(g * v, p.do_w[l], p.do_b[l])
        return x  # no final LayerNorm

    def mlm_logits(self, x):
        """(B, T, V) at every position; the decoder is tied to wte."""
        p = self
        z = layer_norm(F.gelu(dense(x, p.head_w, p.head_b)), p.head_ln_w, p.head_ln_b)
        return z @ p.wte.transpose(0, 1) + p.head_bias

    def cls_logits(self, x, ids):
        """(B, labels). The pooler averages the example's own tokens, as the
        tokenizer's attention mask marks them (docs/MODEL.md section 6): [CLS]
        through the last [SEP]; the padding after it is left out, a [PAD] id
        inside the text is not. The mask is used here and nowhere else."""
        p = self
        T = ids.shape[1]
        is_sep = (ids == SEP_ID).long()
        last_sep = T - 1 - is_sep.flip(1).argmax(1)  # (B,) index of the last [SEP]
        positions = torch.arange(T, device=ids.device)[None, :]
        mask = (positions <= last_sep[:, None]) & is_sep.bool().any(1, keepdim=True)  # no [SEP]: no tokens
        mask = mask.to(x.dtype)[:, :, None]  # (B, T, 1)
        mean = (x * mask).sum(1) / mask.sum(1).clamp(min=1)
        pooled = torch.tanh(dense(mean, p.pool_w, p.pool_b))
        return dense(F.dropout(pooled, self.config.dropout, self.training), p.cls_w, p.cls_b)

    def forward(self, ids, types):
        x = self.encode(ids, types)
        logits = self.mlm_logits(x) if self.config.labels == 0 else self.cls_logits(x, ids)
        return x, logits

    def loss(self, logits, target):
        """MLM: mean cross-entropy over positions with target != -1.
        Classification: mean cross-entropy over the batch. Regression: mean
        squared error over the batch."""
        labels = self.config.labels
        if labels == 0:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-1)
        if labels == 1:
            return F.mse_loss(logits[:, 0], target.to(logits.dtype))
        return F.cross_entropy(logits, target)


def hippo_a_im(N):
    """Initial A_im (N) for the "hippo" init (docs/MODEL.md section 9): the imaginary
    parts w of the eigenvalues -1/2 + i w of S = -M + p p^T, M HiPPO-LegS."""
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * n + 1)
    M = np.tril(np.outer(r, r), -1) + np.diag(n + 1)
    p = np.sqrt(n + 0.5)
    S = -M + np.outer(p, p)
    # -i S itself is not Hermitian (its diagonal is i/2); take the eigenvalues
    # of -i (S + I/2), which is exactly Hermitian and has the same w. This is
    # what eigvalsh(-1j * S) computes too, since it ignores the imaginary part
    # of the diagonal.
    w = np.linalg.eigvalsh(-1j * (S + 0.5 * np.eye(N)))
    assert np.allclose(np.linalg.eigvalsh(-1j * S), w, rtol=0, atol=1e-9)
    assert np.allclose(np.linalg.eigvals(S).real, -0.5, rtol=0, atol=1e-6), "S is not -1/2 + skew"
    return w


def init_params(model, seed):
    """The released model's initialisation (docs/MODEL.md section 9), for training
    and benchmarks; the fixture uses random_params() instead."""
    c, g = model.config, torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    values = {}
    for name, shape in param_shapes(c):
        if name.endswith("_a_re"):
            values[name] = torch.full(shape, -0.5, dtype=torch.float64)
        elif name.endswith("_a_im"):
            values[name] = torch.from_numpy(hippo_a_im(c.N)).expand(shape)
        elif name.endswith("_c") and len(shape) == 3:
            values[name] = normal(shape, math.sqrt(0.5))
        elif name.endswith("_log_step"):
            u = torch.rand(shape, generator=g, dtype=torch.float64)
            values[name] = math.log(0.01) + u * (math.log(1.0) - math.log(0.01))
        elif name in LAYERNORM_PARAMS:
            values[name] = torch.ones(shape) if name.endswith("_w") else torch.zeros(shape)
        elif name.endswith("_d"):
            values[name] = torch.ones(shape)
        elif name.endswith("_b") or name == "head_bias":
            values[name] = torch.zeros(shape)
        elif name in ("head_w", "cls_w"):  # Flax's default: lecun normal, std 1/sqrt(fan_in)
            values[name] = normal(shape, 1 / math.sqrt(shape[-1]))
        else:  # dense kernels and embeddings
            values[name] = normal(shape, 0.02)
    with torch.no_grad():
        for name, value in values.items():
            getattr(model, name).copy_(value)


def build_model(config, device="cpu", dtype=torch.float64, conv="direct", seed=0):
    """A BiGS with the released model's initialisation, ready to train or time.
    dtype is the parameter dtype; for bf16 keep float32 parameters and run
    under autocast_context()."""
    model = BiGS(config, device, dtype, conv)
    init_params(model, seed)
    return model


def autocast_context(device, dtype):
    """bf16 autocast for benchmarks; a no-op for float32/float64."""
    if dtype == torch.bfloat16:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------
# The optimizer


def adamw_step(param, grad, lr, beta1, beta2, eps, weight_decay, decay, step=1):
    """One AdamW step from zero moments with bias correction and decoupled
    weight decay, in float64. Returns the new parameter."""
    m = (1 - beta1) * grad
    v = (1 - beta2) * grad * grad
    mhat = m / (1 - beta1**step)
    vhat = v / (1 - beta2**step)
    update = mhat / (np.sqrt(vhat) + eps)
    if decay:
        update = update + weight_decay * param
    return param - lr * update


# ----------------------------------------------------------------------------
# Fixture inputs and parameters

FIXTURE_MAGIC = 0x58494642  # "BFIX" read as a little-endian uint32
FIXTURE_VERSION = 1
DTYPE_CODES = {np.dtype("<f4"): 0, np.dtype("<i4"): 1, np.dtype("<f8"): 2}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


def f32(x):
    """Round to float32 and back: the C++ reads parameters as float32, so the
    oracle must compute from exactly those values."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def random_params(c, rng):
    """Parameters far from the default init so every one of them matters to
    the loss: O(1) activations, nonzero biases, LayerNorm scales away from 1,
    and in every SSM one mode with A_re > -1e-4 (clipped, zero gradient) and
    one just inside the clip."""
    values = {}
    for name, shape in param_shapes(c):
        if name.endswith("_a_re"):
            a = rng.uniform(-0.8, -0.1, shape)
            for l in range(c.L):
                clipped, near = rng.choice(c.N, 2, replace=False)
                a[l, clipped] = 0.05
                a[l, near] = -3e-4
            values[name] = a
        elif name.endswith("_a_im"):
            values[name] = rng.normal(0.0, 3.0, shape)
        elif name.endswith("_c") and len(shape) == 3:
            values[name] = rng.normal(0.0, 0.5, shape)
        elif name.endswith("_d"):
            values[name] = rng.normal(1.0, 0.2, shape)
        elif name.endswith("_log_step"):
            values[name] = rng.uniform(math.log(0.01), math.log(1.0), shape)
        elif name in LAYERNORM_PARAMS:
            values[name] = (1.0 if name.endswith("_w") else 0.0) + rng.normal(0.0, 0.1, shape)
        elif name in ("wte", "wpe", "wtt"):
            values[name] = rng.normal(0.0, 0.5, shape)
        elif name.endswith("_b") or name == "head_bias":
            values[name] = rng.normal(0.0, 0.1, shape)
        else:  # dense weights
            values[name] = rng.normal(0.0, 0.25, shape)
    return {name: f32(v) for name, v in values.items()}


def random_inputs(c, B, rng):
    """ids and token types (B, T): [CLS] first, two segments each closed by
    [SEP], content ids in [5, V), and trailing [PAD] on shorter sequences;
    sequence 1 also has a [PAD] id inside its first segment."""
    ids = np.zeros((B, c.T), dtype=np.int32)
    types = np.zeros((B, c.T), dtype=np.int32)
    lengths = [c.T, (2 * c.T + 2) // 3, (c.T + 2) // 3][:B] + [c.T] * max(0, B - 3)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(5, c.V, n)
        ids[b, 0] = CLS_ID
        first_sep = n // 2
        ids[b, first_sep] = SEP_ID
        ids[b, n - 1] = SEP_ID
        types[b, first_sep + 1 : n] = 1  # the second segment, padding stays 0
    if B > 1 and lengths[1] >= 6:  # inside the first segment, before its [SEP] at n // 2
        ids[1, 2] = PAD_ID  # a literal "[PAD]" in the text: a token of the example all the same
    return ids, types


def mlm_targets(ids, V, rng):
    """-1 (ignored) except at ~25% of the non-padding positions, at least one
    per sequence, where the target is any id in [0, V)."""
    targets = np.full(ids.shape, -1, dtype=np.int32)
    for b in range(ids.shape[0]):
        real = np.flatnonzero(ids[b] != PAD_ID)
        chosen = rng.choice(real, max(1, round(0.25 * len(real))), replace=False)
        targets[b, chosen] = rng.integers(0, V, len(chosen))
    return targets


# ----------------------------------------------------------------------------
# Oracle computations


def run_model(c, params, ids, types, target, conv="direct"):
    """Forward and backward of one model in float64. Returns hidden, logits,
    loss and the gradient of every parameter (zero for unused ones, e.g. the
    MLM head of a classification model)."""
    model = BiGS(c, "cpu", torch.float64, conv)
    with torch.no_grad():
        for name, value in params.items():
            getattr(model, name).copy_(torch.from_numpy(value))
    hidden, logits = model(torch.from_numpy(ids).long(), torch.from_numpy(types).long())
    target = torch.from_numpy(target)
    target = target.double() if c.labels == 1 else target.long()
    loss = model.loss(logits, target)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        grads[name] = np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy()
    return hidden.detach().numpy(), logits.detach().numpy(), loss.item(), grads


def model_section(prefix, c, B, rng):
    """Records of one model: config, inputs, parameters, outputs, gradients."""
    params = random_params(c, rng)
    ids, types = random_inputs(c, B, rng)
    if c.labels == 0:
        target = mlm_targets(ids, c.V, rng)
    elif c.labels == 1:
        target = rng.uniform(0.0, 5.0, B).astype(np.float32)
    else:
        target = rng.integers(0, c.labels, B).astype(np.int32)
    hidden, logits, loss, grads = run_model(c, params, ids, types, target)

    # The FFT convolution must give the same model as the direct sum.
    hidden_fft, logits_fft, loss_fft, grads_fft = run_model(c, params, ids, types, target, conv="fft")
    assert np.allclose(hidden_fft, hidden, rtol=1e-10, atol=1e-10), prefix + " fft/direct hidden"
    assert np.allclose(logits_fft, logits, rtol=1e-10, atol=1e-10), prefix + " fft/direct logits"
    assert abs(loss_fft - loss) <= 1e-12 * (1 + abs(loss)), prefix + " fft/direct loss"
    for name in grads:
        assert np.allclose(grads_fft[name], grads[name], rtol=1e-8, atol=1e-10), prefix + " fft/direct " + name

    target_name = "targets" if c.labels == 0 else "labels"
    config = [c.V, c.H, c.I, c.L, c.N, c.T, c.types, c.labels, B]
    records = [
        (prefix + "config", np.array(config, dtype=np.int32)),
        (prefix + "ids", ids),
        (prefix + "types", types),
        (prefix + target_name, target),
    ]
    records += [(prefix + "param/" + name, params[name].astype(np.float32)) for name in params]
    records += [(prefix + "grad/" + name, grads[name]) for name in params]
    records += [
        (prefix + "logits", logits),
        (prefix + "loss", np.array([loss])),
        (prefix + "hidden", hidden),
    ]
    return records, params, grads


def adamw_section(params, grads):
    hparams = [1e-3, 0.9, 0.98, 1e-6, 0.05]
    records = [("adamw/hparams", np.array(hparams))]
    for name, value in params.items():
        g = f32(grads[name])  # the C++ optimizer sees float32 gradients
        new = adamw_step(value, g, *hparams, decay=is_decayed(name))
        records.append(("adamw/param/" + name, new))
    return records


def ssm_section(rng):
    """One S4D kernel alone (N = 8, T = 37: not a power of two), and the
    gradients of sum(K * dK) for a random dK."""
    N, T = 8, 37
    a_re = rng.uniform(-0.8, -0.1, N)
    a_re[3] = 0.05  # clipped: exp(l dt A) then barely decays, zero dA_re
    a_re[5] = -2e-5  # clipped too, from just below zero
    values = {
        "a_re": f32(a_re),
        "a_im": f32(rng.normal(0.0, 3.0, N)),
        "c": f32(rng.normal(0.0, 0.5, (N, 2))),
        "log_step": f32([rng.uniform(math.log(0.01), math.log(1.0))]),
    }
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
    dK = rng.normal(0.0, 1.0, T)
    K = ssm_kernel(tensors["a_re"], tensors["a_im"], tensors["c"], tensors["log_step"][0], T)
    (K * torch.from_numpy(dK)).sum().backward()
    assert tensors["a_re"].grad[3] == 0 and tensors["a_re"].grad[5] == 0, "clipped modes must get no gradient"

    # Cross-check autograd with central differences, where the complex math
    # is easiest to get wrong.
    def kernel_of(a_re, a_im, c, log_step):
        return ssm_kernel(a_re, a_im, c, log_step[0], T)

    inputs = tuple(torch.tensor(values[k], requires_grad=True) for k in ("a_re", "a_im", "c", "log_step"))
    assert torch.autograd.gradcheck(kernel_of, inputs, eps=1e-6, atol=1e-7, rtol=1e-6), "ssm_kernel gradcheck"

    records = [("ssm/" + k, v.astype(np.float32)) for k, v in values.items()]
    records += [("ssm/K", K.detach().numpy()), ("ssm/dK", dK)]
    records += [("ssm/grad_" + k, tensors[k].grad.numpy().copy()) for k in values]
    return records + ssm_conv_records(values, rng)


def ssm_conv_records(values, rng):
    """The whole SSM (kernel, causal convolution, D skip) with the ssm/ kernel
    parameters on u (2, 37, 5), and the gradients of sum(y * dy): the layer
    test between the bare kernel and the full model."""
    B, T, H = 2, 37, 5
    inputs = {
        "u": f32(rng.normal(0.0, 1.0, (B, T, H))),
        "d": f32([rng.normal(1.0, 0.2)]),
        "dy": f32(rng.normal(0.0, 1.0, (B, T, H))),
    }
    t = {k: torch.tensor(v, requires_grad=True) for k, v in list(values.items()) + list(inputs.items())}
    K = ssm_kernel(t["a_re"], t["a_im"], t["c"], t["log_step"][0], T)
    K.retain_grad()  # dK, the gradient the convolution hands to the kernel
    y = ssm_forward_with_kernel(K, t["u"], t["d"][0], causal_conv_direct)
    y_fft = ssm_forward_with_kernel(K, t["u"], t["d"][0], causal_conv_fft)
    assert torch.allclose(y_fft, y, rtol=1e-10, atol=1e-12), "ssm conv fft/direct"
    (y * t["dy"]).sum().backward()
    records = [("ssm/conv_" + k, v.astype(np.float32)) for k, v in inputs.items()]
    records += [("ssm/conv_y", y.detach().numpy()), ("ssm/conv_dK", K.grad.numpy().copy())]
    records += [("ssm/conv_grad_" + k, t[k].grad.numpy().copy()) for k in ("u", "d", "a_re", "a_im", "c", "log_step")]
    return records


def hippo_section():
    return [("hippo/N%d" % N, hippo_a_im(N)) for N in (8, 64)]


# ----------------------------------------------------------------------------
# Fixture file I/O
#
# Little-endian. Header: uint32 magic, uint32 version, uint32 record count.
# Each record: uint32 name length, name bytes (ASCII, no terminator), uint32
# dtype (0 float32, 1 int32, 2 float64), uint32 ndim, ndim x int64 dims, then
# the data in row-major order.


def write_fixture(path, records):
    names = [name for name, _ in records]
    assert len(names) == len(set(names)), "duplicate record names"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<III", FIXTURE_MAGIC, FIXTURE_VERSION, len(records)))
        for name, array in records:
            array = np.asarray(array)
            kind = {"f": "<f8" if array.dtype == np.float64 else "<f4", "i": "<i4"}[array.dtype.kind]
            data = np.ascontiguousarray(array, dtype=kind)
            encoded = name.encode("ascii")
            f.write(struct.pack("<I", len(encoded)) + encoded)
            f.write(struct.pack("<II", DTYPE_CODES[data.dtype], data.ndim))
            f.write(struct.pack("<%dq" % data.ndim, *data.shape))
            f.write(data.tobytes())
    # The rename makes a half-written fixture impossible to read.
    os.replace(tmp, path)


def read_fixture(path):
    """The fixture as {name: numpy array}, in file order."""
    with open(path, "rb") as f:
        blob = f.read()
    magic, version, count = struct.unpack_from("<III", blob, 0)
    if magic != FIXTURE_MAGIC or version != FIXTURE_VERSION:
        raise ValueError("%s: not a version %d fixture; rerun dev/reference.py" % (path, FIXTURE_VERSION))
    pos, records = 12, {}
    for _ in range(count):
        (n,) = struct.unpack_from("<I", blob, pos)
        name = blob[pos + 4 : pos + 4 + n].decode("ascii")
        pos += 4 + n
        code, ndim = struct.unpack_from("<II", blob, pos)
        shape = struct.unpack_from("<%dq" % ndim, blob, pos + 8)
        pos += 8 + 8 * ndim
        dtype = CODE_DTYPES[code]
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        records[name] = np.frombuffer(blob, dtype, size // dtype.itemsize, pos).reshape(shape)
        pos += size
    if pos != len(blob):
        raise ValueError("%s: %d trailing bytes; rerun dev/reference.py" % (path, len(blob) - pos))
    return records


# ----------------------------------------------------------------------------
# Command line

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def fixture_records(seed):
    rng = np.random.default_rng(seed)
    common = dict(V=97, H=24, I=40, L=2, N=8, T=19, types=2)
    B = 3
    records = []
    mlm, mlm_params, mlm_grads = model_section("mlm/", Config(labels=0, **common), B, rng)
    records += mlm
    records += model_section("cls/", Config(labels=3, **common), B, rng)[0]
    records += model_section("reg/", Config(labels=1, **common), B, rng)[0]
    records += adamw_section(mlm_params, mlm_grads)
    records += hippo_section()
    records += ssm_section(rng)
    return records


def time_forward_backward(device, dtype):
    """Smoke run of the importable model on another device/dtype: one training
    step of a small MLM model, to check that the code runs there."""
    c = Config(V=97, H=24, I=40, L=2, N=8, T=19, types=2, labels=0)
    param_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    model = build_model(c, device, param_dtype, conv="fft")
    rng = np.random.default_rng(0)
    ids, types = random_inputs(c, 3, rng)
    targets = torch.from_numpy(mlm_targets(ids, c.V, rng)).long().to(device)
    ids, types = (torch.from_numpy(a).long().to(device) for a in (ids, types))
    start = time.time()
    with autocast_context(device, dtype):
        _, logits = model(ids, types)
        loss = model.loss(logits, targets)
    loss.backward()
    print("%s %s: loss %.6f in %.3f s" % (device, dtype, loss.item(), time.time() - start))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/fixture.bin", help="fixture path (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    parser.add_argument("--dtype", default="float64", choices=sorted(DTYPES),
                        help="float64 writes the fixture; other dtypes or devices only run "
                        "a smoke training step of the model there (default %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.device != "cpu" or args.dtype != "float64":
        time_forward_backward(args.device, DTYPES[args.dtype])
        return 0

    start = time.time()
    records = fixture_records(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_fixture(args.out, records)

    # Self-check: the file reads back bit for bit.
    back = read_fixture(args.out)
    assert list(back) == [name for name, _ in records], "record names or order differ"
    for name, array in records:
        assert np.array_equal(back[name], np.asarray(array).astype(back[name].dtype)), name
        assert back[name].shape == np.shape(array), name
    size = os.path.getsize(args.out)
    print("wrote %s: %d records, %d bytes, %.1f s" % (args.out, len(records), size, time.time() - start))
    for s in ("mlm", "cls", "reg"):
        print("  %s loss %.10f" % (s, back[s + "/loss"][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
