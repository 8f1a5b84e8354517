#!/usr/bin/env bash
# Builds data/kjv.txt, the demo corpus: the King James Bible from Debian's
# bible-kjv-text package (public domain outside the UK), one verse a line,
# one chapter a document (chapters separated by blank lines).
#   apt-get install bible-kjv   (the reader; it pulls in bible-kjv-text)
#   dev/make_kjv_corpus.sh [OUT]
set -euo pipefail
out=${1:-data/kjv.txt}
command -v bible >/dev/null || { echo "needs the 'bible' reader: apt-get install bible-kjv" >&2; exit 1; }
# -l100000: no line wrapping. Chapter headings ("Genesis 1") start a
# document; verse lines are "  N text".
bible -l100000 "gen1:1-rev22:21" | awk '
  /^[0-9A-Za-z]/ { if (n++) print ""; next }
  /^  [0-9]+ / { sub(/^  [0-9]+ /, ""); print }
' > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out: $(grep -c . "$out") verses, $(grep -c '^$' "$out") chapter breaks, $(wc -c < "$out") bytes"
