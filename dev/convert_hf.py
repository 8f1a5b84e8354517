#!/usr/bin/env python3
"""Convert released BiGS checkpoints to bigs checkpoints and back.

    convert_hf.py to-bigs  --model DIR_OR_FILE [--config config.json] --out model.bin [--labels N]
    convert_hf.py to-torch --ckpt model.bin --out pytorch_model.bin [--config-out config.json]
    convert_hf.py inspect  FILE            (lists the tensors of any supported file)

Released checkpoints (Hugging Face hub, JunxiongWang/BiGS_{128,512,1024,4096}
and the *_MNLI fine-tunes) come as pytorch_model.bin (torch.save of a state
dict), model.safetensors, or flax_model.msgpack (flax.serialization). Key
names and layouts: docs/MODEL.md section 11 (from the project's spec), checked against the
authors' code (jxiw/BiGS: BiGS/modeling_bigs.py, BiGS/modeling_flax_bigs.py,
BiGS/configuration_bigs.py). Our format: README.md's "Checkpoint" / bigs.cu CkptHeader,
parameter order = reference.param_shapes().

to-bigs reads any of the three (a directory picks flax_model.msgpack, then
model.safetensors, then pytorch_model.bin, unless --format says which; sharded
*.index.json files are followed). Every tensor's shape is checked; a key it
does not understand, or an expected key that is absent, is reported and makes
it exit 1 (--allow-unknown / --allow-missing turn that into a warning; missing
tensors then get the released initialisation). Float16/bfloat16/float64 are
converted to float32 (with a note); float32 is copied bit for bit.

Layout decisions (the real files cannot be downloaded here):
  * PyTorch Linear weights are (out, in) = ours; Flax Dense kernels are
    (in, out) and are transposed.
  * SSM: A_re, A_im (N); C (N, 2) [real, imag]; D (1); log_step (1), as both
    releases define them. Also accepted: C as (2, N) (transposed; only when
    N != 2), C as a complex (N) array, D / log_step as 0-d scalars.
  * The PyTorch port's BiGSModel always builds a pooler, so its MLM files hold
    bigs.pooler.dense.*, which pretraining never trained (the JAX MLM model
    has no pooler at all). For an MLM import (labels 0) they are dropped with
    a note; with --labels N > 0 the new pooler is initialised N(0, 0.02) and
    the new classifier lecun normal (std 1/sqrt(H)), biases zero (seeded by
    --seed), or with --keep-pooler the file's
    pooler is kept (what the port's from_pretrained would do).
  * The PyTorch port's layers use the exact erf GELU where the official JAX
    model (and bigs) use the tanh form; the weights are the same, the outputs
    differ slightly. Reading or writing the PyTorch layout prints a note.
  * bigs.embeddings.position_ids (a persistent buffer, (1, T) int64) is
    accepted when it equals arange(T) and written back by to-torch.
  * cls.predictions.decoder.weight / .decoder.bias (tied in the port's state
    dict) are accepted when they equal the word embeddings / the MLM bias;
    anything else is an error (we have no untied decoder). Flax's tied model
    has no decoder params; an explicit cls/predictions/decoder/kernel must
    equal the embeddings transposed.
  * A file that kept only one name of a tied pair (word_embeddings or
    decoder.weight; cls.predictions.bias or decoder.bias: transformers'
    safetensors writer drops one of each shared pair) is read through the
    one present, with a note.
  * Flax trees wrapped in {"params": ...} (a variables dict) or a training
    checkpoint's "params" / "target" are unwrapped, with a note.
  * A classification file without the MLM head (cls.predictions.*) gets an
    all-zero head (head_w, head_b, head_ln_w, head_ln_b, head_bias) and a
    warning. to-torch writes the MLM head of a classification model only when
    it is not all zero, so both directions round-trip byte for byte.
  * config.json, when given (or found next to the model), must agree with the
    shapes (hidden_size, intermediate_size, num_hidden_layers,
    max_position_embeddings, vocab_size, type_vocab_size, num_ssm and, when
    the file has a classifier, num_labels / id2label); pre_norm must be true,
    pooler_type "non_padding_mean", tie_word_embeddings true. Without it
    everything is inferred from the shapes (N from A_re, L from the layer
    indices, labels from the classifier). Class i of a classifier is taken as
    class i of our task files (MNLI: entailment, neutral, contradiction, the
    GLUE/datasets order); an id2label with real names is printed as a warning
    to check.

to-torch writes the released layout: a .bin path gets torch.save of the
state dict (tied tensors shared, as the port saves them), .safetensors gets
safetensors (without the tied duplicates, as transformers saves them),
.msgpack gets the Flax layout. The PyTorch export has
bigs.embeddings.position_ids and, for a classification model, the pooler;
an MLM export has no bigs.pooler.* (the port's BiGSForMaskedLM builds an
unused one, which from_pretrained then initialises). --config-out writes a
config.json the authors' code loads (model_type "BiGS", num_ssm,
use_pykeops_kernel false, ...). Converted
files have step = samples_seen = seed = 0; a training-state checkpoint
(kind 2) is exported as its parameters only.

The Flax msgpack codec (and a plain msgpack codec) is implemented here, so
only numpy and torch are needed: an array is msgpack ExtType 1 whose payload
is msgpack (shape, dtype name, C-order bytes); arrays over 2**30 bytes are
{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}.
"""

import argparse
import json
import os
import struct
import sys
from inspect import signature

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import Config, param_shapes  # noqa: E402

# ----------------------------------------------------------------------------
# Our checkpoint (bigs.cu CkptHeader)

CKPT_MAGIC = 0x4B434742
CKPT_VERSION = 3  # 2 added the checksums, 3 task, vocabulary hash and run settings; 1 and 2 still read
KIND_MODEL, KIND_TRAIN_STATE = 1, 2
# magic, version, kind, micro (a training state's --micro-batch; 0 here); V H I
# L N T types labels; num_params, step,
# samples_seen, seed; payload_crc, header_crc (CRC-32C: of the floats after
# the header, and of the header with header_crc = 0); version 3: task (16
# bytes, NUL-padded; "" = none or unknown), vocab_hash (0 = unknown), run_kind,
# then the run's settings (zero here: a converted model is no training run).
HEADER = struct.Struct("<4I8i4Q2I16sII144x")
PAYLOAD_CRC_AT, HEADER_CRC_AT = 80, 84
assert HEADER.size == 256


class ConvertError(Exception):
    pass


# What bigs accepts (bigs.cu BIGS_CONFIG's ranges, and config_check's limit of
# 2^31 - 1 elements in one tensor).
CONFIG_RANGES = dict(V=(8, 65535), H=(1, 1 << 16), I=(1, 1 << 18), L=(1, 1024), N=(1, 4096), T=(1, 1 << 16),
                     types=(1, 16), labels=(0, 64))


def config_problems(c):
    """What in Config c bigs would refuse, as a list of phrases (empty: none)."""
    bad = ["%s = %d is outside bigs's range %d..%d" % (f, getattr(c, f), lo, hi)
           for f, (lo, hi) in CONFIG_RANGES.items() if not lo <= getattr(c, f) <= hi]
    if not bad:
        for what, n in (("V x H", c.V * c.H), ("T x H", c.T * c.H), ("H x H", c.H * c.H), ("I x H", c.I * c.H)):
            if n > 0x7FFFFFFF:
                bad.append("%s = %d elements, more than 2^31 - 1 in one tensor" % (what, n))
    return bad


# The PyTorch port (jxiw/BiGS BiGS/modeling_bigs.py, BiGSLayer) calls
# nn.functional.gelu inside each layer, the exact erf form; the official JAX
# model (Flax nn.gelu) and bigs use the tanh approximation (docs/MODEL.md section 3).
# The weights are the same either way; the outputs differ slightly.
ERF_NOTE_READ = ("the PyTorch layout: the authors' PyTorch port computes the GELUs inside the layers with the exact "
                 "erf form, the official JAX model and bigs with the tanh approximation; bigs gives this checkpoint "
                 "the JAX model's outputs, not the port's (they differ slightly)")
ERF_NOTE_WRITE = ("the PyTorch layout: the authors' PyTorch port will run these weights with exact erf GELUs inside "
                  "the layers, where bigs and the official JAX model use the tanh approximation; its outputs will "
                  "differ slightly from bigs's")


def crc32c(data, crc=0):
    """CRC-32C of data, extending the CRC of earlier bytes (bigsc/formats.h's crc32c)."""
    try:
        import crc32c as impl
    except ImportError:
        raise ConvertError("bigs checkpoints carry CRC-32C checksums: install Debian's python3-crc32c "
                           "(or pip install crc32c)")
    return impl.crc32c(data, crc)


def header_crc(head):
    """The header's own checksum: its CRC-32C with header_crc zero."""
    return crc32c(bytes(head[:HEADER_CRC_AT]) + bytes(4) + bytes(head[HEADER_CRC_AT + 4 : HEADER.size]))


def seal(blob):
    """Sets both checksums of a whole checkpoint (a bytearray) to match what it holds now."""
    struct.pack_into("<I", blob, PAYLOAD_CRC_AT, crc32c(memoryview(blob)[HEADER.size :]))
    struct.pack_into("<I", blob, HEADER_CRC_AT, header_crc(blob))


def table(c):
    return [(name, tuple(shape)) for name, shape in param_shapes(c)]


def num_params(c):
    return sum(int(np.prod(s, dtype=np.int64)) for _, s in table(c))


def read_ckpt(path):
    """Returns (header dict, Config, params {name: float32 array}, moments or None)."""
    blob = read_file(path, "bigs checkpoint (model.bin or state.bin)")
    if len(blob) < HEADER.size:
        raise ConvertError("%s: too short for a bigs checkpoint" % path)
    fields = HEADER.unpack_from(blob, 0)
    magic, version, kind, _ = fields[:4]
    V, H, I, L, N, T, types, labels = fields[4:12]
    count, step, samples, seed = fields[12:16]
    payload_crc, stored_header_crc = fields[16:18]
    if magic != CKPT_MAGIC:
        raise ConvertError("%s: not a bigs checkpoint (bad magic 0x%08x)" % (path, magic))
    if not 1 <= version <= CKPT_VERSION:
        raise ConvertError("%s: checkpoint version %d, this script reads versions 1 to %d"
                           % (path, version, CKPT_VERSION))
    if version == 1:
        print("convert_hf: note: %s is a version-1 checkpoint, which carries no checksum, so it is read unverified"
              % path, file=sys.stderr)
    elif header_crc(blob) != stored_header_crc:
        raise ConvertError("%s: the checkpoint's header is damaged (its CRC-32C is 0x%08X, it says 0x%08X)"
                           % (path, header_crc(blob), stored_header_crc))
    if kind not in (KIND_MODEL, KIND_TRAIN_STATE):
        raise ConvertError("%s: unknown checkpoint kind %d" % (path, kind))
    c = Config(V=V, H=H, I=I, L=L, N=N, T=T, types=types, labels=labels)
    bad = config_problems(c)
    if bad:
        raise ConvertError("%s: bigs cannot load this checkpoint: %s" % (path, "; ".join(bad)))
    want = num_params(c)
    if count != want:
        raise ConvertError("%s: header says %d parameters, its config needs %d" % (path, count, want))
    blocks = 3 if kind == KIND_TRAIN_STATE else 1
    if len(blob) != HEADER.size + 4 * blocks * want:
        raise ConvertError("%s: %d bytes, expected %d" % (path, len(blob), HEADER.size + 4 * blocks * want))
    got = crc32c(memoryview(blob)[HEADER.size :]) if version >= 2 else payload_crc
    if got != payload_crc:
        raise ConvertError("%s: checksum mismatch: the checkpoint's contents have CRC-32C 0x%08X, its header says "
                           "0x%08X; the file is damaged" % (path, got, payload_crc))
    flat = np.frombuffer(blob, "<f4", blocks * want, HEADER.size)
    params, pos = {}, 0
    for name, shape in table(c):
        n = int(np.prod(shape, dtype=np.int64))
        params[name] = flat[pos : pos + n].reshape(shape)
        pos += n
    header = dict(kind=kind, step=step, samples_seen=samples, seed=seed)
    moments = (flat[want : 2 * want], flat[2 * want :]) if blocks == 3 else None
    return header, c, params, moments


def vocab_hash(path):
    """bigs's hash of a vocab.txt (formats.h vocab_hash_of): the CRC-32C of its
    tokens, trailing whitespace gone, each followed by a newline; 1 for 0."""
    with open(path, "rb") as f:
        tokens = f.read().split(b"\n")
    if tokens and tokens[-1] == b"":
        tokens.pop()
    crc = 0
    for t in tokens:
        crc = crc32c(t.rstrip(b" \t\r\v\f") + b"\n", crc)
    return crc or 1


def write_ckpt(path, c, params, step=0, samples_seen=0, seed=0, vocab=0):
    """A kind-1 (model only) checkpoint, written as bigs writes one: to
    PATH.tmp, the payload's checksum computed while writing, synced, renamed,
    the directory synced."""
    count = num_params(c)

    def head(payload_crc, own_crc):
        return HEADER.pack(CKPT_MAGIC, CKPT_VERSION, KIND_MODEL, 0, c.V, c.H, c.I, c.L, c.N, c.T, c.types, c.labels,
                           count, step, samples_seen, seed, payload_crc, own_crc, b"", vocab, 0)

    def write(f):
        crc = 0
        f.write(head(0, 0))
        for name, shape in table(c):
            a = np.ascontiguousarray(params[name], dtype="<f4")
            if a.shape != shape:
                raise ConvertError("internal: %s has shape %s, expected %s" % (name, a.shape, shape))
            raw = a.tobytes()
            crc = crc32c(raw, crc)
            f.write(raw)
        f.seek(0)
        f.write(head(crc, header_crc(head(crc, 0))))

    write_atomically(path, write, sync=True)


def check_output(path, flag):
    """Refuses an output path that cannot be written as a file, before any work: a folder, a
    path in a folder that does not exist, an empty path."""
    if not path:
        raise ConvertError("%s is empty: give a file name" % flag)
    if os.path.isdir(path):
        raise ConvertError("%s %s is a folder: give the file to write (e.g. %s)" % (
            flag, path, os.path.join(path, "model.bin" if flag == "--out" else "config.json")))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConvertError("%s %s: its folder %s does not exist" % (flag, path, parent))


def write_atomically(path, write, sync=False, binary=True):
    """write(f) into PATH.tmp, then renamed to PATH (and, with sync, fsynced
    first and the folder after); on any failure PATH.tmp is removed and PATH
    is untouched."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp) and not os.path.isdir(tmp):
            os.remove(tmp)
        raise
    if sync:
        d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)


# ----------------------------------------------------------------------------
# msgpack (the subset flax uses, encoded byte for byte as msgpack-python does
# with use_bin_type=True) and flax.serialization's array convention


class ExtType:
    def __init__(self, code, data):
        self.code, self.data = code, data

    def __eq__(self, other):
        return isinstance(other, ExtType) and (self.code, self.data) == (other.code, other.data)

    def __repr__(self):
        return "ExtType(%d, %d bytes)" % (self.code, len(self.data))


def msgpack_pack(obj, default=None):
    out = []

    def put(o):
        if o is None:
            out.append(b"\xc0")
        elif o is True:
            out.append(b"\xc3")
        elif o is False:
            out.append(b"\xc2")
        elif isinstance(o, int):
            if 0 <= o < 0x80:
                out.append(struct.pack("B", o))
            elif -32 <= o < 0:
                out.append(struct.pack("b", o))
            elif 0 <= o <= 0xFF:
                out.append(b"\xcc" + struct.pack("B", o))
            elif 0 <= o <= 0xFFFF:
                out.append(b"\xcd" + struct.pack(">H", o))
            elif 0 <= o <= 0xFFFFFFFF:
                out.append(b"\xce" + struct.pack(">I", o))
            elif 0 <= o < 1 << 64:
                out.append(b"\xcf" + struct.pack(">Q", o))
            elif -0x80 <= o < 0:
                out.append(b"\xd0" + struct.pack(">b", o))
            elif -0x8000 <= o < 0:
                out.append(b"\xd1" + struct.pack(">h", o))
            elif -0x80000000 <= o < 0:
                out.append(b"\xd2" + struct.pack(">i", o))
            elif -(1 << 63) <= o < 0:
                out.append(b"\xd3" + struct.pack(">q", o))
            else:
                raise ValueError("integer out of msgpack range")
        elif isinstance(o, float):
            out.append(b"\xcb" + struct.pack(">d", o))
        elif isinstance(o, str):
            b = o.encode("utf-8")
            n = len(b)
            if n < 32:
                out.append(struct.pack("B", 0xA0 | n))
            elif n <= 0xFF:
                out.append(b"\xd9" + struct.pack("B", n))
            elif n <= 0xFFFF:
                out.append(b"\xda" + struct.pack(">H", n))
            else:
                out.append(b"\xdb" + struct.pack(">I", n))
            out.append(b)
        elif isinstance(o, (bytes, bytearray, memoryview)):
            b = bytes(o)
            n = len(b)
            if n <= 0xFF:
                out.append(b"\xc4" + struct.pack("B", n))
            elif n <= 0xFFFF:
                out.append(b"\xc5" + struct.pack(">H", n))
            else:
                out.append(b"\xc6" + struct.pack(">I", n))
            out.append(b)
        elif isinstance(o, (list, tuple)):
            n = len(o)
            if n < 16:
                out.append(struct.pack("B", 0x90 | n))
            elif n <= 0xFFFF:
                out.append(b"\xdc" + struct.pack(">H", n))
            else:
                out.append(b"\xdd" + struct.pack(">I", n))
            for x in o:
                put(x)
        elif isinstance(o, dict):
            n = len(o)
            if n < 16:
                out.append(struct.pack("B", 0x80 | n))
            elif n <= 0xFFFF:
                out.append(b"\xde" + struct.pack(">H", n))
            else:
                out.append(b"\xdf" + struct.pack(">I", n))
            for k, v in o.items():
                put(k)
                put(v)
        elif isinstance(o, ExtType):
            n = len(o.data)
            fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
            if n in fixed:
                out.append(struct.pack("B", fixed[n]))
            elif n <= 0xFF:
                out.append(b"\xc7" + struct.pack("B", n))
            elif n <= 0xFFFF:
                out.append(b"\xc8" + struct.pack(">H", n))
            else:
                out.append(b"\xc9" + struct.pack(">I", n))
            out.append(struct.pack("b", o.code))
            out.append(o.data)
        elif default is not None:
            put(default(o))
        else:
            raise TypeError("cannot msgpack %r" % type(o))

    put(obj)
    return b"".join(out)


def msgpack_unpack(data, ext_hook=None, raw=False):
    """Decodes one msgpack object that spans all of data."""
    mv = memoryview(data)
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(mv):
            raise ValueError("msgpack: truncated data")
        b = mv[pos : pos + n]
        pos += n
        return b

    def unpack(fmt):
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def string(n):
        b = bytes(take(n))
        return b if raw else b.decode("utf-8")

    def ext(n):
        code = unpack("b")
        payload = bytes(take(n))
        return ext_hook(code, payload) if ext_hook else ExtType(code, payload)

    def get():
        t = unpack("B")
        if t < 0x80:
            return t
        if t >= 0xE0:
            return t - 0x100
        if 0x80 <= t <= 0x8F:
            return getmap(t & 0x0F)
        if 0x90 <= t <= 0x9F:
            return [get() for _ in range(t & 0x0F)]
        if 0xA0 <= t <= 0xBF:
            return string(t & 0x1F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        if t in (0xC4, 0xC5, 0xC6):
            return bytes(take(unpack({0xC4: "B", 0xC5: ">H", 0xC6: ">I"}[t])))
        if t in (0xC7, 0xC8, 0xC9):
            return ext(unpack({0xC7: "B", 0xC8: ">H", 0xC9: ">I"}[t]))
        if t == 0xCA:
            return unpack(">f")
        if t == 0xCB:
            return unpack(">d")
        ints = {0xCC: "B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: "b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if t in ints:
            return unpack(ints[t])
        if 0xD4 <= t <= 0xD8:
            return ext(1 << (t - 0xD4))
        if t in (0xD9, 0xDA, 0xDB):
            return string(unpack({0xD9: "B", 0xDA: ">H", 0xDB: ">I"}[t]))
        if t in (0xDC, 0xDD):
            return [get() for _ in range(unpack(">H" if t == 0xDC else ">I"))]
        if t in (0xDE, 0xDF):
            return getmap(unpack(">H" if t == 0xDE else ">I"))
        raise ValueError("msgpack: unsupported type byte 0x%02x" % t)

    def getmap(n):
        d = {}
        for _ in range(n):
            k = get()
            d[k] = get()
        return d

    obj = get()
    if pos != len(mv):
        raise ValueError("msgpack: %d trailing bytes" % (len(mv) - pos))
    return obj


FLAX_NDARRAY, FLAX_COMPLEX, FLAX_NPSCALAR = 1, 2, 3
FLAX_MAX_CHUNK = 2**30


def bf16_to_f32(u16):
    return (np.asarray(u16, dtype="<u2").astype("<u4") << 16).view("<f4")


def flax_array_to_bytes(arr):
    """flax.serialization._ndarray_to_bytes: msgpack (shape, dtype name, C-order bytes)."""
    arr = np.asarray(arr)
    return msgpack_pack((tuple(int(s) for s in arr.shape), arr.dtype.name, np.ascontiguousarray(arr).tobytes()))


def flax_array_from_bytes(data):
    shape, name, buf = msgpack_unpack(data, raw=True)
    name = name.decode("ascii")
    if name == "bfloat16":  # numpy has no bfloat16
        return _Tagged(bf16_to_f32(np.frombuffer(buf, "<u2")).reshape(shape), "bfloat16")
    # A dtype name of numbers only: np.dtype parses other strings as Python (a SyntaxError on a
    # damaged file, found by fuzz/convert_msgpack.py) and would accept object arrays.
    if name not in NUMERIC_DTYPES:
        raise ValueError("array of unknown dtype %r" % name[:40])
    return np.frombuffer(buf, np.dtype(name)).reshape(shape)


NUMERIC_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                  "float32", "float64", "complex64", "complex128"}


def flax_ext_hook(code, data):
    if code == FLAX_NDARRAY:
        return flax_array_from_bytes(data)
    if code == FLAX_NPSCALAR:
        return flax_array_from_bytes(data)[()]
    if code == FLAX_COMPLEX:
        re, im = msgpack_unpack(data)
        return complex(re, im)
    raise ConvertError("flax msgpack: unknown extension type %d" % code)


def flax_default(o):
    if isinstance(o, np.ndarray):
        return ExtType(FLAX_NDARRAY, flax_array_to_bytes(o))
    if isinstance(o, np.generic):
        return ExtType(FLAX_NPSCALAR, flax_array_to_bytes(np.asarray(o)))
    if isinstance(o, complex):
        return ExtType(FLAX_COMPLEX, msgpack_pack((o.real, o.imag)))
    raise TypeError("cannot serialise %r" % type(o))


def _chunked(arr):
    chunk = max(1, FLAX_MAX_CHUNK // arr.dtype.itemsize)
    flat = np.ascontiguousarray(arr).reshape(-1)
    pieces = [flat[i : i + chunk] for i in range(0, flat.size, chunk)]
    return {"__msgpack_chunked_array__": True,
            "shape": {str(i): int(s) for i, s in enumerate(arr.shape)},
            "chunks": {str(i): p for i, p in enumerate(pieces)}}


def _unchunk_tree(d):
    if isinstance(d, dict):
        if "__msgpack_chunked_array__" in d:
            shape = tuple(d["shape"][str(i)] for i in range(len(d["shape"])))
            return np.concatenate([d["chunks"][str(i)] for i in range(len(d["chunks"]))]).reshape(shape)
        return {k: _unchunk_tree(v) for k, v in d.items()}
    return d


def _chunk_tree(d):
    if isinstance(d, dict):
        return {k: _chunk_tree(v) for k, v in d.items()}
    if isinstance(d, np.ndarray) and d.size * d.dtype.itemsize > FLAX_MAX_CHUNK:
        return _chunked(d)
    return d


def flax_to_bytes(tree):
    """flax.serialization.msgpack_serialize of a nested dict of numpy arrays."""
    return msgpack_pack(_chunk_tree(tree), default=flax_default)


def flax_from_bytes(data):
    """flax.serialization.msgpack_restore. Malformed data raises ValueError."""
    try:
        return _unchunk_tree(msgpack_unpack(data, ext_hook=flax_ext_hook))
    except (TypeError, KeyError, IndexError, AttributeError, RecursionError, struct.error) as e:
        # What a malformed file makes the decoder trip over (found by fuzz/convert_msgpack.py):
        # a list as a map key, an array that is not (shape, dtype, bytes), a chunked array
        # without its chunks, arrays nested thousands deep, ...
        raise ValueError("malformed msgpack (%s: %s)" % (type(e).__name__, e)) from e


def flatten_tree(tree, prefix=""):
    flat = {}
    for k, v in tree.items():
        key = prefix + str(k)
        if isinstance(v, dict):
            flat.update(flatten_tree(v, key + "/"))
        else:
            flat[key] = v
    return flat


def unflatten_tree(flat):
    tree = {}
    for key, v in flat.items():
        node = tree
        parts = key.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


# ----------------------------------------------------------------------------
# safetensors (header: uint64 LE length, JSON; then raw little-endian data)

ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
             "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "BF16": "<u2"}
ST_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64",
            np.dtype("<i4"): "I32", np.dtype("<i2"): "I16", np.dtype("i1"): "I8", np.dtype("u1"): "U8",
            np.dtype("?"): "BOOL"}


def read_file(path, what="file"):
    """The bytes of PATH; a folder, a missing file or an unreadable one is a ConvertError naming it."""
    if os.path.isdir(path):
        raise ConvertError("%s is a folder, not a %s" % (path, what))
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConvertError("%s: cannot read it: %s" % (path, e.strerror or e)) from e


def parse_json(text, where):
    """JSON text (bytes) -> object; not UTF-8, not JSON or an object that names a key twice
    (json.loads would keep the last silently) is a ConvertError naming WHERE."""
    def pairs(items):
        seen = {}
        for k, v in items:
            if k in seen:
                raise ConvertError("%s names %r twice" % (where, k[:100]))
            seen[k] = v
        return seen

    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError as e:
        raise ConvertError("%s is not UTF-8 text (byte %d)" % (where, e.start)) from e
    except RecursionError as e:
        raise ConvertError("%s: JSON nested too deep" % where) from e
    except ValueError as e:  # json.JSONDecodeError; also Python's limit on the digits of an integer
        raise ConvertError("%s is not valid JSON (%s)" % (where, str(e)[:200])) from e


def load_json(path, what):
    """A JSON object from the file PATH (WHAT says which file it is, for the messages)."""
    obj = parse_json(read_file(path, what), path)
    if not isinstance(obj, dict):
        raise ConvertError("%s: a %s holds a JSON object, not %s" % (path, what, json_kind(obj)))
    return obj


def json_kind(x):
    """'an object', 'a list', 'a string', 'a number', 'true', ... : what a JSON value is, for messages."""
    for types, name in ((dict, "an object"), (list, "a list"), (str, "a string"), (bool, "a boolean"),
                        ((int, float), "a number")):
        if isinstance(x, types):
            return name
    return "null" if x is None else "a %s" % type(x).__name__


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def safetensors_load(path):
    """{name: array} of a safetensors file, checked as the format's reference
    implementation checks it: the header is a JSON object naming each tensor
    once with a known dtype, a shape of non-negative integers and data_offsets
    [begin, end] whose size is the shape's; the tensors tile the data section
    exactly (no overlaps, gaps or trailing bytes); __metadata__, if any, is an
    object. Anything else is a ConvertError naming the file."""
    blob = read_file(path, "safetensors file")
    if len(blob) < 8:
        raise ConvertError("%s: %d bytes, too short for safetensors (an 8-byte header length comes first)"
                           % (path, len(blob)))
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > len(blob) - 8:
        raise ConvertError("%s: safetensors header length %d runs past the file (%d bytes)" % (path, n, len(blob)))
    header = parse_json(blob[8 : 8 + n], "%s: the safetensors header" % path)
    if not isinstance(header, dict):
        raise ConvertError("%s: the safetensors header is %s, not an object" % (path, json_kind(header)))
    meta = header.get("__metadata__")
    if meta is not None and not isinstance(meta, dict):
        raise ConvertError("%s: __metadata__ is %s, not an object" % (path, json_kind(meta)))
    base = 8 + n
    size = len(blob) - base
    out, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        what = "%s: tensor %s" % (path, name[:200])
        if not isinstance(info, dict):
            raise ConvertError("%s: its entry is %s, not an object" % (what, json_kind(info)))
        for key in ("dtype", "shape", "data_offsets"):
            if key not in info:
                raise ConvertError("%s has no %s" % (what, key))
        dt, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dt, str) or dt not in ST_DTYPES:
            raise ConvertError("%s has unsupported dtype %s" % (what, str(dt)[:40]))
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise ConvertError("%s: shape %s is not a list of non-negative integers" % (what, str(shape)[:80]))
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise ConvertError("%s: data_offsets %s is not [begin, end]" % (what, str(offsets)[:80]))
        begin, end = offsets
        if not 0 <= begin <= end <= size:
            raise ConvertError("%s has bad data_offsets [%d, %d] (the data section has %d bytes)"
                               % (what, begin, end, size))
        count = 1
        for s in shape:
            count *= s  # Python integers: no overflow
        itemsize = np.dtype(ST_DTYPES[dt]).itemsize
        if count * itemsize != end - begin:
            raise ConvertError("%s: %d bytes for shape %s of %s (%d bytes)" % (what, end - begin, tuple(shape), dt,
                                                                             count * itemsize))
        spans.append((begin, end, name))
        raw = blob[base + begin : base + end]
        if dt == "BF16":
            arr = _Tagged(bf16_to_f32(np.frombuffer(raw, "<u2")), "bfloat16")
        else:
            arr = np.frombuffer(raw, ST_DTYPES[dt])
        out[name] = arr.reshape(shape)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ConvertError("%s: tensors %s [%d, %d] and %s [%d, %d] overlap" % (path, n0[:200], b0, e0, n1[:200],
                                                                                   b1, e1))
    at = 0
    for begin, end, name in spans:
        if begin > at:
            raise ConvertError("%s: %d bytes before tensor %s belong to no tensor" % (path, begin - at, name[:200]))
        at = end
    if at != size:
        raise ConvertError("%s: the last %d bytes of the data section belong to no tensor" % (path, size - at))
    return out


class _Tagged(np.ndarray):
    """A float32 array that remembers the dtype it was stored in (bfloat16)."""

    def __new__(cls, arr, stored):
        obj = np.asarray(arr).view(cls)
        obj.stored = stored
        return obj

    def __array_finalize__(self, obj):
        self.stored = getattr(obj, "stored", None)


def safetensors_save(path, tensors, metadata=None):
    """tensors: {name: numpy array}; written sorted by name, header padded to
    a multiple of 8 bytes with spaces (as the reference implementation does)."""
    header, offset, chunks = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        a = np.ascontiguousarray(a, a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype)
        raw = a.tobytes()
        header[name] = {"dtype": ST_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)

    write_atomically(path, write)


# ----------------------------------------------------------------------------
# Loading a released file into {key: numpy array}

TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
ST_FILES = ("model.safetensors", "model.safetensors.index.json")
FLAX_FILES = ("flax_model.msgpack", "flax_model.msgpack.index.json")


def torch_load(path):
    import torch

    # weights_only (torch >= 1.13) unpickles tensors and containers only, never code. Asked of
    # the signature: retrying without it after a TypeError would run any pickle a bad file holds.
    safe = {"weights_only": True} if "weights_only" in signature(torch.load).parameters else {}
    try:
        sd = torch.load(path, map_location="cpu", **safe)
    except Exception as e:  # noqa: BLE001 - torch.load raises a zoo of types on a bad file (fuzz/convert_torch.py)
        raise ConvertError("%s: not a PyTorch checkpoint that torch.load can read (%s: %s)"
                           % (path, type(e).__name__, str(e).split("\n")[0][:300])) from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):  # a pickled str, list or tensor loads too (fuzz/convert_torch.py)
        raise ConvertError("%s: holds a %s, not a state dict of named tensors" % (path, type(sd).__name__))
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError("%s: entry %s is a %s, not a tensor" % (path, k, type(v).__name__))
        v = v.detach()
        if v.dtype == torch.bfloat16:
            out[k] = _Tagged(v.float().numpy(), "bfloat16")
        else:
            out[k] = v.contiguous().numpy()
    return out


def file_head(path, n=16):
    """The first N bytes of PATH (fewer for a shorter file)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise ConvertError("%s: cannot read it: %s" % (path, e.strerror or e)) from e


def is_bigs_checkpoint(path):
    return os.path.isfile(path) and file_head(path, 4) == struct.pack("<I", CKPT_MAGIC)


def sniff_format(path):
    """The released format of one file: from its suffix, else from its first bytes."""
    if path.endswith(".msgpack"):
        return "flax"
    if path.endswith(".safetensors"):
        return "safetensors"
    head = file_head(path) + b"\0\0"
    if head[:2] == b"PK" or (head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"  # zip (torch >= 1.6) or legacy pickle
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):
        return "flax"  # a msgpack map
    return "safetensors"


def read_index(path):
    """A sharded model's .index.json -> {key: shard file name}, checked: an
    object with a non-empty object weight_map whose values are plain file
    names (no folders, not an index) of files next to the index."""
    index = load_json(path, "sharded model's index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConvertError("%s: no weight_map object (it has %s)" % (path, json_kind(weight_map)
                                                                       if "weight_map" in index else "none"))
    if not weight_map:
        raise ConvertError("%s: the weight_map is empty" % path)
    d = os.path.dirname(path)
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise ConvertError("%s: the weight_map gives %s the shard %s, not a file name" % (path, key[:200],
                                                                                          str(shard)[:80]))
    for shard in sorted(set(weight_map.values())):
        if not shard or shard in (".", "..") or "/" in shard or os.sep in shard or shard.endswith(".index.json"):
            raise ConvertError("%s: shard %r is not a file name next to the index (a shard is a plain file name, "
                               "not a folder, a path or another index)" % (path, shard[:200]))
        full = os.path.join(d, shard)
        if not os.path.exists(full):
            raise ConvertError("%s names shard %s, which does not exist" % (path, shard))
        if not os.path.isfile(full):
            raise ConvertError("%s names shard %s, which is not a file" % (path, shard))
    return weight_map


def resolve_model(path, fmt):
    """(format, [files], index) for a model file or directory; index is
    (the .index.json path, its weight_map) for a sharded model, else None."""
    if os.path.isdir(path):
        order = {"flax": [FLAX_FILES], "safetensors": [ST_FILES], "torch": [TORCH_FILES],
                 None: [FLAX_FILES, ST_FILES, TORCH_FILES]}[fmt]
        for names in order:
            for name in names:
                p = os.path.join(path, name)
                if os.path.isfile(p):
                    return resolve_model(p, fmt)
        raise ConvertError("%s: no flax_model.msgpack, model.safetensors or pytorch_model.bin in it" % path)
    if not os.path.exists(path):
        raise ConvertError("%s: no such file" % path)
    if path.endswith(".index.json"):
        weight_map = read_index(path)
        d = os.path.dirname(path)
        files = [os.path.join(d, f) for f in sorted(set(weight_map.values()))]
        kinds = {f: fmt or sniff_format(f) for f in files}
        if len(set(kinds.values())) > 1:
            raise ConvertError("%s: its shards mix formats (%s)" % (path, ", ".join(
                "%s: %s" % (os.path.basename(f), k) for f, k in sorted(kinds.items()))))
        return kinds[files[0]], files, (path, weight_map)
    return fmt or sniff_format(path), [path], None


def load_released(path, fmt=None):
    """(format, files, {key: array}) with Flax keys joined by '/'."""
    fmt, files, index = resolve_model(path, fmt)
    tensors = {}
    for p in files:
        if is_bigs_checkpoint(p):
            header, c, _, _ = read_ckpt(p)  # a damaged one: its checksum error
            raise ConvertError("%s is a bigs checkpoint (kind %d, %s), not a released file: it needs no conversion "
                               "(to-torch exports it)" % (p, header["kind"], c))
        if fmt == "torch":
            part = torch_load(p)
        elif fmt == "safetensors":
            part = safetensors_load(p)
        else:
            try:
                tree = flax_from_bytes(read_file(p, "Flax msgpack file"))
            except ValueError as e:
                raise ConvertError("%s: not a Flax msgpack file: %s" % (p, e)) from e
            if not isinstance(tree, dict):
                raise ConvertError("%s: not a Flax parameter tree" % p)
            # transformers saves the bare params; a flax variables dict has them under "params",
            # a training checkpoint (TrainState: step, params, opt_state; old flax.optim: target).
            for wrapper in ("params", "target"):
                inner = tree.get(wrapper)
                if isinstance(inner, dict) and not any(k in tree for k in ("s4_bert", "cls", "embeddings")):
                    rest = sorted(set(tree) - {wrapper})
                    if rest:
                        print("convert_hf: note: %s: using its '%s'; ignoring %s" % (p, wrapper, ", ".join(rest)),
                              file=sys.stderr)
                    tree = inner
                    break
            part = flatten_tree(tree)
            for k, v in part.items():
                if not isinstance(v, np.ndarray):
                    raise ConvertError("%s: leaf %s is a %s, not an array" % (p, k, type(v).__name__))
        dup = set(part) & set(tensors)
        if dup:
            raise ConvertError("%s: keys also in another shard: %s" % (p, sorted(dup)[:5]))
        if index is not None:
            index_path, weight_map = index
            name = os.path.basename(p)
            listed = {k for k, v in weight_map.items() if v == name}
            lacks, unlisted = sorted(listed - set(part)), sorted(set(part) - listed)
            if lacks:
                raise ConvertError("%s lists %s in shard %s, which does not hold %s" % (
                    index_path, ", ".join(lacks[:5]) + (" ..." if len(lacks) > 5 else ""), name,
                    "it" if len(lacks) == 1 else "them"))
            if unlisted:
                k = unlisted[0]
                where = ("under shard %s" % weight_map[k]) if k in weight_map else "nowhere"
                raise ConvertError("%s and its shard %s disagree: the shard holds %s%s, which the index lists %s" % (
                    index_path, name, k, " (and %d more)" % (len(unlisted) - 1) if len(unlisted) > 1 else "", where))
        tensors.update(part)
    return fmt, files, tensors


# ----------------------------------------------------------------------------
# The released key table

DENSE = [("dv", "dv"), ("du_forward", "duf"), ("du_backward", "dub"), ("duc_forward", "ducf"),
         ("duc_backward", "ducb"), ("dol", "dol"), ("do", "do")]
SSMS = [("fs4", "fs"), ("bs4", "bs")]


class Names:
    """Key spelling of one layout: 'torch' (also safetensors) or 'flax'."""

    def __init__(self, layout):
        self.layout = layout
        if layout == "torch":
            self.base, self.sep = "bigs.", "."
            self.w, self.ln_w, self.emb = "weight", "weight", "weight"
        else:
            self.base, self.sep = "s4_bert/", "/"
            self.w, self.ln_w, self.emb = "kernel", "scale", "embedding"

    def j(self, *parts):
        return self.sep.join(str(p) for p in parts)

    def layer(self, i, *parts):
        return self.base + self.j("encoder", "layer", i, *parts)

    def ssm(self, i, mod, param):
        if self.layout == "torch" and param != "D":
            return self.layer(i, mod, "kernel", param)
        return self.layer(i, mod, param)


def released_entries(c, layout, head=True, pooler=False, classifier=False):
    """[(key, our name, layer index or None, kind)] of one layout. kind: 'copy'
    (same shape as our slot), 'dense' (Linear weight / Dense kernel), 'c' (the
    SSM's C), 'scalar' (D, log_step: stored as (1,))."""
    n = Names(layout)
    e = [
        (n.base + n.j("embeddings", "word_embeddings", n.emb), "wte", None, "copy"),
        (n.base + n.j("embeddings", "position_embeddings", n.emb), "wpe", None, "copy"),
        (n.base + n.j("embeddings", "token_type_embeddings", n.emb), "wtt", None, "copy"),
        (n.base + n.j("embeddings", "LayerNorm", n.ln_w), "ln_emb_w", None, "copy"),
        (n.base + n.j("embeddings", "LayerNorm", "bias"), "ln_emb_b", None, "copy"),
    ]
    for i in range(c.L):
        e += [(n.layer(i, "LayerNorm", n.ln_w), "ln_w", i, "copy"), (n.layer(i, "LayerNorm", "bias"), "ln_b", i, "copy")]
        for mod, ours in DENSE:
            e += [(n.layer(i, mod, n.w), ours + "_w", i, "dense"), (n.layer(i, mod, "bias"), ours + "_b", i, "copy")]
        for mod, s in SSMS:
            e += [(n.ssm(i, mod, "A_re"), s + "_a_re", i, "copy"), (n.ssm(i, mod, "A_im"), s + "_a_im", i, "copy"),
                  (n.ssm(i, mod, "C"), s + "_c", i, "c"), (n.ssm(i, mod, "D"), s + "_d", i, "scalar"),
                  (n.ssm(i, mod, "log_step"), s + "_log_step", i, "scalar")]
    if head:
        p = n.j("cls", "predictions")
        e += [(n.j(p, "transform", "dense", n.w), "head_w", None, "dense"),
              (n.j(p, "transform", "dense", "bias"), "head_b", None, "copy"),
              (n.j(p, "transform", "LayerNorm", n.ln_w), "head_ln_w", None, "copy"),
              (n.j(p, "transform", "LayerNorm", "bias"), "head_ln_b", None, "copy"),
              (n.j(p, "bias"), "head_bias", None, "copy")]
    if pooler:
        e += [(n.base + n.j("pooler", "dense", n.w), "pool_w", None, "dense"),
              (n.base + n.j("pooler", "dense", "bias"), "pool_b", None, "copy")]
    if classifier:
        e += [(n.j("classifier", n.w), "cls_w", None, "dense"), (n.j("classifier", "bias"), "cls_b", None, "copy")]
    return e


def _keys_of(layout, prefix):
    c = Config(V=8, H=1, I=1, L=0, N=1, T=1, types=1, labels=1)
    return [k for k, name, _, _ in released_entries(c, layout, head=True, pooler=True, classifier=True)
            if name.startswith(prefix)]


def head_keys(layout):
    return _keys_of(layout, "head_")


def pooler_keys(layout):
    return _keys_of(layout, "pool_")


def classifier_keys(layout):
    return _keys_of(layout, "cls_")


# ----------------------------------------------------------------------------
# to-bigs

CONFIG_KEYS = [("vocab_size", "V"), ("hidden_size", "H"), ("intermediate_size", "I"), ("num_hidden_layers", "L"),
               ("num_ssm", "N"), ("max_position_embeddings", "T"), ("type_vocab_size", "types")]


class Report:
    def __init__(self):
        self.notes, self.warnings, self.errors = [], [], []
        self.dtypes = {}  # (stored dtype, what was done) -> keys

    def dtype(self, key, stored, action):
        self.dtypes.setdefault((stored, action), []).append(key)

    def note(self, msg):
        self.notes.append(msg)

    def warn(self, msg):
        self.warnings.append(msg)

    def error(self, msg):
        self.errors.append(msg)

    def print(self, out=None):
        out = out or sys.stderr
        for (stored, action), keys in sorted(self.dtypes.items()):
            self.notes.append("%d tensors stored as %s, %s (e.g. %s)" % (len(keys), stored, action, keys[0]))
        self.dtypes = {}
        for tag, msgs in (("note", self.notes), ("warning", self.warnings), ("error", self.errors)):
            for m in msgs:
                print("convert_hf: %s: %s" % (tag, m), file=out)


def detect_layout(tensors):
    keys = list(tensors)
    if any(k.startswith("s4_bert/") or k.startswith("cls/") or k.startswith("classifier/") for k in keys):
        return "flax", keys
    if any(k.startswith("bigs.") for k in keys):
        return "torch", keys
    # A bare base model (BiGSModel / FlaxBiGSModel saved on its own): no prefix.
    if any(k.startswith("embeddings/") or k.startswith("encoder/") for k in keys):
        return "flax-bare", keys
    if any(k.startswith("embeddings.") or k.startswith("encoder.") for k in keys):
        return "torch-bare", keys
    raise ConvertError("cannot tell the layout: no key starts with bigs., s4_bert/, embeddings or encoder "
                       "(first keys: %s)" % keys[:5])


def infer_config(tensors, layout, cfg_json, report):
    n = Names(layout)

    def shape_of(key):
        if key not in tensors:
            raise ConvertError("cannot infer the config: %s is missing" % key)
        return tuple(tensors[key].shape)

    V, H = shape_of(n.base + n.j("embeddings", "word_embeddings", n.emb))
    T = shape_of(n.base + n.j("embeddings", "position_embeddings", n.emb))[0]
    types = shape_of(n.base + n.j("embeddings", "token_type_embeddings", n.emb))[0]
    dv = shape_of(n.layer(0, "dv", n.w))
    I = dv[0] if layout == "torch" else dv[1]
    N = shape_of(n.ssm(0, "fs4", "A_re"))[0]
    prefix = n.base + n.j("encoder", "layer") + n.sep
    layers = set()
    for k in tensors:
        if k.startswith(prefix):
            idx = k[len(prefix):].split(n.sep)[0]
            if idx.isdigit():
                layers.add(int(idx))
    L = max(layers) + 1
    if layers != set(range(L)):
        report.error("layer indices are not 0..%d: %s" % (L - 1, sorted(set(range(L)) - layers)))
    found = dict(V=V, H=H, I=I, L=L, N=N, T=T, types=types)
    if cfg_json is not None:
        for key, ours in CONFIG_KEYS:
            if key in cfg_json and int(cfg_json[key]) != found[ours]:
                report.error("config.json %s = %s but the tensors say %d" % (key, cfg_json[key], found[ours]))
            elif key not in cfg_json:
                report.note("config.json has no %s; %d from the tensor shapes" % (key, found[ours]))
        if cfg_json.get("pre_norm", True) is not True:
            report.error("config.json pre_norm = %r: only the pre-norm BiGS (the released one) is supported"
                         % cfg_json["pre_norm"])
        if cfg_json.get("pooler_type", "non_padding_mean") != "non_padding_mean":
            report.error("config.json pooler_type = %r: only non_padding_mean is supported" % cfg_json["pooler_type"])
        if abs(float(cfg_json.get("layer_norm_eps", 1e-12)) - 1e-12) > 1e-15:
            report.warn("config.json layer_norm_eps = %r; bigs always uses 1e-12" % cfg_json["layer_norm_eps"])
        if cfg_json.get("hidden_act", "gelu") != "gelu":
            report.warn("config.json hidden_act = %r; bigs uses gelu (erf) in the MLM head" % cfg_json["hidden_act"])
        if cfg_json.get("tie_word_embeddings", True) is not True:
            report.error("config.json tie_word_embeddings = false: bigs ties the decoder to the embeddings")
        if cfg_json.get("position_embedding_type", "absolute") != "absolute":
            report.error("config.json position_embedding_type = %r: only absolute" % cfg_json["position_embedding_type"])
    return found


def check_config_json(cfg, path):
    """The types of the config.json entries that are read: integers, a number, an object."""
    for key in [k for k, _ in CONFIG_KEYS] + ["num_labels"]:
        if key in cfg and not _is_int(cfg[key]):
            raise ConvertError("%s: %s is %s, not an integer" % (path, key, json.dumps(cfg[key])[:80]))
    if "layer_norm_eps" in cfg and not (isinstance(cfg["layer_norm_eps"], (int, float))
                                        and not isinstance(cfg["layer_norm_eps"], bool)):
        raise ConvertError("%s: layer_norm_eps is %s, not a number" % (path, json.dumps(cfg["layer_norm_eps"])[:80]))
    if "id2label" in cfg and not isinstance(cfg["id2label"], dict):
        raise ConvertError("%s: id2label is %s, not an object" % (path, json_kind(cfg["id2label"])))


def config_labels(cfg_json):
    if cfg_json is None:
        return None
    if "id2label" in cfg_json:
        return len(cfg_json["id2label"])
    if "num_labels" in cfg_json:
        return int(cfg_json["num_labels"])
    return None


def to_float32(key, a, report):
    stored = getattr(a, "stored", None) or a.dtype.name
    if a.dtype == np.float32:
        if stored != "float32":
            report.dtype(key, stored, "widened to float32 exactly")
        return np.asarray(a, dtype="<f4")
    if a.dtype in (np.float16, np.float64):
        report.dtype(key, a.dtype.name, "rounded to float32" if a.dtype == np.float64 else "widened to float32 exactly")
        return np.asarray(a, dtype="<f4")
    if np.iscomplexobj(a):
        return a
    raise ConvertError("%s has dtype %s, expected floating point" % (key, a.dtype))


def convert_slot(key, a, kind, layout, slot_shape, report):
    """A released tensor -> the value of one of our slots, shape-checked."""
    a = to_float32(key, a, report)
    if kind == "dense" and layout == "flax":
        a = a.T
    elif kind == "c":
        N = slot_shape[0]
        if np.iscomplexobj(a):
            if a.shape != (N,):
                raise ConvertError("%s: complex C of shape %s, expected (%d,)" % (key, a.shape, N))
            a = np.stack([a.real, a.imag], -1).astype("<f4")
            report.note("%s: complex C split into (real, imag)" % key)
        elif a.shape == (2, N) and N != 2:
            a = a.T
            report.note("%s: C stored as (2, N), transposed" % key)
    elif kind == "scalar":
        if a.shape in ((1,), ()):
            a = a.reshape(())
        else:
            raise ConvertError("%s has shape %s, expected (1,)" % (key, tuple(a.shape)))
    if np.iscomplexobj(a):
        raise ConvertError("%s is complex; only C may be" % key)
    if tuple(a.shape) != tuple(slot_shape):
        flip = kind == "dense" and layout == "flax"
        got, want = (a.shape[::-1], slot_shape[::-1]) if flip else (a.shape, slot_shape)
        raise ConvertError("%s has shape %s, expected %s" % (key, tuple(got), tuple(want)))
    return a


def init_normal(shape, rng, std=0.02):
    return (rng.standard_normal(shape) * std).astype("<f4")


def to_bigs(args):
    report = Report()
    lo, hi = CONFIG_RANGES["labels"]
    if args.labels is not None and not lo <= args.labels <= hi:
        raise ConvertError("--labels %d: bigs takes %d (an MLM model, no classifier), 1 (regression) or 2 to %d "
                           "classes" % (args.labels, lo, hi))
    check_output(args.out, "--out")
    fmt, files, tensors = load_released(args.model, args.format)
    layout, _ = detect_layout(tensors)
    if layout.endswith("-bare"):
        layout = layout[:-5]
        n = Names(layout)
        bare = {}
        for k, v in tensors.items():
            bare[k if k.startswith("cls") or k.startswith("classifier") else n.base + k] = v
        tensors = bare
        report.note("keys have no %s prefix (a bare base model); added" % Names(layout).base)
    n = Names(layout)
    if layout == "torch":
        report.note(ERF_NOTE_READ)
    # Tied pairs: a file that kept only one name of a tied pair (transformers'
    # safetensors writer drops one of two shared tensors) is read through the other.
    for primary, alias in ((n.base + n.j("embeddings", "word_embeddings", n.emb),
                            n.j("cls", "predictions", "decoder", n.w)),
                           (n.j("cls", "predictions", "bias"), n.j("cls", "predictions", "decoder", "bias"))):
        if primary not in tensors and alias in tensors:
            a = tensors.pop(alias)
            tensors[primary] = a.T if layout == "flax" and a.ndim == 2 else a
            report.note("%s is absent; read from its tied twin %s" % (primary, alias))

    cfg_path = args.config
    if cfg_path is None:
        guess = os.path.join(os.path.dirname(os.path.abspath(files[0])), "config.json")
        if os.path.exists(guess):
            cfg_path = guess
    cfg_json = None
    if cfg_path:
        cfg_json = load_json(cfg_path, "config.json")
        check_config_json(cfg_json, cfg_path)
        report.note("config: %s" % cfg_path)
    else:
        report.note("no config.json: the config comes from the tensor shapes alone")

    dims = infer_config(tensors, layout, cfg_json, report)

    has_cls = any(k in tensors for k in classifier_keys(layout))
    has_head = any(k in tensors for k in head_keys(layout))
    has_pool = any(k in tensors for k in pooler_keys(layout))
    file_labels = None
    if has_cls:
        w = tensors.get(classifier_keys(layout)[0])
        if w is None:
            raise ConvertError("%s is missing while %s is present" % tuple(classifier_keys(layout)))
        file_labels = w.shape[0] if layout == "torch" else w.shape[-1]
        cl = config_labels(cfg_json)
        if cl is not None and cl != file_labels:
            report.error("config.json says %d labels but the classifier has %d" % (cl, file_labels))
        names = (cfg_json or {}).get("id2label")
        if names and any(not str(v).startswith("LABEL_") for v in names.values()):
            # bigs' task files number classes as dev/FORMATS.md lists them (MNLI: entailment,
            # neutral, contradiction); a fine-tune with another order needs its rows permuted.
            report.warn("config.json id2label %s: check that it is the class order of the task files" % names)
        else:
            report.note("class i of the classifier is class i of the task files (config.json has no label names)")
    labels = file_labels or 0
    if args.labels is not None:
        if has_cls and args.labels != file_labels:
            if args.labels == 0:
                report.warn("--labels 0: the classifier and pooler of this classification model are dropped")
            else:
                raise ConvertError("--labels %d but the file's classifier has %d outputs" % (args.labels, file_labels))
        labels = args.labels
    c = Config(labels=labels, **dims)
    bad = config_problems(c)
    if bad:
        raise ConvertError("%s: bigs cannot load this model: %s" % (", ".join(files), "; ".join(bad)))

    keep_cls = has_cls and labels > 0
    expected = released_entries(c, layout, head=has_head or labels == 0, pooler=keep_cls or (labels > 0 and
                                args.keep_pooler and has_pool), classifier=keep_cls)
    shapes = dict(table(c))
    params = {name: np.zeros(shape, "<f4") for name, shape in shapes.items()}
    consumed, missing = set(), []
    for key, name, layer, kind in expected:
        slot = shapes[name] if layer is None else shapes[name][1:]
        if key not in tensors:
            missing.append((key, name, layer))
            continue
        consumed.add(key)  # understood, even when its shape is wrong (reported once, below)
        try:
            value = convert_slot(key, tensors[key], kind, layout, slot, report)
        except ConvertError as e:
            report.error(str(e))
            continue
        if layer is None:
            params[name][...] = value
        else:
            params[name][layer] = value

    # Keys we understand without loading them into a slot.
    ignorable = set()
    pid = n.base + n.j("embeddings", "position_ids")
    if pid in tensors:
        ignorable.add(pid)
        p = np.asarray(tensors[pid])
        if p.reshape(-1).shape != (c.T,) or not np.array_equal(p.reshape(-1), np.arange(c.T)):
            report.warn("%s is not arange(%d); bigs always uses positions 0..T-1" % (pid, c.T))
    dec_w, dec_b = n.j("cls", "predictions", "decoder", n.w), n.j("cls", "predictions", "decoder", "bias")
    if dec_w in tensors:
        ignorable.add(dec_w)
        d = to_float32(dec_w, tensors[dec_w], report)
        d = d.T if layout == "flax" else d
        if d.shape != params["wte"].shape or not np.array_equal(d, params["wte"]):
            report.error("%s differs from the word embeddings: an untied decoder is not supported" % dec_w)
    if dec_b in tensors:
        ignorable.add(dec_b)
        d = to_float32(dec_b, tensors[dec_b], report)
        if d.shape != params["head_bias"].shape or not np.array_equal(d, params["head_bias"]):
            report.error("%s differs from cls.predictions.bias (they are one tensor in the release)" % dec_b)
    if not keep_cls and has_cls:
        ignorable.update(k for k in classifier_keys(layout) if k in tensors)
    if has_pool and not any(k in consumed for k in pooler_keys(layout)):
        ignorable.update(k for k in pooler_keys(layout) if k in tensors)
        if labels == 0:
            report.note("the file's pooler (untrained in MLM checkpoints) is not part of an MLM model: dropped")
    unknown = sorted(k for k in tensors if k not in consumed and k not in ignorable)

    rng = np.random.default_rng(args.seed)
    if labels > 0 and not has_cls:
        # as bigs's parameter table: lecun normal (std 1/sqrt(fan_in)) for the
        # classifier, N(0, 0.02) for the pooler
        params["cls_w"][...] = init_normal(shapes["cls_w"], rng, 1 / np.sqrt(shapes["cls_w"][-1]))
        if not (args.keep_pooler and has_pool):
            params["pool_w"][...] = init_normal(shapes["pool_w"], rng)
            report.warn("no classifier in the file: new pooler N(0, 0.02) and classifier lecun normal for %d "
                        "labels (seed %d), biases 0" % (labels, args.seed))
        else:
            report.warn("no classifier in the file: kept the file's pooler; new classifier for %d labels, weights "
                        "lecun normal (seed %d), bias 0" % (labels, args.seed))
    if not has_head and labels > 0:
        report.warn("no MLM head (cls.predictions.*) in the file: head_w, head_b, head_ln_w, head_ln_b and head_bias "
                    "are all zero (fill-mask will predict nothing useful)")

    if missing:
        names = ", ".join(k for k, _, _ in missing[:20]) + (" ..." if len(missing) > 20 else "")
        msg = "%d expected keys are missing: %s" % (len(missing), names)
        if args.allow_missing:
            report.warn(msg + "; they get the released initialisation (--allow-missing)")
            import torch
            from reference import build_model

            init = build_model(c, dtype=torch.float32, seed=args.seed)
            for _, name, layer in missing:
                src = getattr(init, name).detach().numpy()
                if layer is None:
                    params[name][...] = src
                else:
                    params[name][layer] = src[layer]
        else:
            report.error(msg + " (--allow-missing fills them with the released initialisation)")
    if unknown:
        msg = "%d keys not understood: %s" % (len(unknown), ", ".join(
            "%s %s" % (k, tuple(tensors[k].shape)) for k in unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
        if args.allow_unknown:
            report.warn(msg + " (ignored: --allow-unknown)")
        else:
            report.error(msg + " (--allow-unknown ignores them)")

    if report.errors:
        report.print()
        print("convert_hf: error: %s: %d error%s above; nothing written" % (
            ", ".join(files), len(report.errors), "" if len(report.errors) == 1 else "s"), file=sys.stderr)
        return 1
    # What the converter knows: the vocabulary, when the model's folder has
    # its vocab.txt (the released folders do); the task it cannot know.
    folder = args.model if os.path.isdir(args.model) else os.path.dirname(args.model)
    vocab_txt = os.path.join(folder, "vocab.txt")
    write_ckpt(args.out, c, params, vocab=vocab_hash(vocab_txt) if os.path.isfile(vocab_txt) else 0)
    report.print()
    print("converted %s (%s, %s layout, %d tensors) -> %s: V=%d H=%d I=%d L=%d N=%d T=%d types=%d labels=%d, "
          "%d parameters" % (", ".join(files), fmt, layout, len(tensors), args.out, c.V, c.H, c.I, c.L, c.N, c.T,
                             c.types, c.labels, num_params(c)))
    return 0


# ----------------------------------------------------------------------------
# to-torch (and to safetensors / flax)


def released_state(c, params, layout, mlm_head=None):
    """ours -> {key: numpy array} in the released layout (without tied copies)."""
    if mlm_head is None:
        mlm_head = c.labels == 0 or any(np.any(params[k] != 0) for k in
                                        ("head_w", "head_b", "head_ln_w", "head_ln_b", "head_bias"))
    out = {}
    for key, name, layer, kind in released_entries(c, layout, head=mlm_head, pooler=c.labels > 0,
                                                    classifier=c.labels > 0):
        v = params[name] if layer is None else params[name][layer]
        if kind == "dense" and layout == "flax":
            v = v.T
        elif kind == "scalar":
            v = v.reshape(1)
        out[key] = np.ascontiguousarray(v, dtype="<f4")
    return out, mlm_head


def hf_config(c):
    cfg = {
        "architectures": ["BiGSForSequenceClassification" if c.labels > 0 else "BiGSForMaskedLM"],
        "model_type": "BiGS",
        "vocab_size": c.V,
        "hidden_size": c.H,
        "num_hidden_layers": c.L,
        "intermediate_size": c.I,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "max_position_embeddings": c.T,
        "type_vocab_size": c.types,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
        "num_ssm": c.N,
        "pre_norm": True,
        "decode": False,
        "pooler_type": "non_padding_mean",
        "use_pykeops_kernel": False,
        "tie_word_embeddings": True,
    }
    if c.labels > 0:
        cfg["id2label"] = {str(i): "LABEL_%d" % i for i in range(c.labels)}
        cfg["label2id"] = {"LABEL_%d" % i: i for i in range(c.labels)}
        if c.labels == 1:
            cfg["problem_type"] = "regression"
    return cfg


def to_torch(args):
    check_output(args.out, "--out")
    if args.config_out:
        check_output(args.config_out, "--config-out")
    header, c, params, moments = read_ckpt(args.ckpt)
    notes = []
    if header["kind"] == KIND_TRAIN_STATE:
        notes.append("training state (step %d): only the parameters are exported" % header["step"])
    out = args.out
    fmt = args.format or ("flax" if out.endswith(".msgpack") else "safetensors" if out.endswith(".safetensors")
                          else "torch")
    layout = "flax" if fmt == "flax" else "torch"
    state, with_head = released_state(c, params, layout)
    if layout == "torch":
        notes.append(ERF_NOTE_WRITE)
    if c.labels > 0 and not with_head:
        notes.append("the MLM head is all zero: not written (as in the released classification models)")
    if fmt == "torch":
        import torch

        sd = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
        sd["bigs.embeddings.position_ids"] = torch.arange(c.T, dtype=torch.int64).expand((1, -1)).clone()
        if with_head:  # tied, as the port's state dict holds them: one storage each
            sd["cls.predictions.decoder.weight"] = sd["bigs.embeddings.word_embeddings.weight"]
            sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
        write_atomically(out, lambda f: torch.save(sd, f))
    elif fmt == "safetensors":
        state["bigs.embeddings.position_ids"] = np.arange(c.T, dtype="<i8").reshape(1, c.T)
        safetensors_save(out, state, {"format": "pt"})
    else:
        blob = flax_to_bytes(unflatten_tree(state))
        write_atomically(out, lambda f: f.write(blob))
    if args.config_out:
        text = json.dumps(hf_config(c), indent=2) + "\n"
        write_atomically(args.config_out, lambda f: f.write(text), binary=False)
    for m in notes:
        print("convert_hf: note: %s" % m, file=sys.stderr)
    print("exported %s -> %s (%s layout, %d tensors): V=%d H=%d I=%d L=%d N=%d T=%d types=%d labels=%d"
          % (args.ckpt, out, fmt, len(state), c.V, c.H, c.I, c.L, c.N, c.T, c.types, c.labels))
    return 0


def inspect(args):
    if is_bigs_checkpoint(args.file):  # by its magic: a damaged one gets its checksum error
        header, c, params, _ = read_ckpt(args.file)
        print("bigs checkpoint kind %d step %d: %s" % (header["kind"], header["step"], c))
        for name, a in params.items():
            print("%-14s %s" % (name, a.shape))
        return 0
    fmt, files, tensors = load_released(args.file, args.format)
    print("%s: %s, %d tensors" % (", ".join(files), fmt, len(tensors)))
    for k in sorted(tensors):
        print("%s\t%s\t%s" % (k, getattr(tensors[k], "stored", None) or tensors[k].dtype, tuple(tensors[k].shape)))
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("to-bigs", help="released checkpoint -> bigs checkpoint")
    p.add_argument("--model", required=True, help="a model directory or file")
    p.add_argument("--config", help="config.json (default: the one next to the model, if any)")
    p.add_argument("--out", required=True, help="bigs checkpoint to write")
    p.add_argument("--labels", type=int, help="classes of the classification head (default: the file's; 0 = MLM)")
    p.add_argument("--format", choices=["torch", "safetensors", "flax"], help="which file of a directory to read")
    p.add_argument("--seed", type=int, default=0, help="seed of new pooler/classifier weights (default 0)")
    p.add_argument("--keep-pooler", action="store_true", help="with --labels N on an MLM file: keep its pooler")
    p.add_argument("--allow-unknown", action="store_true", help="ignore keys that are not understood")
    p.add_argument("--allow-missing", action="store_true", help="initialise missing tensors instead of failing")
    p = sub.add_parser("to-torch", help="bigs checkpoint -> released layout (.bin, .safetensors or .msgpack)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True, help="pytorch_model.bin, model.safetensors or flax_model.msgpack")
    p.add_argument("--format", choices=["torch", "safetensors", "flax"], help="default: from the --out suffix")
    p.add_argument("--config-out", help="also write a config.json for the authors' code")
    p = sub.add_parser("inspect", help="list the tensors of a checkpoint")
    p.add_argument("file")
    p.add_argument("--format", choices=["torch", "safetensors", "flax"])
    args = parser.parse_args(argv)
    try:
        return {"to-bigs": to_bigs, "to-torch": to_torch, "inspect": inspect}[args.cmd](args)
    except ConvertError as e:
        print("convert_hf: error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a file that cannot be written: the file and the reason
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        print("convert_hf: error: %s%s" % (where + ": " if where else "", e.strerror or e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
