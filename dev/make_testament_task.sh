#!/usr/bin/env bash
# A small real-text classification task in GLUE's SST-2 layout, from the
# bundled corpus: is a verse from the Old Testament (label 0) or the New (1)?
# Chapters 1..929 of data/kjv.txt are the Old Testament (Genesis..Malachi),
# 930..1189 the New. Every 15th Old and every 5th New Testament verse is
# taken, so the classes are balanced (1543 and 1591 verses); every 5th of
# those goes to dev, and every 40th to a label-free test.tsv.
#   dev/make_testament_task.sh OUTDIR
set -euo pipefail
out=${1:?usage: make_testament_task.sh OUTDIR}
mkdir -p "$out"
awk -v out="$out" '
  BEGIN { FS = "\t"; chapter = 1
          print "sentence\tlabel" > (out "/train.tsv"); print "sentence\tlabel" > (out "/dev.tsv")
          print "index\tsentence" > (out "/test.tsv") }
  /^$/ { chapter++; next }
  { nt = chapter > 929; verse++
    if ((nt && verse % 5 != 0) || (!nt && verse % 15 != 0)) next
    k++
    if (k % 40 == 0) print (t++) "\t" $0 > (out "/test.tsv")
    else if (k % 5 == 0) print $0 "\t" nt > (out "/dev.tsv")
    else print $0 "\t" nt > (out "/train.tsv") }
' data/kjv.txt
for f in train dev test; do echo "$out/$f.tsv: $(($(wc -l < "$out/$f.tsv") - 1)) rows"; done
