#!/usr/bin/env python3
"""Fuzzes dev/convert_hf.py's reader of safetensors files and of sharded
models' .index.json (see fuzz/convert_reader.py). Input: a mode byte, then
  mode even: a model.safetensors;
  mode odd:  sections, each a 4-byte little-endian length and that many bytes
             (the last may run short): model.safetensors.index.json, then up
             to 3 shards, model-0000I-of-0000K.safetensors (K = how many).

    /usr/bin/python3 fuzz/convert_safetensors.py [libFuzzer flags] CORPUS_DIR...

The seeds (dev/fuzz_seeds.py) are a tiny model whole and in two shards.
"""
import struct

from convert_reader import run

INDEX = "model.safetensors.index.json"


def sections(data):
    out = []
    while data and len(out) < 4:
        n = struct.unpack("<I", data[:4].ljust(4, b"\0"))[0]
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


def split(data):
    if not data or data[0] % 2 == 0:
        return {"model.safetensors": data[1:]}, "model.safetensors"
    parts = sections(data[1:])
    files = {INDEX: parts[0] if parts else b""}
    shards = parts[1:]
    for i, blob in enumerate(shards):
        files["model-%05d-of-%05d.safetensors" % (i + 1, len(shards))] = blob
    return files, INDEX


if __name__ == "__main__":
    run("safetensors", "model.safetensors", split)
