#!/usr/bin/env python3
"""Fuzzes dev/convert_hf.py's reader of the Flax msgpack layout (see
fuzz/convert_reader.py). Input: a flax_model.msgpack.

    /usr/bin/python3 fuzz/convert_msgpack.py [libFuzzer flags] CORPUS_DIR...
"""
from convert_reader import run

run("flax", "flax_model.msgpack")
