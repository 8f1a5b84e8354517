#!/usr/bin/env bash
# Throughput of `data_prep pretrain` (MB of input text per second) on a corpus
# of at least 50 MB of real English text from Debian packages: the King James
# Bible (package bible-kjv) and the fortune files (fortunes, fortunes-min),
# repeated until the corpus reaches MIN_MB. Runs once per thread count.
#
#   bash dev/bench_data_prep.sh [WORKDIR]     (default /tmp/bigs_bench_data_prep)
#
# Environment: DATA_PREP (binary; default: `make data_prep` and ./data_prep),
# VOCAB, SEQ (128), MIN_MB (60), THREADS ("1 2"), REPEAT (3: the best run counts).
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/tmp/bigs_bench_data_prep}
vocab=${VOCAB:-data/bert-base-uncased-vocab.txt}
seq=${SEQ:-128}
min_mb=${MIN_MB:-60}
threads=${THREADS:-"1 2"}
repeat=${REPEAT:-3}
if [ -z "${DATA_PREP:-}" ]; then
  make -s data_prep
  DATA_PREP=./data_prep
fi
mkdir -p "$work"

# The corpus: Bible chapters and fortunes, one document each.
corpus=$work/corpus.txt
if [ ! -s "$corpus" ] || [ "$(stat -c %s "$corpus")" -lt $((min_mb * 1000000)) ]; then
  base=$work/base.txt
  : > "$base"
  if command -v bible > /dev/null; then
    # "Ge1:1 In the beginning ..." -> the verse text, a blank line between chapters.
    bible -f "Ge1:1-Re22:21" | awk '{
        split($1, ref, ":"); sub(/^[^ ]+ /, "");
        if (ref[1] != chapter && NR > 1) print ""; chapter = ref[1]; print }' >> "$base"
  fi
  for f in /usr/share/games/fortunes/*; do
    # Top-level English files only; "%" lines separate the fortunes.
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    case "$f" in *.dat | *.u8 | */chinese | */song100 | */tang300) continue ;; esac  # not English
    sed 's/^%$//' "$f" | iconv -f utf-8 -t utf-8 -c >> "$base"
    echo >> "$base"
  done
  if [ ! -s "$base" ]; then
    echo "no source text: install the Debian packages bible-kjv and fortunes" >&2
    exit 1
  fi
  : > "$corpus"
  while [ "$(stat -c %s "$corpus")" -lt $((min_mb * 1000000)) ]; do
    cat "$base" >> "$corpus"
  done
fi
size_mb=$(awk -v b="$(stat -c %s "$corpus")" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "corpus: $corpus, $size_mb MB (bible-kjv + fortunes, repeated), T = $seq"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work skews the numbers)"

printf "%-8s %10s %10s   (best of %d runs)\n" threads seconds "MB/s" "$repeat"
for t in $threads; do
  out=$work/out_$t
  for r in $(seq "$repeat"); do
    rm -rf "$out"
    log=$work/log_${t}_$r.txt
    "$DATA_PREP" pretrain --vocab "$vocab" --seq "$seq" --out "$out" --threads "$t" \
      "$corpus" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  done
  # "time        12.34 s, 60.1 MB of text, 4.87 MB/s"
  cat "$work"/log_"${t}"_*.txt | awk '/^time / { print $2, $(NF - 1) }' | sort -n | head -1 |
    awk -v t="$t" '{ printf "%-8s %10s %10s\n", t, $1, $2 }'
done
cmp -s "$work/out_${threads%% *}/train_000000.bin" "$work/out_${threads##* }/train_000000.bin" &&
  echo "outputs identical across thread counts" ||
  { echo "outputs differ across thread counts" >&2; exit 1; }
