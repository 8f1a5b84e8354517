#!/usr/bin/env bash
# Wall time of a small CPU fine-tuning at several thread settings, with and
# without a competing busy loop that this script starts on one core: the
# measurement behind the README's "Threads on a busy machine".
#
#   dev/bench_threads.sh [--bigs build/bigs_cpu] [--config "H 16 I 24 L 1 N 4"] [--seq 32]
#                        [--rounds 5] [--examples 2508] [--work build/bench_threads] [VARIANT ...]
#
# A VARIANT is "NAME|ENV|THREADS[|BIGS]", e.g. "spin|OMP_WAIT_POLICY=active|0"
# (ENV may be "-" for none; BIGS, another binary to compare, default --bigs). The variants run interleaved, round after round,
# so a change in the machine's other load hits all of them alike; the table
# gives the best and the median of the rounds, with and without the busy loop.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bigs=$root/build/bigs_cpu config="H 16 I 24 L 1 N 4" seq=32 rounds=5 examples=2508 work=build/bench_threads
variants=()
while [ $# -gt 0 ]; do
  case $1 in
    --bigs) bigs=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --seq) seq=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --examples) examples=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) variants+=("$1"); shift ;;
  esac
done
[ ${#variants[@]} -gt 0 ] || variants=("1 thread|-|1" "all, default|-|0")
# Binaries are given relative to where the script was started; it works in --work.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
bigs=$(absolute "$bigs")
fixed=()
for v in "${variants[@]}"; do
  IFS='|' read -r name env threads binary <<<"$v"
  fixed+=("$name|$env|$threads|$(absolute "${binary:-$bigs}")")
done
variants=("${fixed[@]}")
mkdir -p "$work"
cd "$work"

# The task (Old vs New Testament verses, SST-2 layout) and a checkpoint of
# the config: two pretraining steps are enough, the speed does not depend on
# the weights.
if [ ! -f task/bin/sst2_train.bin ] || [ "$(cat task/seq 2>/dev/null)" != "$seq" ]; then
  here=$PWD
  (cd "$root" && bash dev/make_testament_task.sh "$here/task/tsv" >/dev/null)
  head -n "$((examples + 1))" task/tsv/train.tsv >task/tsv/train.small && mv task/tsv/train.small task/tsv/train.tsv
  "$root/data_prep" glue --task sst2 --vocab "$root/data/bert-base-uncased-vocab.txt" --seq "$seq" --data-dir task/tsv \
    --out task/bin >/dev/null
  echo "$seq" >task/seq
fi
tr ' ' '\n' <<<"$config" | paste - - -d' ' >model.cfg
head -c 20000 "$root/data/kjv.txt" >corpus.txt
"$root/data_prep" pretrain --vocab "$root/data/bert-base-uncased-vocab.txt" --seq "$seq" --out shards corpus.txt >/dev/null
"$bigs" pretrain --device cpu --config model.cfg --train 'shards/train_*.bin' --batch 2 --micro-batch 2 --steps 2 \
  --warmup 1 --eval-every 0 --save-every 0 --threads 1 --out ckpt >/dev/null

one_run() {  # ENV THREADS BIGS -> wall seconds of one epoch
  local env=$1 threads=$2 binary=$3 t0 t1
  [ "$env" = - ] && env=
  t0=$(date +%s.%N)
  env $env "$binary" finetune --device cpu --task sst2 --init ckpt/model.bin --train task/bin/sst2_train.bin \
    --dev task/bin/sst2_dev.bin --epochs 1 --threads "$threads" --out run --log-every 1000000 >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

summary() {  # TIMES... -> "best median"
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%7.2f %7.2f", v[1], v[int((NR + 1) / 2)] }'
}

busy_pid=
stop_busy() {
  if [ -n "$busy_pid" ]; then
    kill "$busy_pid" 2>/dev/null || true
    wait "$busy_pid" 2>/dev/null || true
  fi
  busy_pid=
}
trap stop_busy EXIT

echo "config: $config, T = $seq, $examples training examples, 1 epoch; $rounds rounds; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-28s %17s %17s\n" "" "no added load (s)" "+ busy loop (s)"
printf "%-28s %8s %8s %8s %8s\n" "variant" best median best median
declare -A times
for load in idle busy; do
  if [ $load = busy ]; then
    (while :; do :; done) &
    busy_pid=$!
  fi
  for ((r = 0; r < rounds; r++)); do
    for v in "${variants[@]}"; do
      IFS='|' read -r name env threads binary <<<"$v"
      times[$load/$name]+="$(one_run "$env" "$threads" "$binary") "
    done
  done
  stop_busy
done
for v in "${variants[@]}"; do
  IFS='|' read -r name _ _ <<<"$v"
  # shellcheck disable=SC2086
  printf "%-28s %s  %s\n" "$name" "$(summary ${times[idle/$name]})" "$(summary ${times[busy/$name]})"
done
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
