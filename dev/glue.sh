#!/usr/bin/env bash
# The whole GLUE benchmark with the paper's recipe (docs/MODEL.md section 12), from
# the downloaded GLUE folder to the zip the GLUE server takes.
usage() {
  cat <<'EOF'
usage: dev/glue.sh --glue DIR --ckpt PRETRAINED.bin [options]

Converts each task with data_prep, fine-tunes it with bigs, evaluates it on
its dev split(s) and predicts its test split(s); ends with one results table
(task, split, metric) and OUT/submission/ with the eleven GLUE submission
files, zipped as OUT/submission.zip (files it could not make are listed).

  CoLA, SST-2, QQP, MNLI, QNLI   fine-tuned from --ckpt
  MRPC, STS-B, RTE               fine-tuned from the MNLI model
  AX (diagnostic)                predicted by the MNLI model
  WNLI                           class 0 (not_entailment) for every example,
                                 as BERT submitted it (65.1% on test); no
                                 training file needed (--wnli finetune to train it)
  the MNLI model                 fine-tuned here from --ckpt, or, with --mnli,
                                 that checkpoint (then MNLI is only evaluated
                                 and predicted, not fine-tuned)

Without MNLI data (no MNLI in --tasks and no --mnli), MRPC, STS-B and RTE are
skipped unless --from-pretrained is given: it fine-tunes them from --ckpt, with
a warning, since their numbers are then not comparable with the paper's (the
paper starts them from the MNLI model). AX always needs the MNLI model.

  --glue DIR         the GLUE folder: DIR/CoLA/train.tsv, DIR/MNLI/dev_matched.tsv,
                     DIR/diagnostic/AX.tsv (or DIR/AX/AX.tsv), ...
  --ckpt FILE        the pretrained checkpoint (e.g. from dev/convert_hf.py)
  --mnli FILE        an MNLI-fine-tuned checkpoint to use as the MNLI model
  --from-pretrained  fine-tune MRPC, STS-B and RTE from --ckpt, not from the
                     MNLI model (not the paper's recipe: a warning says so)
  --seq T            sequence length (default: the checkpoint's T; inputs are
                     padded to it, docs/MODEL.md section 10, so it must be the checkpoint's)
  --vocab FILE       default: data/bert-base-uncased-vocab.txt of this repository
  --out DIR          default: out/glue
  --tasks "LIST"     default: "cola sst2 qqp mnli qnli mrpc stsb rte wnli ax"
  --wnli MODE        majority (default: class 0, the majority class of
                     WNLI's test set) or finetune
  --epochs N  --batch N  --micro-batch N  --lr X  --seed N  --eval-every N
                     fine-tuning (defaults: the paper's 3, 16, --batch, 2e-5, 1,
                     and the authors' evaluation every 500 steps and at each
                     epoch's end, keeping the best: accuracy for MRPC and QQP,
                     Spearman for STS-B, docs/MODEL.md section 12)
  --device D  --threads N  --precision P
                     for every bigs command (defaults: auto, 0 = all, bf16)
  --bigs FILE  --data-prep FILE
                     the programs (default: ./bigs and ./data_prep of this repository)

Relative paths are taken from the current directory. Exits 0 when every task
asked for (--tasks, or all of them) was done, 1 when any was skipped or failed
(the others still run and the table still prints), 2 on bad arguments. A run
of some tasks that all succeed exits 0 though its zip is incomplete for the
GLUE server (the listing says so).
EOF
}
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
glue='' ckpt='' mnli='' seq='' out=out/glue wnli=majority
vocab=$root/data/bert-base-uncased-vocab.txt bigs=$root/bigs data_prep=$root/data_prep
tasks="cola sst2 qqp mnli qnli mrpc stsb rte wnli ax"
epochs=3 batch=16 micro_batch='' lr=2e-5 seed=1 eval_every=500 device=auto threads=0 precision=bf16
from_pretrained=no

die() { echo "dev/glue.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --from-pretrained) from_pretrained=yes; shift ;;
    --glue | --ckpt | --mnli | --seq | --vocab | --out | --tasks | --wnli | --epochs | --batch | --micro-batch | \
      --lr | --seed | --eval-every | --device | --threads | --precision | --bigs | --data-prep)
      [ $# -ge 2 ] || die "$1 needs a value (see --help)"
      v=${1#--}
      v=${v//-/_}
      printf -v "$v" '%s' "$2"
      shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ -z "$glue" ] || [ -z "$ckpt" ]; then die "--glue and --ckpt are required (see --help)"; fi
[ -d "$glue" ] || die "--glue $glue: no such folder (it should hold CoLA/, SST-2/, MNLI/, ...)"
case $wnli in majority | finetune) ;; *) die "--wnli $wnli: expected majority or finetune" ;; esac
for p in "$bigs" "$data_prep"; do
  [ -x "$p" ] || die "$p is missing: build it first (make -C $root)"
done
[ -f "$vocab" ] || die "--vocab $vocab: no such file"
micro_batch=${micro_batch:-$batch}

# The config of a bigs checkpoint (header: magic, version, kind, reserved,
# then int32 V H I L N T types labels), as "V H I L N T types labels".
ckpt_config() {
  [ -f "$1" ] || return 1
  [ "$(od -An -t x4 -N 4 "$1" | tr -d ' ')" = 4b434742 ] || return 1
  od -An -t d4 -j 16 -N 32 "$1" | tr -s ' \n' '  '
}
for flag in ckpt mnli; do
  f=${!flag}
  [ -n "$f" ] || continue
  cfg=$(ckpt_config "$f") || die "--$flag $f: not a bigs checkpoint (convert a released one with dev/convert_hf.py to-bigs)"
  read -r _ _ _ _ _ t _ _ <<<"$cfg"
  if [ -z "$seq" ]; then
    seq=$t
  elif [ "$seq" != "$t" ]; then
    die "--$flag $f has T = $t but --seq is $seq: the inputs are padded to the checkpoint's T; pass --seq $t (or leave --seq out)"
  fi
done

declare -A folder=([cola]=CoLA [sst2]=SST-2 [mrpc]=MRPC [stsb]=STS-B [qqp]=QQP [mnli]=MNLI [qnli]=QNLI [rte]=RTE
  [wnli]=WNLI [ax]=diagnostic)
declare -A files=([cola]=CoLA [sst2]=SST-2 [mrpc]=MRPC [stsb]=STS-B [qqp]=QQP [mnli]="MNLI-m MNLI-mm" [qnli]=QNLI
  [rte]=RTE [wnli]=WNLI [ax]=AX)
submission_files="CoLA SST-2 MRPC STS-B QQP MNLI-m MNLI-mm QNLI RTE WNLI AX"
order="cola sst2 qqp mnli qnli mrpc stsb rte wnli ax"  # the MNLI model comes before its users
for t in $tasks; do
  [ -n "${folder[$t]:-}" ] || die "--tasks: unknown task '$t' (known: $order)"
done

sub=$out/submission
mkdir -p "$sub" || die "cannot create $sub"
common=(--device "$device" --threads "$threads" --precision "$precision")
finetune_flags=(--epochs "$epochs" --batch "$batch" --micro-batch "$micro_batch" --lr "$lr" --seed "$seed"
  --eval-every "$eval_every")

echo "dev/glue.sh settings:"
for k in glue ckpt mnli from_pretrained seq vocab out tasks wnli epochs batch micro_batch lr seed eval_every device threads \
  precision bigs data_prep; do
  printf "  %-10s %s\n" "$k" "${!k:--}"
done

declare -A made=() why=()
results=() # "task<TAB>split<TAB>examples<TAB>result"
status=0
note() {  # note TASK MESSAGE: a task skipped or failed; the run goes on
  echo "dev/glue.sh: $1: $2" >&2
  results+=("$1"$'\t-\t-\t'"$2")
  for f in ${files[$1]}; do why[$f]="$1: $2"; done
  [ "$1" = mnli ] && mnli_why="MNLI: $2; and no --mnli was given"
  status=1
}
mnli_model=$mnli
mnli_why="MNLI was not in --tasks and no --mnli was given"
paper_warning="fine-tuned from the pretrained --ckpt (--from-pretrained), not from the MNLI model as the paper does: its numbers are not comparable with the paper's"
if [ "$from_pretrained" = yes ]; then
  for t in mrpc stsb rte; do
    case " $tasks " in *" $t "*) echo "dev/glue.sh: warning: $t will be $paper_warning" >&2 ;; esac
  done
fi

# data_prep glue for a task into a fresh OUT/TASK/data. Splits whose file is
# missing are skipped there, so the caller checks for the ones it needs.
prepare() {
  local task=$1 src=$glue/${folder[$1]}
  [ "$task" = ax ] && [ ! -d "$src" ] && src=$glue/AX
  if [ ! -d "$src" ]; then
    note "$task" "no folder $src"
    return 1
  fi
  rm -rf "$out/$task/data"
  if ! "$data_prep" glue --task "$task" --vocab "$vocab" --seq "$seq" --data-dir "$src" --out "$out/$task/data"; then
    note "$task" "data_prep glue failed on $src (its message is above)"
    return 1
  fi
}

evaluate() {  # evaluate TASK CKPT FILE...: one results row per dev file
  local task=$1 model=$2 f line
  shift 2
  for f in "$@"; do
    if line=$("$bigs" eval --task "$task" --ckpt "$model" --dev "$f" "${common[@]}" | tail -n 1) &&
      [[ $line =~ ^[a-z0-9]+\ ([a-z_]+)\ \(([0-9]+)\ examples\):\ (.*)$ ]]; then
      results+=("$task"$'\t'"${BASH_REMATCH[1]}"$'\t'"${BASH_REMATCH[2]}"$'\t'"${BASH_REMATCH[3]}${row_note:-}")
    else
      note "$task" "bigs eval failed on $f"
    fi
  done
}

predict() {  # predict TASK CKPT: every test split of OUT/TASK/data -> OUT/submission
  local task=$1 model=$2 t name
  for t in "$out/$task/data/${task}"_test*.bin; do
    [ -f "$t" ] || continue
    case $t in *_test_mismatched.bin) name=MNLI-mm ;; *_test_matched.bin) name=MNLI-m ;; *) name=${files[$task]} ;; esac
    if "$bigs" predict --task "$task" --ckpt "$model" --test "$t" --out "$sub" "${common[@]}"; then
      made[$name]=1
    else
      note "$task" "bigs predict failed on $t"
    fi
  done
  for name in ${files[$task]}; do
    [ -n "${made[$name]:-}" ] || [ -n "${why[$name]:-}" ] || why[$name]="$task: no test split in $glue/${folder[$task]}"
  done
}

# Class 0 (not_entailment) for every WNLI test example: BERT's submission
# (Devlin et al. 2019, GLUE section, footnote) predicted the majority class
# because WNLI's train and dev sets are adversarial to each other and no
# fine-tuned system had beaten that baseline, 65.1% on test. That score is
# class 0's: the test set's majority class (95 of its 146 examples; class 1
# would score 34.9%). The training split's labels are close to even and its
# majority need not be the test set's, so the class is a constant here and
# no training file is read. docs/GLUE.md, "WNLI".
wnli_majority() {
  local src=$glue/WNLI majority=0 dev_counts d0 d1
  echo "== wnli: class $majority (not_entailment) for every example, as BERT submitted; not fine-tuned"
  # The dev accuracy of that prediction, where the dev split is there
  # (columns by header name; rows with another number of fields are skipped,
  # as data_prep skips them).
  if dev_counts=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "label") c = i; n = NF; next }
      c && NF == n && ($c == "0" || $c == "1") { k[$c]++ }
      END { if (!c) exit 1; print k["0"] + 0, k["1"] + 0 }' "$src/dev.tsv" 2>/dev/null); then
    read -r d0 d1 <<<"$dev_counts"
    results+=("wnli"$'\tdev\t'"$((d0 + d1))"$'\t'"$(awk -v h="$d0" -v n="$((d0 + d1))" 'BEGIN { printf "accuracy %.4f", n ? h / n : 0 }') (class $majority)")
  fi
  if [ ! -f "$src/test.tsv" ]; then
    why[WNLI]="wnli: no $src/test.tsv"
    status=1
    return
  fi
  if awk -F'\t' -v m="$majority" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "index") c = i; if (!c) exit 1
      print "index\tprediction"; next } $c ~ /^[0-9]+$/ { print $c "\t" m }' "$src/test.tsv" >"$sub/WNLI.tsv.tmp"; then
    mv "$sub/WNLI.tsv.tmp" "$sub/WNLI.tsv" && made[WNLI]=1
  else
    rm -f "$sub/WNLI.tsv.tmp"
    note wnli "$src/test.tsv has no index column"
  fi
}

run_task() {
  local task=$1 init=$ckpt d=$out/$1/data run=$out/$1/run dev dev2
  case $task in
    mrpc | stsb | rte)
      if [ "$from_pretrained" = yes ]; then
        echo "dev/glue.sh: warning: $task is $paper_warning" >&2
      elif [ -z "$mnli_model" ]; then
        note "$task" "needs the MNLI model: $mnli_why (--from-pretrained fine-tunes it from --ckpt instead, not the paper's recipe)"
        return
      else
        init=$mnli_model
      fi ;;
    ax)
      if [ -z "$mnli_model" ]; then
        note "$task" "needs the MNLI model: $mnli_why"
        return
      fi ;;
    wnli) [ "$wnli" = majority ] && { wnli_majority; return; } ;;
  esac
  echo
  echo "== $task"
  prepare "$task" || return
  if [ "$task" = ax ]; then
    predict ax "$mnli_model"
    return
  fi
  if [ "$task" = mnli ]; then
    dev=("$d/mnli_dev_matched.bin" "$d/mnli_dev_mismatched.bin")
  else
    dev=("$d/${task}_dev.bin")
  fi
  for f in "${dev[@]}"; do
    [ -f "$f" ] || { note "$task" "no dev split (${f##*/}) in $glue/${folder[$task]}"; return; }
  done
  local model=$run/best.bin
  if [ "$task" = mnli ] && [ -n "$mnli" ]; then
    model=$mnli
    echo "mnli: not fine-tuned: evaluating and predicting with --mnli $mnli"
  elif [ ! -f "$d/${task}_train.bin" ]; then
    note "$task" "no train split in $glue/${folder[$task]}: skipped"
    return
  else
    dev2=()
    [ ${#dev[@]} -gt 1 ] && dev2=(--dev2 "${dev[1]}")
    rm -f "$run/best.bin" "$run/last.bin" "$run/state.bin"  # never evaluate an earlier run's model
    echo "fine-tuning $task from $init"
    if ! "$bigs" finetune --task "$task" --init "$init" --train "$d/${task}_train.bin" --dev "${dev[0]}" "${dev2[@]}" \
      --out "$run" "${finetune_flags[@]}" "${common[@]}"; then
      note "$task" "bigs finetune failed (its message is above)"
      return
    fi
  fi
  [ "$task" = mnli ] && mnli_model=$model
  row_note=''
  [ "$init" = "$ckpt" ] && [ "$from_pretrained" = yes ] && case $task in mrpc | stsb | rte)
    row_note=" (from the pretrained checkpoint: not the paper's recipe)" ;; esac
  evaluate "$task" "$model" "${dev[@]}"
  predict "$task" "$model"
}

for task in $order; do
  case " $tasks " in *" $task "*) run_task "$task" ;; esac
done

echo
echo "GLUE results (dev splits; metrics as in docs/MODEL.md section 12; the paper reports them x 100):"
printf "%-6s %-16s %8s  %s\n" task split examples result
for r in "${results[@]}"; do
  IFS=$'\t' read -r a b c e <<<"$r"
  printf "%-6s %-16s %8s  %s\n" "$a" "$b" "$c" "$e"
done

echo
echo "submission files in $sub:"
present=()
for f in $submission_files; do
  if [ -n "${made[$f]:-}" ]; then
    printf "  %-12s made now\n" "$f.tsv"
  elif [ -f "$sub/$f.tsv" ]; then
    printf "  %-12s from an earlier run (%s)\n" "$f.tsv" "$(date -r "$sub/$f.tsv" '+%F %T')"
  else
    printf "  %-12s NOT MADE: %s\n" "$f.tsv" "${why[$f]:-not in --tasks}"
    continue
  fi
  present+=("$f.tsv")
done

# The server takes a zip of the .tsv files at its top level.
zip_path=$(cd "$out" && pwd)/submission.zip
rm -f "$zip_path" "$zip_path.tmp"
if [ ${#present[@]} -eq 0 ]; then
  echo "no submission file to zip"
elif command -v zip >/dev/null 2>&1; then
  (cd "$sub" && zip -q -X "$zip_path.tmp" "${present[@]}") && mv "$zip_path.tmp" "$zip_path"
elif command -v python3 >/dev/null 2>&1; then
  (cd "$sub" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    [z.write(f) for f in sys.argv[2:]]' "$zip_path.tmp" "${present[@]}") && mv "$zip_path.tmp" "$zip_path"
else
  echo "neither zip nor python3 is installed: zip the files of $sub yourself (at the top level of the zip)"
fi
if [ -f "$zip_path" ]; then
  echo "$zip_path: ${#present[@]} of 11 files$([ ${#present[@]} -lt 11 ] && echo ' (incomplete: the server wants all 11)')"
fi
exit $status
