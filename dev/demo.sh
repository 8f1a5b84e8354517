#!/usr/bin/env bash
# make demo: train a tiny BiGS on the bundled King James Bible and ask it to
# fill masks. Everything lands in out/demo/. Takes a few minutes on 2 cores.
#   STEPS=600 DEVICE=auto dev/demo.sh   (EVAL_EVERY, SAVE_EVERY: default 500; dev/gpu_check.sh
#   makes a short run validate and checkpoint mid-run too)
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/demo
steps=${STEPS:-3000}
mkdir -p "$out"
start=$(date +%s)

echo "== 1/4 a WordPiece vocabulary of 4096 tokens learned from data/kjv.txt"
./tokenizer train --vocab-size 4096 --out "$out/vocab.txt" data/kjv.txt

echo "== 2/4 pretraining shards, T = 128 (2% of the chapters held out for validation)"
./data_prep pretrain --vocab "$out/vocab.txt" --seq 128 --out "$out/shards" --val-fraction 0.02 data/kjv.txt

echo "== 3/4 pretraining BiGS-tiny for $steps steps of 32 sequences"
./bigs pretrain --device "${DEVICE:-auto}" --config tiny --train "$out/shards/train_*.bin" --val "$out/shards/val_*.bin" \
  --batch 32 --micro-batch 32 --steps "$steps" --lr 2e-3 --warmup 60 --dropout 0 \
  --eval-every "${EVAL_EVERY:-500}" --eval-seqs 381 --log-every 100 --save-every "${SAVE_EVERY:-500}" --out "$out/run" --overwrite

echo "== 4/4 fill-mask"
sentences=(
  "In the beginning [MASK] created the heaven and the earth."
  "And God said, Let there be [MASK]: and there was light."
  "The LORD is my [MASK]; I shall not want."
  "For God so loved the [MASK], that he gave his only begotten Son."
)
for s in "${sentences[@]}"; do
  echo "$s"
  ./bigs fill-mask --device "${DEVICE:-auto}" --ckpt "$out/run/model.bin" --vocab "$out/vocab.txt" --top-k 3 "$s" |
    sed 's/^/    /'
done
echo "demo done in $(( $(date +%s) - start )) s; uniform guessing would score ln 4096 = 8.32. Log: $out/run/log.jsonl"
