#!/usr/bin/env bash
# Runs each fuzz harness for SECONDS on its seed corpus and prints a table of
# executions and coverage (called by `make fuzz`; CI runs it with 20 s each).
#
#   dev/fuzz.sh SECONDS BUILD_FUZZ_DIR HARNESS...
#
# A C++ harness is BUILD_FUZZ_DIR/NAME (libFuzzer), a Python one fuzz/NAME.py
# (atheris). Seeds are read from fuzz/corpus/NAME (never written); new inputs
# go to BUILD_FUZZ_DIR/corpus/NAME and crashes to BUILD_FUZZ_DIR/artifacts/,
# with the harness's log in BUILD_FUZZ_DIR/logs/NAME.log. Exits 1 if any
# harness crashed, hung or broke an invariant. FUZZ_SEED=N fixes libFuzzer's
# random seed (CI: the same mutations from run to run, so a red CI is the
# change's and not the draw's; the deep search is `make fuzz` unseeded).
set -u
seconds=$1
dir=$2
shift 2
PYTHON=${PYTHON:-/usr/bin/python3}
mkdir -p "$dir/artifacts" "$dir/logs"
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
rows=()
failed=()
for name in "$@"; do
  corpus="$dir/corpus/$name"
  mkdir -p "$corpus"
  if [ -f "fuzz/$name.py" ]; then cmd=("$PYTHON" "fuzz/$name.py"); else cmd=("$dir/$name"); fi
  log="$dir/logs/$name.log"
  echo "=== fuzz $name: ${seconds} s"
  # Only libFuzzer's status lines and any report go to the log: a reader's own
  # error messages, one per input, would fill it.
  "${cmd[@]}" ${seed[@]+"${seed[@]}"} -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/$name-" "$corpus" "fuzz/corpus/$name" 2>&1 |
    grep -a -E '^#[0-9]+|INFO: Loaded|ERROR|WARNING|FUZZ_CHECK|SUMMARY|runtime error|Uncaught|Error:|^ +#[0-9]+ |^  File |stat::|Test unit' \
      > "$log"
  rc=${PIPESTATUS[0]}
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  status=$(grep -a -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  edges=$(sed -n 's/^INFO: Loaded [0-9]* modules* *(\([0-9]*\) inline 8-bit counters.*/\1/p' "$log" | head -1)
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$status")
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (rc $rc, see $log)"
    failed+=("$name")
    grep -a -E 'ERROR|FUZZ_CHECK|SUMMARY|runtime error|Uncaught|Error:|Test unit' "$log" | head -5
  fi
  rows+=("$(printf '| %-19s | %10s | %14s | %9s | %7s | %s |' "$name" "${execs:-?}" "${cov:-?}${edges:+ of $edges}" "${ft:-?}" \
    "${corp:-?}" "$result")")
done
echo
printf '| %-19s | %10s | %14s | %9s | %7s | %s |\n' harness executions "edges reached" features corpus result
printf '|%s|%s|%s|%s|%s|%s|\n' --------------------- ------------ ---------------- ----------- --------- --------
printf '%s\n' "${rows[@]}"
echo "($seconds s each; edges reached of the binary's instrumented edges, features: libFuzzer's finer count, corpus: inputs kept)"
[ ${#failed[@]} -eq 0 ] || { echo "failed harnesses: ${failed[*]}"; exit 1; }
