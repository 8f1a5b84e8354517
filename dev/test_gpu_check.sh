#!/usr/bin/env bash
# Tests of dev/gpu_check.sh on a machine without a GPU (run by `make test`):
# the dry run's layout and output folder; the suite runner on a fake
# GoogleTest program whose tests fail, crash (SIGSEGV mid-suite), hang, or
# fail only when run after others, each of which must be named while the
# rest of the suite still runs; a signal mid-run; the refusal to start
# without nvcc or a GPU; the parsing of made-up GoogleTest, compute-sanitizer
# and bench logs; the sanitizer stages on a fake compute-sanitizer; the real
# build/test_gpu's output where it is built and no GPU is present. About 25 s.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_gpu_check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
check() {  # check WHAT COMMAND...: one named assertion
  local what=$1
  shift
  if "$@"; then echo "  ok   $what"; else echo "  FAIL $what"; fails=$((fails + 1)); fi
}
has() { grep -qF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }
only_two_files() { [ "$(ls -A "$1" | sort | paste -sd' ' -)" = "gpu_logs.tgz summary.txt" ]; }
# result DIR NAME: a test's status in the archived suite.results.
# alive PID: a process that still runs (a zombie, killed and not yet reaped
# by its new parent, does not count).
alive() { kill -0 "$1" 2> /dev/null && ! awk '{ exit $3 != "Z" }' "/proc/$1/stat" 2> /dev/null; }
result() { tar xzf "$1/gpu_logs.tgz" -O gpu_logs/suite.results 2> /dev/null | awk -F'\t' -v n="$2" '$1 == n { s = $2 } END { print s }'; }

# A fake GoogleTest program: the tests in FAKE_TESTS ("Suite.Name=behaviour"
# words, in order) behave as named: pass, fail, skip, crash (SIGSEGV), hang,
# poisoned (fails unless it is the only test selected). It honours
# --gtest_filter=POS[-NEG] and --gtest_list_tests as GoogleTest does, and
# prints GoogleTest's lines.
cat > "$tmp/fake_gtest" << 'EOF'
#!/usr/bin/env bash
filter='*' list=no
for a in "$@"; do
  case $a in
    --gtest_filter=*) filter=${a#--gtest_filter=} ;;
    --gtest_list_tests) list=yes ;;
  esac
done
echo $$ >> "$FAKE_PIDS"
any() {  # any NAME PATTERNS: NAME matches one of the ':'-separated globs
  local p
  IFS=: read -ra ps <<< "$2"
  for p in "${ps[@]}"; do [[ $1 == $p ]] && return 0; done
  return 1
}
pos=${filter%%-*} neg=
[[ $filter == *-* ]] && neg=${filter#*-}
[ -z "$pos" ] && pos='*'
sel=()
for t in $FAKE_TESTS; do
  n=${t%%=*}
  any "$n" "$pos" && ! any "$n" "$neg" && sel+=("$t")
done
if [ $list = yes ]; then
  last=
  for t in "${sel[@]}"; do
    n=${t%%=*}
    [ "${n%%.*}" != "$last" ] && last=${n%%.*} && echo "$last."
    echo "  ${n#*.}"
  done
  exit 0
fi
echo "Note: Google Test filter = $filter"
echo "[==========] Running ${#sel[@]} tests from 1 test suite."
failed=0
for t in "${sel[@]}"; do
  n=${t%%=*} how=${t#*=}
  echo "[ RUN      ] $n"
  echo "  dense out                       666 values, worst relative error 1.00e-07"
  [ "$how" = poisoned ] && [ ${#sel[@]} -eq 1 ] && how=pass
  case $how in
    pass) echo "[       OK ] $n (3 ms)" ;;
    skip) echo "test/test_gpu.cu:150: Skipped" && echo "no CUDA device" && echo "[  SKIPPED ] $n (0 ms)" ;;
    fail | poisoned)
      echo "test/test_gpu.cu:222: Failure"
      echo "Value of: all_close(\"dense dinp\", d_dx.get(), dx)"
      echo "  Actual: false (dense dinp: 3 of 666 values differ; worst at 7: got 1.5, want 2 (atol 1e-05, rtol 0.0001))"
      echo "Expected: true"
      echo "[  FAILED  ] $n (4 ms)"
      failed=$((failed + 1)) ;;
    crash) echo "  about to fault" && kill -SEGV $$ ;;
    hang) sleep 1000 ;;
  esac
done
echo "[==========] ${#sel[@]} tests from 1 test suite ran. (10 ms total)"
[ $failed -eq 0 ]
EOF
chmod +x "$tmp/fake_gtest"
export FAKE_PIDS="$tmp/fake_pids"

echo "== the dry run: the layout, and only the archive and the summary in the output folder"
bash dev/gpu_check.sh --dry-run "$tmp/dry" > "$tmp/dry.stdout" 2>&1
check "exit 0" test $? -eq 0
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/dry"
check "stdout is the summary" cmp -s "$tmp/dry.stdout" "$tmp/dry/summary.txt"
for s in build suite memcheck racecheck demo mpi bench128 eager128 bench512 bench4096 lab compile128; do
  check "table row $s says why it was skipped" grep -qE "^$s +skipped: dry run" "$tmp/dry/summary.txt"
done
check "bench table" has "$tmp/dry/summary.txt" "bigs, T 4096, batch 4"
check "the call to run it again" has "$tmp/dry/summary.txt" 'run command="BIGS_COMMIT='
check "the carry list" has "$tmp/dry/summary.txt" 'carry: ["build/googletest", "build/fixture.bin"]'
check "the archive holds the summary" bash -c "tar tzf '$tmp/dry/gpu_logs.tgz' | grep -qx gpu_logs/summary.txt"
bash dev/gpu_check.sh --dry-run "$tmp/dry2" cafe123 > /dev/null 2>&1
check "the commit from the argument" has "$tmp/dry2/summary.txt" "BIGS_COMMIT=cafe123 bash"
BIGS_COMMIT=beef456 bash dev/gpu_check.sh --dry-run "$tmp/dry3" > /dev/null 2>&1
check "the commit from BIGS_COMMIT" has "$tmp/dry3/summary.txt" "commit beef456"

echo "== a suite with a failing, a crashing, a hanging and a poisoned test"
export FAKE_TESTS="A.Pass=pass A.Fail=fail A.Crash=crash A.AfterCrash=pass A.Hang=hang A.Poisoned=poisoned
  B.Skip=skip B.Last=pass"
start=$(date +%s)
GPU_CHECK_SUITE="$tmp/fake_gtest" GPU_CHECK_TEST_IDLE=2 bash dev/gpu_check.sh --dry-run "$tmp/fake" > "$tmp/fake.stdout" 2>&1
rc=$?
sum="$tmp/fake/summary.txt"
check "exit 1 (the suite failed)" test $rc -eq 1
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/fake"
check "the counts" has "$sum" "suite: 8 tests, 3 round(s)"
check "the failing test named, with its failure" grep -qA4 "FAILED  A.Fail (4 ms)" "$sum"
check "its first failure lines" has "$sum" "3 of 666 values differ"
check "the crashing test named, with its signal" has "$sum" "CRASHED A.Crash (exit 139, signal SEGV; the rest ran without it)"
check "the crashed test's last lines" has "$sum" "about to fault"
check "the hanging test named" has "$sum" "HUNG    A.Hang (nothing printed for 2 s"
check "no passing per-tensor line on stdout" lacks "$sum" "worst relative error"
check "... they are in the archive" bash -c "tar xzf '$tmp/fake/gpu_logs.tgz' -O gpu_logs/suite.log | grep -q 'worst relative error'"
check "the test after the crash ran, and passed" test "$(result "$tmp/fake" A.AfterCrash)" = OK
check "the poisoned test after the hang ran (and failed there)" test "$(result "$tmp/fake" A.Poisoned)" = FAILED
check "the last test ran, and passed" test "$(result "$tmp/fake" B.Last)" = OK
check "the skipped test: SKIPPED" test "$(result "$tmp/fake" B.Skip)" = SKIPPED
check "the crash recorded" test "$(result "$tmp/fake" A.Crash)" = CRASHED
check "the hang recorded" test "$(result "$tmp/fake" A.Hang)" = HUNG
check "rerun alone: the failing test fails alone" has "$sum" "CUDA_LAUNCH_BLOCKING=1: A.Fail fails alone"
check "rerun alone: the crash crashes alone" has "$sum" "A.Crash crashes alone (exit 139, signal SEGV)"
check "rerun alone: the poisoned test passes alone" has "$sum" "A.Poisoned passes alone"
check "at most three reruns" test "$(grep -c 'alone, CUDA_LAUNCH_BLOCKING=1' "$sum")" -eq 3
check "the suite row of the table" grep -qE "^suite +FAILED: 1 CRASHED 2 FAILED 1 HUNG 1 SKIPPED" "$sum"
check "it took seconds, not the hang's 1000" test $(( $(date +%s) - start )) -lt 30
leftover=0
while read -r p; do alive "$p" && leftover=1 && ps -o pid,stat,args -p "$p"; done < "$FAKE_PIDS"
check "no fake test process left running" test $leftover -eq 0

echo "== a suite that crashes before any test, and one where no test matches"
export FAKE_TESTS="A.Pass=pass"
printf '#!/bin/sh\ncase "$*" in *list*) exec %s "$@";; esac\necho "error while loading shared libraries: libcufft.so.12"; exit 127\n' \
  "$tmp/fake_gtest" > "$tmp/broken_gtest"
chmod +x "$tmp/broken_gtest"
GPU_CHECK_SUITE="$tmp/broken_gtest" bash dev/gpu_check.sh --dry-run "$tmp/broken" > /dev/null 2>&1
check "named as a start-up failure" has "$tmp/broken/summary.txt" "suite: exit 127 before any test started"
check "with the program's words" has "$tmp/broken/summary.txt" "libcufft.so.12"
check "the test NOT-RUN" test "$(result "$tmp/broken" A.Pass)" = NOT-RUN

echo "== a signal mid-run: the archive and the summary still come back"
export FAKE_TESTS="A.Pass=pass A.Hang=hang"
: > "$FAKE_PIDS"
GPU_CHECK_SUITE="$tmp/fake_gtest" GPU_CHECK_TEST_IDLE=60 bash dev/gpu_check.sh --dry-run "$tmp/sig" > /dev/null 2>&1 &
pid=$!
sleep 2  # in A.Hang by then
kill -TERM $pid
wait $pid
check "exit 130" test $? -eq 130
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/sig"
check "the summary says so" has "$tmp/sig/summary.txt" "INTERRUPTED by SIGTERM"
check "the table still printed" has "$tmp/sig/summary.txt" "BiGS-large, bf16"
check "the archive holds the suite's log" bash -c "tar tzf '$tmp/sig/gpu_logs.tgz' | grep -qx gpu_logs/suite.log"
# The kill reaches the fake test at once; on a loaded machine it may take a
# moment to be gone, so wait for that (up to 10 s) before judging.
for _ in $(seq 50); do
  leftover=0
  while read -r p; do alive "$p" && leftover=1; done < "$FAKE_PIDS"
  [ $leftover -eq 0 ] && break
  sleep 0.2
done
while read -r p; do alive "$p" && ps -o pid,stat,args -p "$p"; done < "$FAKE_PIDS"
check "the hanging test was killed" test $leftover -eq 0

echo "== no nvcc, no GPU: a loud refusal, not a CPU-only build"
NVCC=/nonexistent/nvcc CUDA_HOME=/nonexistent bash dev/gpu_check.sh "$tmp/nonvcc" > /dev/null 2>&1
check "exit 2 without nvcc" test $? -eq 2
check "says so" has "$tmp/nonvcc/summary.txt" "FATAL: no nvcc"
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/nonvcc"
if ! nvidia-smi > /dev/null 2>&1 && { command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  PATH=/usr/bin:/bin bash dev/gpu_check.sh "$tmp/nogpu" > /dev/null 2>&1
  check "exit 2 without a GPU" test $? -eq 2
  check "nvcc found in /usr/local/cuda/bin" has "$tmp/nogpu/summary.txt" "nvcc was not on the PATH: using /usr/local/cuda/bin"
  check "says so" has "$tmp/nogpu/summary.txt" "FATAL: no GPU visible"
fi

echo "== parsing made-up logs"
# shellcheck source=dev/gpu_check.sh
source dev/gpu_check.sh
cat > "$tmp/g.log" << 'EOF'
[ RUN      ] Gpu.Dense
  dense out                       666 values, worst relative error 1.00e-07
test/test_gpu.cu:222: Failure
Expected: true
[  FAILED  ] Gpu.Dense (4 ms)
[ RUN      ] P/Param.Case/0
[       OK ] P/Param.Case/0, where GetParam() = 3 (1 ms)
[ RUN      ] Gpu.SsmConv
EOF
check "ended tests, parameterised too" test "$(gtest_ended "$tmp/g.log" | cut -f1,2 | paste -sd' ' -)" = \
  "Gpu.Dense	FAILED P/Param.Case/0	OK"
check "the unfinished test" test "$(gtest_unfinished "$tmp/g.log")" = Gpu.SsmConv
check "failure lines skip the passing comparisons" test "$(failure_lines "$tmp/g.log" Gpu.Dense 5 | paste -sd'|' -)" = \
  "test/test_gpu.cu:222: Failure|Expected: true"
head -5 "$tmp/g.log" > "$tmp/g2.log"
check "nothing unfinished in a complete log" test -z "$(gtest_unfinished "$tmp/g2.log")"
printf '========= ERROR SUMMARY: 3 errors\n' > "$tmp/m1.log"
printf '========= Invalid __global__ write\n========= ERROR SUMMARY: 2 errors\n' > "$tmp/m2.log"
printf '========= RACECHECK SUMMARY: 5 hazards displayed (4 errors, 1 warning)\n========= ERROR SUMMARY: 5 errors\n' > "$tmp/r.log"
check "memcheck errors summed over the runs" test "$(sanitizer_errors "$tmp/m1.log" "$tmp/m2.log")" = 5
check "racecheck errors from its own summary" test "$(sanitizer_errors "$tmp/r.log")" = 4
check "no summary, no errors" test "$(sanitizer_errors "$tmp/g.log")" = 0
cat > "$tmp/b.log" << 'EOF'
bench: cuda bf16 T 128  batch 64  10 steps  45.67 ms/step  179409 tokens/s  101.2 TFLOP/s  MFU 10.23% (of 989 TFLOP/s)
bench: predicted on an H200 40.10 ms/step  204300 tokens/s  MFU 11.60% (of 989 TFLOP/s; cost model)
EOF
check "tokens/s" test "$(tps "$tmp/b.log")" = 179409
check "MFU" test "$(mfu "$tmp/b.log")" = 10.23%
check "ms/step" test "$(ms_step "$tmp/b.log")" = 45.67
check "predicted step time" test "$(predicted "$tmp/b.log")" = 40.10
head -1 "$tmp/b.log" > "$tmp/b2.log"
check "no prediction: -" test "$(predicted "$tmp/b2.log")" = -
check "no log: -" test "$(tps "$tmp/none.log")" = -
check "ratio" test "$(ratio 300 200)" = 1.50x
check "ratio without a peer" test "$(ratio 300 "")" = -

# The real GoogleTest's output, where the GPU suite is built but no GPU is
# present: every test is named SKIPPED, and why.
if [ -x build/test_gpu ] && ! nvidia-smi > /dev/null 2>&1; then
  echo "== build/test_gpu without a GPU, through the suite runner"
  WORKROOT="$tmp/real" WORK="$tmp/real/gpu_logs" SUITE=build/test_gpu T0=$(date +%s)
  mkdir -p "$WORK/stages" "$WORKROOT/pids"
  suite_run real 'GpuKernel.Dense:GpuModel.*' 30 $(( $(now) + 60 )) build/test_gpu > "$tmp/real.txt" 2>&1
  n=$(grep -cE '^(GpuKernel\.Dense|GpuModel\.[A-Za-z0-9]+)'$'\t''SKIPPED' "$WORK/real.results")
  check "every selected test SKIPPED ($n)" test "$n" -eq $(( 1 + $(grep -c '^TEST(GpuModel, ' test/test_gpu.cu) ))
  check "and said so" has "$tmp/real.txt" "every test SKIPPED: the CUDA runtime sees no device"
  check "with the runtime's reason" has "$tmp/real.txt" "no CUDA device"
fi

echo "== the sanitizer stages on a fake compute-sanitizer"
# It runs the program, then reports FAKE_ERRORS errors as compute-sanitizer
# does (memcheck's ERROR SUMMARY, racecheck's RACECHECK SUMMARY) and records
# its arguments; with FAKE_NO_REGEX it refuses the --kernel-regex its --help
# lists (a syntax this version does not take).
cat > "$tmp/fake_cs" << 'EOF'
#!/usr/bin/env bash
[ "$1" = --help ] && { echo "  --kernel-regex arg"; exit 0; }
echo "$*" >> "$FAKE_CS_ARGS"
tool=memcheck
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --kernel-regex) [ -n "${FAKE_NO_REGEX:-}" ] && { echo "Unrecognized option: --kernel-regex"; exit 1; }; shift 2 ;;
    --error-exitcode) shift 2 ;;
    *) break ;;
  esac
done
echo "========= COMPUTE-SANITIZER"
"$@"
for i in $(seq "$FAKE_ERRORS"); do echo "========= Invalid __global__ write of size 4 bytes (report $i)"; done
if [ "$tool" = racecheck ]; then
  echo "========= RACECHECK SUMMARY: $FAKE_ERRORS hazards displayed ($FAKE_ERRORS errors, 0 warnings)"
else
  echo "========= ERROR SUMMARY: $FAKE_ERRORS errors"
fi
[ "$FAKE_ERRORS" -eq 0 ] || exit 99
EOF
chmod +x "$tmp/fake_cs"
export FAKE_TESTS="Gpu.Dense=pass Gpu.LayerNorm=pass GpuModel.Big=pass" FAKE_CS_ARGS="$tmp/cs_args"
WORKROOT="$tmp/san" WORK="$tmp/san/gpu_logs" SUITE="$tmp/fake_gtest" CS="$tmp/fake_cs" DRY=no T0=$(date +%s)
mkdir -p "$WORK/stages" "$WORKROOT/pids"
FAKE_ERRORS=2 sanitize memcheck memcheck 'Gpu.*' > "$tmp/mc.txt" 2>&1
check "memcheck: the error count" has "$tmp/mc.txt" "memcheck: 2 error(s) found by compute-sanitizer memcheck"
check "memcheck: the first reports" has "$tmp/mc.txt" "Invalid __global__ write of size 4 bytes (report 1)"
check "memcheck: its filter ran the kernel tests only" has "$tmp/mc.txt" "memcheck: 2 tests"
check "memcheck: every kernel checked" lacks "$FAKE_CS_ARGS" "--kernel-regex"
check "memcheck: the table row" grep -q "^FOUND: 2 error" "$WORK/stages/memcheck"
: > "$FAKE_CS_ARGS"
FAKE_ERRORS=0 sanitize racecheck racecheck 'Gpu.Dense' > "$tmp/rc.txt" 2>&1
check "racecheck: clean" grep -q "^ok (0 errors)" "$WORK/stages/racecheck"
check "racecheck: our kernels only" has "$FAKE_CS_ARGS" "--tool racecheck --kernel-regex kns=_kernel"
FAKE_NO_REGEX=1 FAKE_ERRORS=3 sanitize racecheck racecheck 'Gpu.Dense' > "$tmp/rc2.txt" 2>&1
check "racecheck: without --kernel-regex, again on every kernel" has "$tmp/rc2.txt" "again on every kernel"
check "racecheck: the errors of that run" has "$tmp/rc2.txt" "racecheck: 3 error(s)"

echo "== the sanitizers' test names exist in test/test_gpu.cu"
for t in ${RACECHECK_FILTER//:/ }; do
  check "$t" grep -qE "^TEST_F\(${t%%.*}, ${t#*.}\)" test/test_gpu.cu
done
check "memcheck's $MEMCHECK_FILTER matches kernel tests" grep -qE "^TEST_F\\(${MEMCHECK_FILTER%%.*}, " test/test_gpu.cu

echo
[ $fails -eq 0 ] && echo "test_gpu_check: all passed" || echo "test_gpu_check: $fails FAILED"
[ $fails -eq 0 ]
