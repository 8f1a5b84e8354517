#!/usr/bin/env bash
# Measures what the checksums cost (README "Reliability"): builds
# dev/bench_checksum.cpp, writes a 1 GB pretraining shard of random ids
# (version 2, its checksums from the crc32c module), and times CRC-32C and
# verifying the shard against reading it as the trainer does.
#
#   dev/bench_checksum.sh [WORKDIR]   (default build/bench_checksum; needs ~1.1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-build/bench_checksum}
mkdir -p "$work"
${CXX:-g++} -O3 -march=native -std=c++17 -Wall -Wextra -I. dev/bench_checksum.cpp -o "$work/bench_checksum"
/usr/bin/python3 - "$work/shard.bin" <<'PY'
import struct, sys
import crc32c
import numpy as np
T, n, V = 128, (1 << 30) // 256, 30522  # 4,194,304 sequences of 256 bytes: 1 GiB of ids
rng = np.random.default_rng(0)
ids = rng.integers(0, V, size=(n, T), dtype=np.uint16)
ids[:, 0], ids[:, -1] = 101, 102
payload = ids.tobytes()
head = struct.pack("<4IQ5I", 0x44534742, 2, T, V, n, 0, 101, 102, 103, 100) + struct.pack("<I", crc32c.crc32c(payload))
head += struct.pack("<I", crc32c.crc32c(head + bytes(4 + 204))) + bytes(204)
with open(sys.argv[1], "wb") as f:
    f.write(head)
    f.write(payload)
PY
"$work/bench_checksum" "$work/shard.bin"
