#!/usr/bin/env bash
# The whole GLUE benchmark with the paper's recipe (BIGS.md section 6):
# CoLA, SST-2, QQP, MNLI and QNLI are fine-tuned from the pretrained
# checkpoint; MRPC, STS-B and RTE from the MNLI-fine-tuned one (ours, or a
# released *_MNLI checkpoint with --mnli). Ends with one table of dev results
# and writes the submission files for the test sets.
#
#   dev/glue.sh --glue DIR --ckpt PRETRAINED.bin [--mnli MNLI.bin] [--seq T]
#               [--vocab VOCAB] [--out DIR] [--device cuda] [--tasks "cola sst2 ..."]
#
# DIR holds the standard GLUE layout: DIR/CoLA/train.tsv, DIR/MNLI/dev_matched.tsv, ...
# T must be the checkpoint's (its max_position_embeddings): inputs are padded to it.
set -euo pipefail
cd "$(dirname "$0")/.."
glue= ckpt= mnli= seq=512 vocab=data/bert-base-uncased-vocab.txt out=out/glue device=auto
tasks="cola sst2 qqp mnli qnli mrpc stsb rte"
while [ $# -gt 0 ]; do
  case $1 in
    --glue) glue=$2; shift 2 ;;
    --ckpt) ckpt=$2; shift 2 ;;
    --mnli) mnli=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --vocab) vocab=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "dev/glue.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$glue" ] && [ -n "$ckpt" ] || { echo "dev/glue.sh: --glue and --ckpt are required (see --help)" >&2; exit 2; }
declare -A dir=([cola]=CoLA [sst2]=SST-2 [mrpc]=MRPC [stsb]=STS-B [qqp]=QQP [mnli]=MNLI [qnli]=QNLI [rte]=RTE [wnli]=WNLI)
mkdir -p "$out"
results="$out/results.tsv"
printf "task\tsplit\tmetrics\n" > "$results"

for task in $tasks; do
  init=$ckpt
  case $task in mrpc|stsb|rte)
    init=${mnli:-$out/mnli/run/best.bin}
    [ -f "$init" ] || { echo "dev/glue.sh: $task starts from the MNLI model; run mnli first or pass --mnli" >&2; exit 1; } ;;
  esac
  echo "== $task (from $init)"
  ./data_prep glue --task "$task" --vocab "$vocab" --seq "$seq" --data-dir "$glue/${dir[$task]}" --out "$out/$task/data"
  d="$out/$task/data"
  if [ "$task" = mnli ]; then
    dev="$d/mnli_dev_matched.bin"; dev2=(--dev2 "$d/mnli_dev_mismatched.bin")
  else
    dev="$d/${task}_dev.bin"; dev2=()
  fi
  ./bigs finetune --device "$device" --task "$task" --init "$init" --train "$d/${task}_train.bin" --dev "$dev" "${dev2[@]}" \
    --out "$out/$task/run"
  for f in "$dev" "${dev2[@]:1}"; do
    line=$(./bigs eval --device "$device" --task "$task" --ckpt "$out/$task/run/best.bin" --dev "$f")
    printf "%s\t%s\t%s\n" "$task" "$(basename "$f" .bin)" "${line#*: }" >> "$results"
  done
  for t in "$d"/"${task}"_test*.bin; do
    [ -f "$t" ] && ./bigs predict --device "$device" --task "$task" --ckpt "$out/$task/run/best.bin" --test "$t" --out "$out/submission"
  done
done
echo
column -t -s $'\t' "$results"
