#!/usr/bin/env python3
"""Fuzzes dev/convert_hf.py's reader of the PyTorch layout, torch.save of a
state dict (see fuzz/convert_reader.py). Input: a pytorch_model.bin.

    /usr/bin/python3 fuzz/convert_torch.py [libFuzzer flags] CORPUS_DIR...
"""
from convert_reader import run

run("torch", "pytorch_model.bin")
