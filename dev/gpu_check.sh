#!/usr/bin/env bash
# dev/gpu_check.sh [--dry-run] [--stages=LIST | --quick] [OUTDIR [COMMIT]]:
# the one prepared script for a machine with a GPU (the project's device
# machine: one H100 or H200, 16 cores, fresh and bare at every start).
#
# One call must bring back everything needed to fix what breaks, and leave
# time in a task's 15 minutes of device time for a second, shorter call
# after a fix, each call with its machine's start (1 to 2 minutes) and up to
# 30 s idle after it: the whole check is a call of 330 s (it ends by 300 s),
# the second one (--stages=the stages that did not pass) a call of 240 s (it
# ends by 210 s): 2 x 120 + 330 + 240 + 2 x 30 = 870 s of 900. Both calls
# are printed at the end, exactly as the device tool takes them. What comes
# back fits what the device tool returns (at most 8 files from $OUT, the
# last 12,000 characters of output):
#   OUTDIR/summary.txt   what this prints: GPU, build errors, every failing
#                        test with its first failure lines, the sanitizers'
#                        findings, each bench's result line, the final table
#   OUTDIR/gpu_logs.tgz  every log (passing per-tensor lines, the build log,
#                        per-test results, the demo), packed after each stage
#                        and on a signal, so that a killed run still returns
# Nothing else is written to OUTDIR (default build/gpu_logs).
#
# Stages: build (sm_90); then GpuModel.MemoryDoesNotGrowAfterStartup alone
# (memory: it reads the whole device's free memory, so nothing else may use
# the GPU meanwhile, and with CUDA_MODULE_LOADING=EAGER, so that no kernel's
# code is loaded mid-test); then the checks whose timings do not matter, side
# by side: the GPU suite and the sanitizers (with OMP_WAIT_POLICY=PASSIVE and
# half the cores each, beside the demo), the kernel tests under
# compute-sanitizer memcheck and
# the reduction kernels under racecheck, the demo on the GPU (pretraining,
# evaluation, checkpoints, fill-mask) and, where bigs was built with MPI and
# NCCL, an mpirun smoke test; then, the GPU alone, `bigs bench` for BiGS-large in bf16
# at T = 128, 512 and 4096, the PyTorch peer (dev/bench_torch.py) eager at
# T = 128, the kernel lab where it was built, torch.compile if time is left;
# then the table. A stage starts only when it is expected to end within the
# budget, and every stage is killed at its timeout; a skipped stage says why.
#
# A crash or hang inside a GoogleTest suite is attributed: the last test that
# started is named, and the rest of the suite runs again without it, while
# time allows; then up to three failing tests run again alone with
# CUDA_LAUNCH_BLOCKING=1 (a faulting kernel poisons the context, and every
# later test in the same process fails too).
#
# A sanitizer that cannot check (compute-sanitizer refuses the device, fails
# itself, or starts no test) is skipped with its reason, not a finding.
#
# --stages=LIST (comma-separated names of the table's rows) runs only those
# (and the build they need; mpi brings demo, whose shards it reads), within
# the second call's budget; --quick is --stages=memory,suite,memcheck,
# racecheck,demo,mpi. --dry-run builds and runs nothing (no GPU needed) and
# shows the layout; with GPU_CHECK_SUITE=PROGRAM it runs the suite and memory
# stages on that program (a fake GoogleTest binary: dev/test_gpu_check.sh).
# Exit status: 0 when the build, memory, the suite, the sanitizers and the
# demo passed (or were not selected); 1 otherwise; 2 when it could not start
# (no nvcc, make, g++ or GPU); 130 after a signal.
#
# The commit id: COMMIT, else $BIGS_COMMIT, else git's (the device copy may
# hold no history). Also read: NVCC, CUDA_HOME (default /usr/local/cuda: its
# bin/ joins the PATH when nvcc is not on it), CXX (default g++), PYTHON,
# GPU_CHECK_BUDGET, GPU_CHECK_HARD, GPU_CHECK_TEST_IDLE (see settings below),
# GPU_CHECK_SUITE, GPU_CHECK_BIGS (the trainer for the mpi stage, ./bigs).
set -u

# ---------------------------------------------------------------- settings
# Seconds from the start. BUDGET: no stage starts unless it is expected to end
# by then; HARD: every stage's timeout is cut so that it ends by then. The
# device call's timeout (printed at the end) leaves 30 s for packing. The
# whole check (CALL_TIMEOUT) and the second, shorter call (RERUN_TIMEOUT,
# --stages or --quick), each with the machine's start (1 to 2 minutes) and
# up to 30 s idle after it, fit in a task's 15 minutes: 870 s at worst.
# main() sets BUDGET and HARD from these, or GPU_CHECK_BUDGET and _HARD.
CALL_TIMEOUT=330 FULL_BUDGET=260 FULL_HARD=300
RERUN_TIMEOUT=240 RERUN_BUDGET=180 RERUN_HARD=210
BUDGET=${GPU_CHECK_BUDGET:-$FULL_BUDGET}
HARD=${GPU_CHECK_HARD:-$FULL_HARD}
# A test that prints nothing for this long is hung (GoogleTest flushes at
# every test's start and end, so this bounds one test's time).
TEST_IDLE=${GPU_CHECK_TEST_IDLE:-40}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=${NVCC:-nvcc}
PY=${PYTHON:-python3}
SUITE=${GPU_CHECK_SUITE:-build/test_gpu}
BIGS=${GPU_CHECK_BIGS:-./bigs}
CXX=${CXX:-g++}
CARRY='["build/googletest", "build/fixture.bin"]'
JOBS=$(nproc 2> /dev/null || echo 16)
# The GPU suites (the suite, memcheck, racecheck) run beside the demo: their
# OpenMP threads (the CPU twins) sleep while they wait instead of spinning,
# and each takes half the cores at most.
SUITE_THREADS=$(( JOBS / 2 > 0 ? JOBS / 2 : 1 ))
SUITE_ENV=(env OMP_WAIT_POLICY=PASSIVE "OMP_NUM_THREADS=$SUITE_THREADS")
# The test that reads the whole device's free memory: alone, before the rest
# (the memory stage), never beside them.
MEMORY_TEST='GpuModel.MemoryDoesNotGrowAfterStartup'
SUITE_FILTER="*-$MEMORY_TEST"
# memcheck: every kernel test (the GpuKernel fixture; GpuModel's whole-model tests
# would take minutes under it). racecheck: the kernels that share memory
# between threads: the column sums (LayerNorm's dw and db, Dense's bias),
# block_sum (LayerNorm, the S4D kernel's backward, cross-entropy), the SSM
# convolution's dK sums and transposes, the embedding's group sums.
MEMCHECK_FILTER='GpuKernel.*'
RACECHECK_FILTER='GpuKernel.LayerNorm:GpuKernel.Dense:GpuKernel.S4dKernel:GpuKernel.CrossEntropy:'
RACECHECK_FILTER+='GpuKernel.SsmConvFft:GpuKernel.SsmConvToeplitz:GpuKernel.Embedding'
# The stages of the table, in order.
STAGES="build memory suite memcheck racecheck demo mpi bench128 eager128 bench512 bench4096 benchmax lab compile128"
# --quick: the functional checks.
QUICK="memory,suite,memcheck,racecheck,demo,mpi"
# The stages this run takes (all, or --stages), as " a b c ".
SELECTED=" $STAGES "
# selected STAGE: true when this run takes STAGE.
selected() { [[ $SELECTED == *" $1 "* ]]; }
# The memory plan's largest batch at T = 128 (bf16), read from bigs bench --plan before the benches.
BMAX=734

# ---------------------------------------------------------------- plumbing
T0=${EPOCHSECONDS:-$(date +%s)}
now() { echo $(( ${EPOCHSECONDS:-$(date +%s)} - T0 )); }
# cap SECONDS: SECONDS, or less so that the stage ends by HARD.
cap() { local left=$(( HARD - $(now) )); echo $(( $1 < left ? $1 : left )); }
# may_start EXPECTED: true when a stage expected to take EXPECTED seconds ends within the budget.
may_start() { [ $(( $(now) + $1 )) -le "$BUDGET" ]; }

# out LINE...: to stdout and the summary. outp: the same for a pipe.
out() { printf '%s\n' "$@" | tee -a "$SUMMARY"; }
outp() { tee -a "$SUMMARY"; }
# note STAGE RESULT: the stage's line in the table.
note() { printf '%s\t%s\n' "$2" "$(now)" > "$WORK/stages/$1"; }
# skip STAGE REASON: the stage did not run; says why.
skip() {
  note "$1" "skipped: $2"
  echo "$1: skipped: $2"
}

SETSID=$(command -v setsid || true)
# watch LOG IDLE DEADLINE CMD...: runs CMD in its own process group, output to
# LOG, until it exits, prints nothing for IDLE seconds (0: no limit) or the
# clock passes DEADLINE; then kills the group. Sets RC (its exit status) and
# WHY (exit, idle or deadline).
watch() {
  local log=$1 idle=$2 deadline=$3 size=-1 s since pid
  shift 3
  since=$(now)
  # Through a shell that waits for it: a death by signal is then written to
  # LOG in the shell's words ("Segmentation fault"), with status 128 + N.
  $SETSID bash -c '"$@"; exit $?' "${1##*/}" "$@" > "$log" 2>&1 < /dev/null &
  pid=$!
  : > "$WORKROOT/pids/$pid"
  WHY=exit
  while kill -0 "$pid" 2> /dev/null; do
    sleep 0.2
    s=$(stat -c %s "$log" 2> /dev/null || echo 0)
    [ "$s" != "$size" ] && size=$s && since=$(now)
    if [ "$idle" -gt 0 ] && [ $(( $(now) - since )) -ge "$idle" ]; then WHY=idle && break; fi
    if [ "$(now)" -ge "$deadline" ]; then WHY=deadline && break; fi
  done
  [ "$WHY" = exit ] || kill_group "$pid"
  wait "$pid" 2> /dev/null
  RC=$?
  rm -f "$WORKROOT/pids/$pid"
}
kill_group() { kill -KILL -- "-$1" 2> /dev/null || kill -KILL "$1" 2> /dev/null; }

# rc_words RC: an exit status in words.
rc_words() {
  if [ "$1" -gt 128 ] && [ "$1" -lt 160 ]; then
    echo "exit $1, signal $(kill -l $(( $1 - 128 )) 2> /dev/null || echo $(( $1 - 128 )))"
  else
    echo "exit $1"
  fi
}
# cut_lines N: the first N lines, each at most 200 characters.
cut_lines() { head -n "$1" | cut -c1-200; }

# ---------------------------------------------------------------- GoogleTest logs
# gtest_ended LOG: "NAME<TAB>STATUS<TAB>MS" for every test that ended.
gtest_ended() {
  sed -nE 's/^\[ +(OK|FAILED|SKIPPED) +\] ([A-Za-z0-9_/.]+)(,.*)? \(([0-9]+) ms\)$/\2\t\1\t\4/p' "$1"
}
# gtest_unfinished LOG: the test that started last and never ended ("" if none).
gtest_unfinished() {
  awk '/^\[ RUN      \] / { cur = $4; next }
       /^\[ +(OK|FAILED|SKIPPED) +\] .*\([0-9]+ ms\)$/ { sub(/,$/, "", $4); if ($4 == cur) cur = "" }
       END { print cur }' "$1"
}
# gtest_started LOG: how many tests started.
gtest_started() { grep -c '^\[ RUN      \] ' "$1"; }
# gtest_block LOG NAME: the lines that test NAME printed, between its start and end.
gtest_block() {
  awk -v n="$2" '$0 == "[ RUN      ] " n { on = 1; next }
                 on && /^\[ +(OK|FAILED|SKIPPED) +\] / { sub(/,$/, "", $4); if ($4 == n) exit }
                 on { print }' "$1"
}
# failure_lines LOG NAME N: the first N lines of test NAME that are not a
# passing comparison (those are in the archive).
failure_lines() {
  gtest_block "$1" "$2" | grep -vE '^  .* values, (worst relative error|normwise error)' | cut_lines "$3"
}
# gtest_list PROGRAM FILTER: the test names PROGRAM holds that FILTER selects.
gtest_list() {
  timeout 30 "$1" --gtest_list_tests --gtest_filter="$2" 2> /dev/null |
    awk '/^[^ ]/ { suite = $1; next } /^  [^ ]/ { print suite $1 }'
}

# suite_run LABEL FILTER IDLE DEADLINE CMD...: runs the GoogleTest program
# CMD (CMD may wrap $SUITE, as compute-sanitizer does) on the tests of $SUITE
# that FILTER selects. When a run crashes or hangs, the test that was running
# is named and the rest (the tests that have not ended) run again without it,
# while the deadline allows. Writes $WORK/LABEL.results ("NAME<TAB>STATUS<TAB>
# MS<TAB>ROUND" per test, in the order they ended; STATUS is OK, FAILED,
# SKIPPED, CRASHED, HUNG, TIMEOUT or NOT-RUN) and $WORK/LABEL.log (round 1),
# LABEL.round2.log, ...; prints a count and every test that did not pass.
suite_run() {
  local label=$1 filter=$2 idle=$3 deadline=$4
  shift 4
  local res="$WORK/$label.results" t_start round=1 log excl unfinished status total n
  t_start=$(now)
  : > "$res"
  gtest_list "$SUITE" "$filter" > "$WORK/$label.tests"
  total=$(wc -l < "$WORK/$label.tests")
  if [ "$total" -eq 0 ]; then
    echo "$label: no test matches '$filter' in $SUITE (renamed? see test/test_gpu.cu)"
    return 1
  fi
  excl=""
  while :; do
    log=$(round_log "$label" $round)
    # GoogleTest's filter has one '-': what follows it is every exclusion.
    local f="$filter"
    if [ -n "$excl" ]; then
      case $filter in *-*) f="$filter:$excl" ;; *) f="$filter-$excl" ;; esac
    fi
    watch "$log" "$idle" "$deadline" "$@" --gtest_filter="$f"
    gtest_ended "$log" | awk -v r=$round '{ print $0 "\t" r }' >> "$res"
    # A wrapper that cannot run the tests at all (SUITE_STOP: its words for
    # that) is not asked again.
    [ -n "${SUITE_STOP:-}" ] && grep -qE "$SUITE_STOP" "$log" && break
    unfinished=$(gtest_unfinished "$log")
    if [ -z "$unfinished" ]; then
      if [ "$WHY" != exit ]; then  # killed between tests
        echo "$label: round $round: killed ($WHY) between tests; the log ends:"
        tail -n 5 "$log" | cut_lines 5
      elif [ "$RC" -ne 0 ] && [ "$(gtest_started "$log")" -eq 0 ]; then
        echo "$label: $(rc_words "$RC") before any test started; the log ends:"
        tail -n 5 "$log" | cut_lines 5
      fi
      break
    fi
    case $WHY in
      idle) status=HUNG ;;
      deadline) status=TIMEOUT ;;
      *) status="CRASHED" ;;
    esac
    printf '%s\t%s\t-\t%s\t%s\n' "$unfinished" "$status" $round "$(rc_words "$RC")" >> "$res"
    excl=$(cut -f1 "$res" | sort -u | paste -sd: -)  # every test that ended or broke so far
    n=$(grep -cvxF -f <(cut -f1 "$res") "$WORK/$label.tests")
    [ "$n" -eq 0 ] && break
    if [ "$WHY" = deadline ] || [ $(( $(now) + 5 )) -ge "$deadline" ] || [ $round -ge 10 ]; then break; fi
    round=$((round + 1))
  done
  # The tests that never ended in any round.
  grep -vxF -f <(cut -f1 "$res") "$WORK/$label.tests" | awk -v r=$round '{ print $0 "\tNOT-RUN\t-\t" r }' >> "$res"
  suite_report "$label" "$total" "$round" $(( $(now) - t_start ))
}

# round_log LABEL ROUND: the log of that round.
round_log() { if [ "$2" -gt 1 ]; then echo "$WORK/$1.round$2.log"; else echo "$WORK/$1.log"; fi; }

# suite_report LABEL TOTAL ROUNDS SECONDS: the count, then each test that did
# not pass with its first lines (at most 8 tests in full, then names only).
suite_report() {
  local label=$1 res="$WORK/$1.results" shown=0 name status ms round why log
  printf '%s: %s tests, %s round(s), %s s:' "$label" "$2" "$3" "$4"
  for status in OK FAILED CRASHED HUNG TIMEOUT SKIPPED NOT-RUN; do
    n=$(awk -F'\t' -v s=$status '$2 == s' "$res" | wc -l)
    [ "$n" -gt 0 ] && printf ' %s %s' "$n" "$status"
  done
  echo
  while IFS=$'\t' read -r name status ms round why; do
    case $status in OK | SKIPPED) continue ;; esac
    log=$(round_log "$label" "$round")
    shown=$((shown + 1))
    if [ $shown -gt 8 ]; then
      echo "  $status $name"
      continue
    fi
    case $status in
      FAILED) echo "  FAILED  $name ($ms ms):" && failure_lines "$log" "$name" 6 | sed 's/^/      /' ;;
      CRASHED) echo "  CRASHED $name ($why; the rest ran without it); its last lines:" &&
        gtest_block "$log" "$name" | grep -vE '^  .* values, (worst|normwise)' | tail -n 5 | cut -c1-200 | sed 's/^/      /' ;;
      HUNG) echo "  HUNG    $name (nothing printed for $TEST_IDLE s; killed; the rest ran without it)" ;;
      TIMEOUT) echo "  TIMEOUT $name (running when the stage's time ran out)" ;;
      NOT-RUN) echo "  NOT-RUN $name (no time left after the crashes and hangs above)" ;;
    esac
  done < "$res"
  if [ "$(awk -F'\t' '$2 == "SKIPPED"' "$res" | wc -l)" -eq "$2" ]; then
    echo "  every test SKIPPED: the CUDA runtime sees no device (driver vs toolkit? see nvidia-smi):"
    grep -m1 -A1 'Skipped' "$WORK/$label.log" | cut_lines 2 | sed 's/^/      /'
  fi
}

# suite_passed LABEL: every test OK (or skipped for a reason other than a missing GPU).
suite_passed() {
  local res="$WORK/$1.results"
  [ -s "$res" ] && ! awk -F'\t' '$2 != "OK" && $2 != "SKIPPED"' "$res" | grep -q . &&
    awk -F'\t' '$2 == "OK"' "$res" | grep -q .
}

# rerun_alone LABEL MAX IDLE DEADLINE: up to MAX tests that did not pass run
# again, each alone with blocking launches, so a fault is reported at its own
# launch and a test poisoned by an earlier one is told apart.
rerun_alone() {
  local label=$1 max=$2 idle=$3 deadline=$4 name status round log k=0 verdict lines
  while IFS=$'\t' read -r name status _ round _; do
    [ $k -ge "$max" ] && break
    k=$((k + 1))
    if [ $(( $(now) + 10 )) -ge "$deadline" ]; then
      echo "  alone: $name not rerun (time)"
      continue
    fi
    log="$WORK/$label.alone.$(tr -c 'A-Za-z0-9_.\n' '_' <<< "$name").log"
    watch "$log" "$idle" "$deadline" "${SUITE_ENV[@]}" CUDA_LAUNCH_BLOCKING=1 "$SUITE" --gtest_filter="$name"
    if [ "$WHY" != exit ]; then verdict="hangs alone ($WHY)"
    elif [ "$RC" -eq 0 ]; then verdict="passes alone: it failed after an earlier test broke the process"
    elif [ -n "$(gtest_unfinished "$log")" ]; then verdict="crashes alone ($(rc_words "$RC"))"
    else verdict="fails alone"
    fi
    echo "  alone, CUDA_LAUNCH_BLOCKING=1: $name $verdict"
    # What it printed alone, unless the suite's report above showed the same.
    if [ "$RC" -ne 0 ]; then
      lines=$(gtest_block "$log" "$name" | grep -vE '^  .* values, (worst|normwise)' | tail -n 4 | cut -c1-200)
      [ "$(tr -d 0-9 <<< "$lines")" != "$(gtest_block "$(round_log "$label" "$round")" "$name" |
        grep -vE '^  .* values, (worst|normwise)' | tail -n 4 | cut -c1-200 | tr -d 0-9)" ] &&
        printf '%s\n' "$lines" | sed 's/^/      /'
    fi
  # FAILED and CRASHED first: a hung test usually hangs again, at a cost.
  done < <(awk -F'\t' '$2 == "FAILED" || $2 == "CRASHED"' "$WORK/$label.results"
           awk -F'\t' '$2 == "HUNG" || $2 == "TIMEOUT"' "$WORK/$label.results")
}

# stage NAME COMMAND...: runs COMMAND (a stage function) in the background
# into NAME.report, then shows it. In the background because bash runs a
# trap only once the foreground command has ended, but at once in `wait`: a
# signal then stops the run now, not after a 3-minute build.
stage() {
  local name=$1
  shift
  ("$@" > "$WORK/$name.report" 2>&1) &
  wait $!
  show_report "$name"
  pack
}
# show_report NAME: its report on stdout and in the summary, once.
show_report() {
  outp < "$WORK/$1.report"
  mv "$WORK/$1.report" "$WORK/$1.txt"
}

# ---------------------------------------------------------------- packing
# pack: the summary and every log into OUTDIR/gpu_logs.tgz (written beside
# and moved, so a reader never sees half an archive).
pack() {
  cp "$SUMMARY" "$WORK/summary.txt" 2> /dev/null
  tar czf "$WORKROOT/gpu_logs.tgz" -C "$WORKROOT" gpu_logs 2> /dev/null &&
    mv -f "$WORKROOT/gpu_logs.tgz" "$OUTDIR/gpu_logs.tgz"
}
kill_children() {
  local p
  for p in $(jobs -p); do kill -TERM "$p" 2> /dev/null; done
  for p in "$WORKROOT"/pids/*; do [ -e "$p" ] && kill_group "${p##*/}"; done
}
FINISHED=no
finish() {
  [ $FINISHED = yes ] && return
  FINISHED=yes
  kill_children
  pack
  rm -rf "$WORKROOT"
}
on_signal() {
  trap '' TERM INT HUP
  kill_children
  out "" "INTERRUPTED by SIG$1 after $(now) s; what the stages that ran found:"
  for f in "$WORK"/*.report; do [ -s "$f" ] && outp < "$f"; done  # those not shown yet
  table | outp
  finish
  exit 130
}

# ---------------------------------------------------------------- stages
DRY=no
COMMIT=""
GPU_LINE=""

start_checks() {
  out "== gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, budget ${BUDGET} s (hard ${HARD} s)"
  if ! command -v "$NVCC" > /dev/null 2>&1 && [ -x "$CUDA_HOME/bin/nvcc" ]; then
    export PATH="$CUDA_HOME/bin:$PATH"
    out "nvcc was not on the PATH: using $CUDA_HOME/bin"
  fi
  if command -v "$NVCC" > /dev/null 2>&1; then
    out "nvcc: $("$NVCC" --version | grep -m1 -o 'release [0-9.]*, V[0-9.]*')"
  elif [ $DRY = no ]; then
    out "FATAL: no nvcc (not on the PATH, not in $CUDA_HOME/bin): this script builds the CUDA path and will not" \
      "test a CPU-only build; set NVCC=/path/to/nvcc or CUDA_HOME"
    return 2
  else
    out "nvcc: none (dry run)"
  fi
  # The build runs make, and make the host compiler (the Makefile's CXX, g++,
  # which nvcc calls too): without them every stage would fail for a reason
  # that is not the code's.
  local tool missing=() list
  for tool in make "$CXX"; do
    command -v "$tool" > /dev/null 2>&1 || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ] && [ $DRY = no ]; then
    list=$(printf '%s and no ' "${missing[@]}")
    out "FATAL: no ${list% and no } on the PATH ($PATH): the build needs make and the host compiler" \
      "$CXX (set CXX=/path/to/g++, or run where the build tools are)"
    return 2
  fi
  out "build tools: make $(command -v make || echo none); $CXX $(command -v "$CXX" || echo none)"
  nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1
  local smi=$?
  GPU_LINE=$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2> /dev/null)
  if [ $smi -eq 0 ] && [ -n "$GPU_LINE" ]; then
    out "GPU: $GPU_LINE (name, driver, memory, max SM clock)"
  elif [ $DRY = no ]; then
    out "FATAL: no GPU visible (nvidia-smi: $(head -c 200 "$WORK/nvidia-smi.txt" | tr '\n' ' ')): run this on the GPU" \
      "machine; --dry-run shows the layout here"
    return 2
  else
    out "GPU: none (dry run)"
  fi
  CS=$(find_sanitizer)
  out "tools: compute-sanitizer ${CS:-none}; mpirun $(command -v mpirun || echo none); $PY $(command -v "$PY" || echo none)"
}

# find_sanitizer: compute-sanitizer on the PATH, beside nvcc, or in CUDA_HOME.
find_sanitizer() {
  local c
  for c in "$(command -v compute-sanitizer)" "$(dirname "$(command -v "$NVCC" || echo .)")/compute-sanitizer" \
    "$CUDA_HOME/bin/compute-sanitizer"; do
    [ -n "$c" ] && [ -x "$c" ] && echo "$c" && return
  done
}

# GoogleTest for the suite: the system's, else from the carried source.
GTEST_ARGS=()
find_gtest() {
  if echo 'int main() {}' | "$CXX" -x c++ - -lgtest -lgtest_main -lpthread -o /dev/null 2> /dev/null; then
    return 0
  fi
  if [ -d build/googletest/src ]; then
    GTEST_ARGS=(GTEST_FROM_SRC=1)
    return 0
  fi
  echo "build: no GoogleTest here and no build/googletest: run \`make gtest-src\` before the call and carry build/googletest"
  return 1
}

stage_build() {
  local goals="" t0 gt=yes st need_suite=no need_bins=no need_lab=no
  for st in memory suite memcheck racecheck; do selected $st && need_suite=yes; done
  for st in demo mpi bench128 bench512 bench4096 benchmax; do selected $st && need_bins=yes; done
  selected lab && need_lab=yes
  [ $need_bins = yes ] && goals="all"
  [ $need_suite = yes ] && goals="$goals build/test_gpu"
  goals=${goals# }
  if [ $DRY = yes ]; then
    skip build "dry run (would run: make -k -j$JOBS CUDA_ARCH=sm_90 ${goals:-nothing})"
    return
  fi
  if [ -z "$goals" ] && [ $need_lab = no ]; then
    note build "ok (nothing to build for the stages selected)"
    echo "build: nothing to build for the stages selected"
    return
  fi
  if [ $need_suite = yes ]; then
    find_gtest || gt=no
    [ $gt = no ] && goals=${goals/build\/test_gpu/}
  fi
  # The kernel lab, where the Makefile has it.
  [ $need_lab = yes ] && make -n lab > /dev/null 2>&1 && goals="$goals lab"
  [ $need_bins = yes ] && rm -f bigs
  [ $need_suite = yes ] && rm -f build/test_gpu
  [ $need_lab = yes ] && rm -f build/lab_*
  t0=$(now)
  # -k: the binaries and the suite are judged apart, so a suite that does not
  # build still leaves the demo and bench to run.
  watch "$WORK/build.log" 0 "$(( $(now) + $(cap 200) ))" make -k -j"$JOBS" CUDA_ARCH=sm_90 NVCC="$NVCC" \
    "${GTEST_ARGS[@]}" $goals
  local bins=ok suite=built
  [ -x bigs ] && [ -x tokenizer ] && [ -x data_prep ] || bins=MISSING
  [ -x "$SUITE" ] || suite="NOT BUILT"
  [ $need_bins = no ] && bins="not needed"
  [ $need_suite = no ] && suite="not needed"
  echo "build: make $(rc_words "$RC") ($WHY) in $(( $(now) - t0 )) s; bigs, tokenizer, data_prep: $bins;" \
    "GPU suite: $suite${GTEST_ARGS[*]:+ (GoogleTest from build/googletest)}"
  if [ "$RC" -ne 0 ]; then
    grep -E '(error|Error)' "$WORK/build.log" | grep -vE '^make(\[[0-9]+\])?: \*\*\*' | cut_lines 20
  fi
  # The oracle's fixture, which the fp32 whole-model tests compare against:
  # carried from here (make gpu-check-prep), else made with this machine's torch.
  if [ $need_suite = yes ] && [ ! -f build/fixture.bin ]; then
    timeout 120 "$PY" dev/reference.py --out build/fixture.bin > "$WORK/fixture.log" 2>&1 ||
      echo "build: no build/fixture.bin (carry it, or see fixture.log): the oracle tests will fail"
  fi
  if [ "$bins" != MISSING ] && [ "$suite" != "NOT BUILT" ] && [ "$RC" -eq 0 ]; then note build ok
  else note build "FAILED: binaries $bins, suite $suite (see build.log)"
  fi
}

# unselected STAGE: true (and the stage's row says so) when this run does not
# take STAGE (--stages, --quick).
unselected() {
  selected "$1" && return 1
  skip "$1" "not selected (--stages=$(tr ' ' '\n' <<< "$SELECTED" | grep . | paste -sd, -))"
}
# dry_without_fake STAGE: true (and the row says so) in a dry run without a
# fake suite.
dry_without_fake() {
  [ $DRY = yes ] && [ -z "${GPU_CHECK_SUITE:-}" ] && skip "$1" "dry run (GPU_CHECK_SUITE=PROGRAM runs a fake)"
}

# GpuModel.MemoryDoesNotGrowAfterStartup compares the whole device's free
# memory before and after steps of every batch size: other processes on the
# GPU (the suite, the sanitizers and the demo run side by side) and lazy
# module loading (a kernel's code mapped at its first launch) would move it.
# So it runs here alone, before the others start, with every module loaded
# at start-up.
stage_memory() {
  unselected memory && return
  dry_without_fake memory && return
  if [ ! -x "$SUITE" ]; then
    skip memory "$SUITE not built"
    return
  fi
  if [ -z "$(gtest_list "$SUITE" "$MEMORY_TEST")" ]; then
    if [ $DRY = yes ]; then skip memory "dry run ($MEMORY_TEST is not in $SUITE)"; return; fi
    echo "memory: no test $MEMORY_TEST in $SUITE (renamed? see test/test_gpu.cu and MEMORY_TEST here)"
    note memory "FAILED: no test $MEMORY_TEST"
    return
  fi
  local deadline=$(( $(now) + $(cap 60) ))
  suite_run memory "$MEMORY_TEST" "$TEST_IDLE" "$deadline" "${SUITE_ENV[@]}" CUDA_MODULE_LOADING=EAGER "$SUITE"
  if suite_passed memory; then note memory "ok (alone, CUDA_MODULE_LOADING=EAGER)"
  elif ! awk -F'\t' '$2 != "SKIPPED"' "$WORK/memory.results" | grep -q .; then
    note memory "FAILED: SKIPPED (the CUDA runtime sees no device)"
  else note memory "FAILED: $(awk -F'\t' '$2 != "OK" { print $2 }' "$WORK/memory.results" | sort | uniq -c | xargs)"
  fi
}

stage_suite() {
  unselected suite && return
  dry_without_fake suite && return
  if [ ! -x "$SUITE" ]; then
    skip suite "$SUITE not built"
    return
  fi
  local deadline=$(( $(now) + $(cap 120) ))
  suite_run suite "$SUITE_FILTER" "$TEST_IDLE" "$deadline" "${SUITE_ENV[@]}" "$SUITE"
  rerun_alone suite 3 "$TEST_IDLE" "$deadline"
  if suite_passed suite; then note suite "ok ($(wc -l < "$WORK/suite.results") tests)"
  elif ! awk -F'\t' '$2 != "SKIPPED"' "$WORK/suite.results" | grep -q .; then
    note suite "FAILED: every test SKIPPED (the CUDA runtime sees no device)"
  else note suite "FAILED: $(awk -F'\t' '$2 != "OK" { print $2 }' "$WORK/suite.results" | sort | uniq -c | xargs)"
  fi
}

# sanitizer_errors LOG...: the errors compute-sanitizer counted, over every
# run: its RACECHECK SUMMARY (racecheck) or ERROR SUMMARY line (the others).
sanitizer_errors() {
  awk 'FNR == 1 { s += e; e = 0; race = 0 }
       /RACECHECK SUMMARY: .*\([0-9]+ error/ { race = 1; match($0, /\([0-9]+ error/); e = substr($0, RSTART + 1, RLENGTH - 7) + 0 }
       !race && /ERROR SUMMARY: [0-9]+ error/ { match($0, /SUMMARY: [0-9]+/); e = substr($0, RSTART + 9, RLENGTH - 9) + 0 }
       END { print s + e }' "$@"
}

# kernel_filter_option CS: the option by which this compute-sanitizer takes a
# kernel filter (kns=SUBSTRING), as its --help lists it: --kernel-name
# (current releases), --kernel-regex (earlier ones), --filter (the first);
# nothing when it lists none.
kernel_filter_option() {
  local help opt
  help=$(timeout 30 "$1" --help 2>&1)
  for opt in --kernel-name --kernel-regex --filter; do
    if grep -qE -- "(^|[[:space:],])$opt([[:space:]=,]|\$)" <<< "$help"; then
      echo "$opt"
      return
    fi
  done
}

# compute-sanitizer's words when it cannot check at all (it refuses the
# device, as on a gVisor machine: "Device not supported", then error 999 at
# the first allocation; or it fails itself): then the stage is skipped with
# them, and whatever the tests did under it is no finding.
SANITIZER_REFUSAL='Device not supported|Internal Sanitizer Error|^========= .*(Error: (Unable to|Failed to|Could not)|'
SANITIZER_REFUSAL+='not supported on|Target application terminated before first instrumented API call)'

# sanitize LABEL TOOL FILTER: the tests FILTER selects under compute-sanitizer TOOL.
sanitize() {
  local label=$1 tool=$2 filter=$3 errors refusal opt f
  unselected "$label" && return
  if [ $DRY = yes ]; then skip "$label" "dry run"; return; fi
  if [ -z "${CS:-}" ]; then skip "$label" "no compute-sanitizer here"; return; fi
  if [ ! -x "$SUITE" ]; then skip "$label" "$SUITE not built"; return; fi
  local only=()
  # racecheck: our kernels only (their names end in _kernel), not cuBLASLt's
  # and cuFFT's, which would take minutes under it and are not ours to fix.
  if [ "$tool" = racecheck ]; then
    opt=$(kernel_filter_option "$CS")
    if [ -n "$opt" ]; then only=("$opt" kns=_kernel)
    else echo "$label: $CS --help lists no kernel filter (--kernel-name, --kernel-regex, --filter): every kernel"
    fi
  fi
  local deadline=$(( $(now) + $(cap 110) )) SUITE_STOP=$SANITIZER_REFUSAL
  suite_run "$label" "$filter" 90 "$deadline" "${SUITE_ENV[@]}" "$CS" --tool "$tool" "${only[@]}" --error-exitcode 99 \
    "$SUITE"
  if [ ${#only[@]} -gt 0 ] && [ "$(gtest_started "$WORK/$label.log")" -eq 0 ] &&
    ! grep -qE "$SANITIZER_REFUSAL" "$WORK/$label.log"; then
    echo "$label: no test started with ${only[*]}; again on every kernel"
    mv "$WORK/$label.log" "$WORK/$label.kernel-filter.log"
    suite_run "$label" "$filter" 90 "$deadline" "${SUITE_ENV[@]}" "$CS" --tool "$tool" --error-exitcode 99 "$SUITE"
  fi
  # The last run's logs: could it check at all?
  local logs=("$WORK/$label.log")
  for f in "$WORK/$label".round*.log; do [ -e "$f" ] && logs+=("$f"); done
  refusal=$(grep -hE "$SANITIZER_REFUSAL" "${logs[@]}" 2> /dev/null | head -1 | sed 's/^=* *//' | cut -c1-160)
  if [ -z "$refusal" ] && ! cat "${logs[@]}" 2> /dev/null | grep -q '^\[ RUN      \] '; then
    refusal="it started no test; its log ends: $(tail -n 1 "$WORK/$label.log" 2> /dev/null | cut -c1-120)"
  fi
  if [ -n "$refusal" ]; then
    skip "$label" "compute-sanitizer $tool could not check here: $refusal"
    return
  fi
  # Each run ends with its summary line: ERROR SUMMARY (memcheck) or
  # RACECHECK SUMMARY ... (E errors, W warnings).
  errors=$(sanitizer_errors "$WORK/$label".*log)
  echo "$label: $errors error(s) found by compute-sanitizer $tool$(grep -h 'SUMMARY' "$WORK/$label".*log |
    sed 's/^========= / | /' | sort -u | head -3 | tr -d '\n')"
  grep -h '^========= ' "$WORK/$label".*log | grep -vE 'SUMMARY|COMPUTE-SANITIZER|^========= *$' | cut_lines 12 |
    sed 's/^/    /'
  if [ "$errors" -eq 0 ] && suite_passed "$label"; then note "$label" "ok (0 errors)"
  else note "$label" "FOUND: $errors error(s); tests: $(awk -F'\t' '{ print $2 }' "$WORK/$label.results" | sort | uniq -c | xargs)"
  fi
}

# The commands end to end on the GPU: a vocabulary, shards, pretraining with
# validation and checkpoints mid-run and at the end, fill-mask.
stage_demo() {
  unselected demo && return
  if [ $DRY = yes ]; then skip demo "dry run"; return; fi
  if [ ! -x bigs ]; then skip demo "bigs not built"; return; fi
  watch "$WORK/demo.log" 0 "$(( $(now) + $(cap 90) ))" env DEVICE=cuda STEPS=120 EVAL_EVERY=40 SAVE_EVERY=40 \
    bash dev/demo.sh
  echo "demo (dev/demo.sh on the GPU, 120 steps): $(rc_words "$RC") ($WHY)"
  grep -E '^device:|^step 120/|val loss|^saved .*(step 40|final)|demo done|^bigs|rror' "$WORK/demo.log" | cut_lines 10 |
    sed 's/^/    /'
  [ "$RC" -eq 0 ] && note demo ok || note demo "FAILED ($(rc_words "$RC"), $WHY)"
}

# A few pretraining steps through mpirun, where bigs links MPI and NCCL: the
# gradient exchange bucket by bucket on NCCL's stream, to itself, two rounds
# (micro-batches) a step, so that a round packs while the last one may be in
# flight. The same steps without mpirun (the micro-batches summed on the
# model's stream) must give the same log and model, byte for byte: both add
# the same gradients to zero in the same order, over the whole block.
stage_mpi() {
  unselected mpi && return
  if [ $DRY = yes ]; then skip mpi "dry run"; return; fi
  if ! command -v mpirun > /dev/null; then skip mpi "no mpirun here"; return; fi
  if [ ! -x "$BIGS" ]; then skip mpi "bigs not built"; return; fi
  # The exchange this checks is NCCL's: the binary must link it (the Makefile
  # adds it where nvcc finds nccl.h), not MPI alone.
  local libs
  libs=$(ldd "$BIGS" 2> /dev/null)
  if ! grep -qi 'libnccl' <<< "$libs"; then
    if grep -qi 'libmpi' <<< "$libs"; then
      skip mpi "bigs is not the NCCL build (ldd $BIGS: libmpi but no libnccl; no nccl.h where nvcc looked?)"
    else
      skip mpi "bigs is not the NCCL build (ldd $BIGS: neither libnccl nor libmpi; no mpicxx at build time?)"
    fi
    return
  fi
  if [ ! -d out/demo/shards ]; then skip mpi "no shards (the demo did not make them)"; return; fi
  # OMPI_ALLOW_RUN_AS_ROOT: the device machine runs commands as root.
  local args=(pretrain --device cuda --config tiny --train 'out/demo/shards/train_*.bin'
    --val 'out/demo/shards/val_*.bin' --batch 32 --micro-batch 16 --steps 10 --eval-seqs 64 --log-every 5)
  watch "$WORK/mpi.log" 0 "$(( $(now) + $(cap 40) ))" env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun -np 1 "$BIGS" "${args[@]}" --out "$WORKROOT/mpi_run"
  local rc=$RC why=$WHY same=""
  echo "mpi (mpirun -np 1 bigs pretrain, 10 steps): $(rc_words "$rc") ($why)"
  grep -E '^world:|^step 10/|val loss|rror' "$WORK/mpi.log" | cut_lines 5 | sed 's/^/    /'
  if [ "$rc" -eq 0 ]; then
    watch "$WORK/mpi_ref.log" 0 "$(( $(now) + $(cap 40) ))" "$BIGS" "${args[@]}" --out "$WORKROOT/mpi_ref"
    if [ "$RC" -ne 0 ]; then
      same="the run without mpirun: $(rc_words "$RC") ($WHY)"
    elif cmp -s "$WORKROOT/mpi_run/log.jsonl" "$WORKROOT/mpi_ref/log.jsonl" &&
      cmp -s "$WORKROOT/mpi_run/model.bin" "$WORKROOT/mpi_ref/model.bin"; then
      same="identical to the run without mpirun"
    else
      same="DIFFERENT from the run without mpirun"
      diff "$WORKROOT/mpi_run/log.jsonl" "$WORKROOT/mpi_ref/log.jsonl" | cut_lines 4 | sed 's/^/    /'
    fi
    echo "    log.jsonl and model.bin: $same"
  fi
  if [ "$rc" -eq 0 ] && [ "$same" = "identical to the run without mpirun" ]; then
    note mpi "ok (identical to the run without mpirun)"
  elif [ "$rc" -eq 0 ]; then
    note mpi "FAILED ($same)"
  else
    note mpi "FAILED ($(rc_words "$rc"), $why)"
  fi
}

# functional_group: the checks whose timings do not matter, side by side (the
# GPU is shared between processes; each keeps its own CUDA context), each
# reporting into its own file, printed in order when all are done.
functional_group() {
  local name last_pack
  for name in suite memcheck racecheck demo; do
    case $name in
      suite) (stage_suite > "$WORK/suite.report" 2>&1) & ;;
      memcheck) (sanitize memcheck memcheck "$MEMCHECK_FILTER" > "$WORK/memcheck.report" 2>&1) & ;;
      racecheck) (sanitize racecheck racecheck "$RACECHECK_FILTER" > "$WORK/racecheck.report" 2>&1) & ;;
      demo) ( (stage_demo; stage_mpi) > "$WORK/demo.report" 2>&1) & ;;
    esac
  done
  last_pack=$(now)
  while [ -n "$(jobs -pr)" ]; do
    sleep 1
    [ $(( $(now) - last_pack )) -ge 20 ] && pack && last_pack=$(now)
  done
  wait
  for name in suite memcheck racecheck demo; do
    out "" "== $name"
    show_report "$name"
  done
  pack
}

# bench NAME T B STEPS: one `bigs bench` in bf16 for BiGS-large.
bench() {
  local name=$1 T=$2 B=$3 steps=$4
  unselected "$name" && return
  if [ $DRY = yes ]; then skip "$name" "dry run"; return; fi
  if [ ! -x bigs ]; then skip "$name" "bigs not built"; return; fi
  if ! may_start 35; then skip "$name" "time (at $(now) s of $BUDGET)"; return; fi
  watch "$WORK/$name.log" 0 "$(( $(now) + $(cap 75) ))" ./bigs bench --device cuda --config large --seq "$T" \
    --batch "$B" --steps "$steps" --precision bf16
  if [ "$RC" -eq 0 ] && grep -q '^bench: cuda' "$WORK/$name.log"; then
    grep -m1 '^bench: cuda' "$WORK/$name.log"
    note "$name" ok
  else
    echo "$name (T $T, batch $B): $(rc_words "$RC") ($WHY)"
    grep -E '^bigs|rror|^terminate' "$WORK/$name.log" | cut_lines 5 | sed 's/^/    /'
    note "$name" "FAILED ($(rc_words "$RC"), $WHY)"
  fi
}

# torch NAME MODE EXPECTED TIMEOUT: the PyTorch peer at T = 128, batch 64.
torch_peer() {
  local name=$1 mode=$2 expected=$3 t=$4
  unselected "$name" && return
  if [ $DRY = yes ]; then skip "$name" "dry run"; return; fi
  if ! may_start "$expected"; then skip "$name" "time (at $(now) s; needs about $expected s)"; return; fi
  watch "$WORK/$name.log" 0 "$(( $(now) + $(cap "$t") ))" env PYTHONUNBUFFERED=1 "$PY" dev/bench_torch.py \
    --device cuda --config large --seq 128 --batch 64 --mode "$mode"
  if grep -q 'tokens/s' "$WORK/$name.log"; then
    grep -m1 'tokens/s' "$WORK/$name.log" | cut_lines 1
    note "$name" ok
  else  # its own words (bench_torch.py says why on one line), else the end of the log
    echo "$name: $(rc_words "$RC") ($WHY): $(grep -m1 '^torch' "$WORK/$name.log" | cut -c1-200)"
    grep -q '^torch' "$WORK/$name.log" || tail -n 3 "$WORK/$name.log" | cut_lines 3 | sed 's/^/    /'
    note "$name" "FAILED ($(rc_words "$RC"), $WHY)"
  fi
}

# The kernel lab (dev/lab, `make lab`), where it was built: each lab's last table.
stage_lab() {
  local lab found=no
  unselected lab && return
  if [ $DRY = yes ]; then skip lab "dry run"; return; fi
  for lab in build/lab_ssm_conv build/lab_colsum; do
    [ -x "$lab" ] || continue
    found=yes
    if ! may_start 25; then echo "$lab: skipped: time"; continue; fi
    watch "$WORK/$(basename "$lab").log" 0 "$(( $(now) + $(cap 45) ))" "./$lab"
    echo "$lab: $(rc_words "$RC") ($WHY); its last table:"
    # The last table: the last block of lines between blank lines.
    awk 'function keep() { if (n) { m = n; for (i = 0; i < n; i++) last[i] = cur[i] } n = 0 }
         NF == 0 { keep(); next } { cur[n++] = $0 } END { keep(); for (i = 0; i < m && i < 20; i++) print last[i] }' \
      "$WORK/$(basename "$lab").log" | cut -c1-200 | sed 's/^/    /'
  done
  if [ $found = no ]; then
    if make -n lab > /dev/null 2>&1; then skip lab "make lab did not build build/lab_ssm_conv or build/lab_colsum (see build.log)"
    else skip lab "no lab in this Makefile"
    fi
  else note lab ran
  fi
}

# ---------------------------------------------------------------- the table
# Each prints "-" when its log has no such number.
dash() { local v; v=$(cat); echo "${v:--}"; }
tps() { tps_raw "$1" | dash; }
tps_raw() { grep -hoE '[0-9.]+ tokens/s' "$1" 2> /dev/null | head -1 | cut -d' ' -f1; }
mfu() { grep -hoE 'MFU [0-9.]+%' "$1" 2> /dev/null | head -1 | cut -d' ' -f2 | dash; }
ms_step() { grep -hE 'tokens/s' "$1" 2> /dev/null | grep -oE '[0-9.]+ ms/step' | head -1 | cut -d' ' -f1 | dash; }
# predicted LOG: the step time in ms that bench's cost model predicts (its
# first "bench: predicted ... N ms" line).
predicted() {
  grep -m1 -E '^bench: predicted' "$1" 2> /dev/null | grep -oE '[0-9.]+ ?ms' | head -1 | grep -oE '[0-9.]+' | dash
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }' || echo "-"; }

table() {
  local st r label name t b e c o
  echo
  echo "== summary ($(now) s; every log in gpu_logs.tgz)"
  for st in $STAGES; do
    r="not reached"
    if [ -f "$WORK/stages/$st" ]; then
      r=$(cut -f1 "$WORK/stages/$st")
      case $r in skipped*) ;; *) r="$r (done at $(cut -f2 "$WORK/stages/$st") s)" ;; esac
    fi
    printf '%-12s %s\n' "$st" "$r"
  done
  grep -h 'measured bf16 cuBLASLt peak' "$WORK"/bench128.log 2> /dev/null | cut_lines 1
  echo
  printf '%-30s %10s %7s %9s %10s %9s %10s\n' "BiGS-large, bf16" "tokens/s" "MFU" "ms/step" "predicted" "vs eager" \
    "vs compile"
  e=$(tps_raw "$WORK/eager128.log")
  c=$(tps_raw "$WORK/compile128.log")
  for row in "bench128 128 64" "bench512 512 16" "bench4096 4096 4" "benchmax 128 $BMAX"; do
    read -r name t b <<< "$row"
    o=$(tps_raw "$WORK/$name.log")
    label="bigs, T $t, batch $b"
    printf '%-30s %10s %7s %9s %10s' "$label" "${o:--}" "$(mfu "$WORK/$name.log")" "$(ms_step "$WORK/$name.log")" \
      "$(predicted "$WORK/$name.log")"
    # The peers ran at T = 128, batch 64 only.
    [ "$name" = bench128 ] && printf ' %9s %10s' "$(ratio "$o" "$e")" "$(ratio "$o" "$c")"
    echo
  done
  for row in "eager128 eager" "compile128 compile"; do
    read -r name t <<< "$row"
    printf '%-30s %10s %7s %9s\n' "torch $t, T 128, batch 64" "$(tps "$WORK/$name.log")" \
      "$(mfu "$WORK/$name.log")" "$(ms_step "$WORK/$name.log")"
  done
  echo "(predicted: bench's own cost model, 'bench: predicted' lines; '-' where it printed none)"
  calls
}

# rerun_list: the stages to run again after a fix, comma-separated: those
# selected here that failed, found errors, were not reached, or were skipped
# for time or a missing build (not those skipped for a reason a rerun does
# not change: a dry run, no compute-sanitizer, no NCCL build...; nor
# compile128 skipped for time, which a short call never has).
rerun_list() {
  local st r list=()
  for st in $STAGES; do
    [ "$st" = build ] && continue
    selected "$st" || continue
    if [ ! -f "$WORK/stages/$st" ]; then list+=("$st"); continue; fi
    r=$(cut -f1 "$WORK/stages/$st")
    case $r in
      FAILED* | FOUND* | *"not built"*) list+=("$st") ;;
      "skipped: time"*) [ "$st" != compile128 ] && list+=("$st") ;;
    esac
  done
  # mpi reads the demo's shards.
  [[ " ${list[*]} " == *" mpi "* ]] && [[ " ${list[*]} " != *" demo "* ]] && list+=(demo)
  local IFS=,
  echo "${list[*]}"
}

# calls: both device calls, exactly as the device tool takes them: the whole
# check, and the second, shorter one after a fix.
calls() {
  local id=${COMMIT%% *} again sel
  again=$(rerun_list)
  sel="--quick"
  [ -n "$again" ] && sel="--stages=$again"
  echo
  echo "device calls (after \`make gpu-check-prep\` here; BIGS_COMMIT is the commit you send, git rev-parse --short HEAD;"
  echo "both fit in a task's 15 minutes; give the machine back after the first unless the second follows at once):"
  echo "first call, the whole check (ends by ${FULL_HARD} s):"
  echo "  run command=\"BIGS_COMMIT=$id bash dev/gpu_check.sh \$OUT\" carry=$CARRY timeout_s=$CALL_TIMEOUT"
  if [ -n "$again" ]; then
    echo "second call, after a fix: the stages that did not pass here (ends by ${RERUN_HARD} s):"
  else
    echo "second call, after a fix: no stage here needs it; the functional checks (--quick; ends by ${RERUN_HARD} s):"
  fi
  echo "  run command=\"BIGS_COMMIT=$id bash dev/gpu_check.sh $sel \$OUT\" carry=$CARRY timeout_s=$RERUN_TIMEOUT"
  echo "carry: $CARRY"
}

usage() {
  sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

# select_stages LIST: SELECTED from a comma-separated list of the table's
# rows (build is always taken: the machine is bare; mpi brings demo).
select_stages() {
  local st sel=" "
  for st in ${1//,/ }; do
    if [[ " $STAGES " != *" $st "* ]]; then
      echo "gpu_check.sh: no stage '$st' (the stages: $STAGES)" >&2
      return 2
    fi
    sel+="$st "
  done
  [ "$sel" = " " ] && { echo "gpu_check.sh: --stages= names no stage" >&2; return 2; }
  [[ $sel == *" mpi "* ]] && [[ $sel != *" demo "* ]] && sel+="demo "
  [[ $sel == *" build "* ]] || sel=" build$sel"
  SELECTED=$sel
}

main() {
  local a rerun=no
  OUTDIR="" COMMIT=""
  for a in "$@"; do
    case $a in
      --dry-run) DRY=yes ;;
      --quick) select_stages "$QUICK" || return 2; rerun=yes ;;
      --stages=*) select_stages "${a#--stages=}" || return 2; rerun=yes ;;
      -h | --help) usage; return 0 ;;
      -*) echo "gpu_check.sh: unknown option '$a'; see --help" >&2; return 2 ;;
      *) if [ -z "$OUTDIR" ]; then OUTDIR=$a; elif [ -z "$COMMIT" ]; then COMMIT=$a; else
           echo "gpu_check.sh: unexpected argument '$a'; see --help" >&2; return 2; fi ;;
    esac
  done
  # The second call's budget for a selection, the whole check's otherwise.
  if [ $rerun = yes ]; then
    BUDGET=${GPU_CHECK_BUDGET:-$RERUN_BUDGET} HARD=${GPU_CHECK_HARD:-$RERUN_HARD}
  fi
  cd "$(dirname "$0")/.." || return 2
  OUTDIR=${OUTDIR:-build/gpu_logs}
  mkdir -p "$OUTDIR" || return 2
  OUTDIR=$(cd "$OUTDIR" && pwd)
  # The device copy may hold no git history: the commit from the argument,
  # else BIGS_COMMIT, else git.
  [ -z "$COMMIT" ] && COMMIT=${BIGS_COMMIT:-}
  if [ -z "$COMMIT" ]; then
    COMMIT=$(git log -1 --format='%h %cd' --date=short 2> /dev/null)
    [ -n "$COMMIT" ] && [ -n "$(git status --porcelain --untracked-files=no 2> /dev/null)" ] && COMMIT="$COMMIT (modified)"
  fi
  COMMIT=${COMMIT:-unknown (pass BIGS_COMMIT=ID or a second argument)}
  WORKROOT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || return 2
  WORK=$WORKROOT/gpu_logs
  mkdir -p "$WORK/stages" "$WORKROOT/pids"
  SUMMARY=$OUTDIR/summary.txt
  rm -f "$SUMMARY" "$OUTDIR/gpu_logs.tgz"
  trap finish EXIT
  trap 'on_signal TERM' TERM
  trap 'on_signal INT' INT
  trap 'on_signal HUP' HUP
  [ $DRY = yes ] && out "== DRY RUN: nothing is built or run on a GPU; this is the layout"
  [ $rerun = yes ] && out "== stages:$SELECTED(the rest not selected; the second call's budget: ends by $HARD s)"
  start_checks || { table | outp; return 2; }
  [ -n "$(ls -A "$OUTDIR" | grep -vxE 'summary.txt|gpu_logs.tgz')" ] &&
    out "note: $OUTDIR holds other files too; only summary.txt and gpu_logs.tgz are this run's"
  stage build stage_build
  # Alone on the GPU, before anything else uses it.
  out "" "== memory ($MEMORY_TEST alone, CUDA_MODULE_LOADING=EAGER)"
  stage memory stage_memory
  functional_group
  # Timing: the GPU alone from here on.
  local any_bench=no st
  for st in bench128 bench512 bench4096 benchmax; do selected $st && any_bench=yes; done
  if [ $DRY = no ] && [ -x bigs ] && [ $any_bench = yes ]; then
    watch "$WORK/plan.log" 0 "$(( $(now) + $(cap 30) ))" bash -c \
      'for t in 128 512 4096; do ./bigs bench --plan --config large --seq $t --precision bf16; done'
    out "" "== bench (BiGS-large, bf16; the largest batches the memory plan fits: $(grep -o 'largest batch.*' \
      "$WORK/plan.log" | sed -E 's/.*at T ([0-9]+) .*: ([0-9]+).*/T \1: \2/' | paste -sd, - | sed 's/,/, /g'))"
  else
    out "" "== bench"
  fi
  stage bench128 bench bench128 128 64 10
  stage eager128 torch_peer eager128 eager 45 90
  stage bench512 bench bench512 512 16 10
  stage bench4096 bench bench4096 4096 4 5
  # The step the cost device's headline prediction is for: T = 128 at the
  # largest batch the memory plan fits (no PyTorch peer: it would not fit).
  BMAX=$(grep -m1 -oE 'at T 128 \(bf16\): [0-9]+' "$WORK/plan.log" 2> /dev/null | grep -oE '[0-9]+$' || true)
  BMAX=${BMAX:-734}
  stage benchmax bench benchmax 128 "$BMAX" 5
  stage lab stage_lab
  stage compile128 torch_peer compile128 compile 150 170
  table | outp
  local ok=yes
  for st in build memory suite memcheck racecheck demo; do
    grep -qE '^(ok|skipped)' "$WORK/stages/$st" 2> /dev/null || ok=no
  done
  [ $ok = yes ]
}

# Sourced (dev/test_gpu_check.sh), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
