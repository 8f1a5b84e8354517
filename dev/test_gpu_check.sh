#!/usr/bin/env bash
# Tests of dev/gpu_check.sh on a machine without a GPU (run by `make test`):
# the dry run's layout and output folder; the suite runner on a fake
# GoogleTest program whose tests fail, crash (SIGSEGV mid-suite), hang, or
# fail only when run after others, each of which must be named while the
# rest of the suite still runs; a signal mid-run; the refusal to start
# without nvcc or a GPU; the parsing of made-up GoogleTest, compute-sanitizer
# and bench logs; the sanitizer stages on a fake compute-sanitizer (its
# kernel filter's spelling, a refused device); the memory test alone with
# eager module loading; the suites' OpenMP settings; a second call's stage
# selection and both device calls printed; the mpi stage's NCCL link check;
# the refusal to start without make or g++; the real build/test_gpu's output
# where it is built and no GPU is present. About 30 s.
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
# poisoned (fails unless it is the only test selected), eager (passes only
# when it is the only test selected and CUDA_MODULE_LOADING=EAGER). It
# records its OpenMP and module-loading settings in FAKE_ENV. It honours
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
[ $list = no ] && echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-} OMP_NUM_THREADS=${OMP_NUM_THREADS:-}" \
  "CUDA_MODULE_LOADING=${CUDA_MODULE_LOADING:-} $filter" >> "${FAKE_ENV:-/dev/null}"
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
  if [ "$how" = eager ]; then
    if [ "${CUDA_MODULE_LOADING:-}" = EAGER ] && [ ${#sel[@]} -eq 1 ]; then how=pass; else how=fail; fi
  fi
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
export FAKE_PIDS="$tmp/fake_pids" FAKE_ENV="$tmp/fake_env"

echo "== the dry run: the layout, and only the archive and the summary in the output folder"
bash dev/gpu_check.sh --dry-run "$tmp/dry" > "$tmp/dry.stdout" 2>&1
check "exit 0" test $? -eq 0
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/dry"
check "stdout is the summary" cmp -s "$tmp/dry.stdout" "$tmp/dry/summary.txt"
for s in build memory suite memcheck racecheck demo mpi bench128 eager128 bench512 bench4096 lab compile128; do
  check "table row $s says why it was skipped" grep -qE "^$s +skipped: dry run" "$tmp/dry/summary.txt"
done
check "bench table" has "$tmp/dry/summary.txt" "bigs, T 4096, batch 4"
check "the call to run it again" has "$tmp/dry/summary.txt" 'run command="BIGS_COMMIT='
# The first call, the whole check, and the second, shorter one: both fit in
# a task's 900 s with two starts of 120 s and 30 s idle after each.
check "the first call: the whole check, timeout_s=330" grep -qE \
  '^  run command="BIGS_COMMIT=[^ ]+ bash dev/gpu_check.sh \$OUT" carry=\["build/googletest", "build/fixture.bin"\] timeout_s=330$' \
  "$tmp/dry/summary.txt"
check "the second call: --quick (nothing failed), timeout_s=240" grep -qE \
  '^  run command="BIGS_COMMIT=[^ ]+ bash dev/gpu_check.sh --quick \$OUT" carry=\["build/googletest", "build/fixture.bin"\] timeout_s=240$' \
  "$tmp/dry/summary.txt"
check "both calls fit in 15 minutes" test $(( 2 * 120 + 2 * 30 + $(grep -oE 'timeout_s=[0-9]+' "$tmp/dry/summary.txt" |
  awk -F= '{ t += $2 } END { print t }') )) -le 900
check "the build tools named" grep -qE '^build tools: make ' "$tmp/dry/summary.txt"
check "the carry list" has "$tmp/dry/summary.txt" 'carry: ["build/googletest", "build/fixture.bin"]'
check "the archive holds the summary" bash -c "tar tzf '$tmp/dry/gpu_logs.tgz' | grep -qx gpu_logs/summary.txt"
bash dev/gpu_check.sh --dry-run "$tmp/dry2" cafe123 > /dev/null 2>&1
check "the commit from the argument" has "$tmp/dry2/summary.txt" "BIGS_COMMIT=cafe123 bash"
BIGS_COMMIT=beef456 bash dev/gpu_check.sh --dry-run "$tmp/dry3" > /dev/null 2>&1
check "the commit from BIGS_COMMIT" has "$tmp/dry3/summary.txt" "commit beef456"

echo "== a suite with a failing, a crashing, a hanging and a poisoned test"
export FAKE_TESTS="A.Pass=pass A.Fail=fail A.Crash=crash A.AfterCrash=pass A.Hang=hang A.Poisoned=poisoned
  B.Skip=skip B.Last=pass GpuModel.MemoryDoesNotGrowAfterStartup=eager"
: > "$FAKE_ENV"
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
check "the memory test alone, with eager module loading: ok" grep -qE "^memory +ok \(alone, CUDA_MODULE_LOADING=EAGER\)" "$sum"
check "... and not in the suite beside the others" test -z "$(result "$tmp/fake" GpuModel.MemoryDoesNotGrowAfterStartup)"
check "... and before them" test "$(head -1 "$FAKE_ENV" | awk '{ print $NF }')" = \
  GpuModel.MemoryDoesNotGrowAfterStartup
threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
check "the suite's OpenMP threads sleep and take half the cores ($threads)" \
  test "$(grep -c "^OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$threads " "$FAKE_ENV")" -eq "$(wc -l < "$FAKE_ENV")"
check "the second call reruns the suite alone, timeout_s=240" grep -qE \
  '^  run command="BIGS_COMMIT=[^ ]+ bash dev/gpu_check.sh --stages=suite \$OUT" carry=.* timeout_s=240$' "$sum"
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

echo "== the second call: --stages takes only those, in the shorter budget"
export FAKE_TESTS="A.Pass=pass A.Fail=fail GpuModel.MemoryDoesNotGrowAfterStartup=eager"
GPU_CHECK_SUITE="$tmp/fake_gtest" bash dev/gpu_check.sh --dry-run --stages=suite "$tmp/sel" > /dev/null 2>&1
check "exit 1 (the suite failed)" test $? -eq 1
sum="$tmp/sel/summary.txt"
check "the selection and its budget said" has "$sum" "== stages: build suite (the rest not selected; the second call's budget: ends by 210 s)"
check "the suite ran" grep -qE "^suite +FAILED: 1 FAILED" "$sum"
for s in memory memcheck racecheck demo mpi bench128 eager128 lab compile128; do
  check "$s not selected" grep -qE "^$s +skipped: not selected \(--stages=build,suite\)" "$sum"
done
check "both calls printed again" test "$(grep -cE '^  run command=.* timeout_s=(330|240)$' "$sum")" -eq 2
check "the second call: the suite again" grep -qE 'dev/gpu_check.sh --stages=suite \$OUT" .* timeout_s=240$' "$sum"
bash dev/gpu_check.sh --dry-run --stages=mpi,bench512 "$tmp/sel2" > /dev/null 2>&1
check "mpi brings the demo, whose shards it reads" has "$tmp/sel2/summary.txt" "== stages: build mpi bench512 demo "
bash dev/gpu_check.sh --dry-run --stages=suite,nosuch "$tmp/sel3" > "$tmp/sel3.txt" 2>&1
check "an unknown stage refused (exit 2)" test $? -eq 2
check "... and named" has "$tmp/sel3.txt" "no stage 'nosuch'"
check "--quick: the functional checks" bash -c "bash dev/gpu_check.sh --dry-run --quick '$tmp/quick' > /dev/null 2>&1;
  grep -qF '== stages: build memory suite memcheck racecheck demo mpi (' '$tmp/quick/summary.txt'"

echo "== no make, no g++: a clear refusal before the build"
mkdir -p "$tmp/nomake"
for d in /usr/local/bin /usr/bin /bin; do
  for f in "$d"/*; do
    n=${f##*/}
    case $n in make | gmake | g++ | g++-* | *-g++ | *-g++-*) continue ;; esac
    [ -e "$tmp/nomake/$n" ] || ln -s "$f" "$tmp/nomake/$n"
  done
done
printf '#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n' > "$tmp/nvcc"
chmod +x "$tmp/nvcc"
PATH="$tmp/nomake" NVCC="$tmp/nvcc" CUDA_HOME=/nonexistent bash dev/gpu_check.sh "$tmp/nomk" > /dev/null 2>&1
check "exit 2 without make and g++" test $? -eq 2
check "says so" has "$tmp/nomk/summary.txt" "FATAL: no make and no g++ on the PATH"
check "only gpu_logs.tgz and summary.txt" only_two_files "$tmp/nomk"
CXX=/nonexistent/g++ NVCC="$tmp/nvcc" bash dev/gpu_check.sh "$tmp/nogxx" > /dev/null 2>&1
check "exit 2 without the host compiler" test $? -eq 2
check "says so" has "$tmp/nogxx/summary.txt" "FATAL: no /nonexistent/g++ on the PATH"

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
# its arguments. Its --help lists one kernel filter, FAKE_CS_FILTER (default
# --kernel-regex), and --kernel-name-exclude, and it refuses any other
# filter option; with FAKE_NO_REGEX it refuses the one its --help lists too
# (a syntax this version does not take). FAKE_CS_REFUSE=device: it refuses
# the device as on a gVisor machine (the program then fails at its first
# allocation, error 999); =early: it stops before the program starts.
cat > "$tmp/fake_cs" << 'EOF'
#!/usr/bin/env bash
listed=${FAKE_CS_FILTER:---kernel-regex}
[ "$1" = --help ] && { printf '  %s arg\n  --kernel-name-exclude arg\n  --tool arg\n' "$listed"; exit 0; }
echo "$*" >> "$FAKE_CS_ARGS"
tool=memcheck
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --kernel-name | --kernel-regex | --filter)
      { [ "$1" != "$listed" ] || [ -n "${FAKE_NO_REGEX:-}" ]; } && { echo "Unrecognized option: $1"; exit 1; }
      shift 2 ;;
    --error-exitcode) shift 2 ;;
    *) break ;;
  esac
done
echo "========= COMPUTE-SANITIZER"
case ${FAKE_CS_REFUSE:-} in
  device)
    echo "========= Error: Device not supported. Please refer to the \"Supported Devices\" section of the documentation"
    export FAKE_TESTS="${FAKE_TESTS//=pass/=fail}"
    "$@"
    echo "========= Program hit cudaErrorUnknown (error 999) due to \"unknown error\" on CUDA API call to cudaMalloc."
    echo "========= ERROR SUMMARY: 3 errors"
    exit 99 ;;
  early)
    echo "========= Error: Unable to find injection library"
    exit 1 ;;
esac
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
: > "$FAKE_CS_ARGS"
FAKE_CS_FILTER=--kernel-name FAKE_ERRORS=0 sanitize racecheck racecheck 'Gpu.Dense' > "$tmp/rc3.txt" 2>&1
check "racecheck: --kernel-name where --help lists it" has "$FAKE_CS_ARGS" "--tool racecheck --kernel-name kns=_kernel"
check "... at the first try" test "$(wc -l < "$FAKE_CS_ARGS")" -eq 1
check "... clean" grep -q "^ok (0 errors)" "$WORK/stages/racecheck"
: > "$FAKE_CS_ARGS"
FAKE_CS_FILTER=--filter FAKE_ERRORS=0 sanitize racecheck racecheck 'Gpu.Dense' > "$tmp/rc4.txt" 2>&1
check "racecheck: --filter where --help lists only that" has "$FAKE_CS_ARGS" "--tool racecheck --filter kns=_kernel"
: > "$FAKE_CS_ARGS"
FAKE_CS_FILTER=--kernel-names FAKE_ERRORS=0 sanitize racecheck racecheck 'Gpu.Dense' > "$tmp/rc5.txt" 2>&1
check "racecheck: no filter where --help lists none (--kernel-name-exclude is none)" \
  has "$tmp/rc5.txt" "lists no kernel filter"
check "... every kernel checked" test "$(grep -c -- '--kernel' "$FAKE_CS_ARGS")" -eq 0

echo "== a compute-sanitizer that cannot check: a skip with its reason, not a finding"
: > "$FAKE_CS_ARGS"
FAKE_CS_REFUSE=device FAKE_ERRORS=0 sanitize memcheck memcheck 'Gpu.*' > "$tmp/cs_dev.txt" 2>&1
check "the device refused: skipped" \
  grep -q "^skipped: compute-sanitizer memcheck could not check here: Error: Device not supported" "$WORK/stages/memcheck"
check "... and said so" has "$tmp/cs_dev.txt" "memcheck: skipped: compute-sanitizer memcheck could not check here"
check "... asked once" test "$(grep -c -- '--tool memcheck' "$FAKE_CS_ARGS")" -eq 1
FAKE_CS_REFUSE=device FAKE_ERRORS=0 sanitize racecheck racecheck 'Gpu.Dense' > /dev/null 2>&1
check "racecheck too" \
  grep -q "^skipped: compute-sanitizer racecheck could not check here: Error: Device not supported" "$WORK/stages/racecheck"
FAKE_CS_REFUSE=early FAKE_ERRORS=0 sanitize memcheck memcheck 'Gpu.*' > "$tmp/cs_early.txt" 2>&1
check "its own error before any test: skipped with it" \
  grep -q "^skipped: compute-sanitizer memcheck could not check here: Error: Unable to find injection library" \
  "$WORK/stages/memcheck"
FAKE_ERRORS=1 sanitize memcheck memcheck 'Gpu.*' > /dev/null 2>&1
check "a real finding is still FOUND" grep -q "^FOUND: 1 error" "$WORK/stages/memcheck"

echo "== the mpi stage needs the NCCL build"
mkdir -p "$tmp/mpibin"
printf '#!/bin/sh\necho "mpirun (fake)"; exit 1\n' > "$tmp/mpibin/mpirun"
printf '#!/bin/sh\nfor l in $FAKE_LDD; do echo "\t$l => /lib/$l"; done\n' > "$tmp/mpibin/ldd"
printf '#!/bin/sh\nexit 0\n' > "$tmp/fake_bigs"
chmod +x "$tmp/mpibin/mpirun" "$tmp/mpibin/ldd" "$tmp/fake_bigs"
BIGS="$tmp/fake_bigs"
PATH="$tmp/mpibin:$PATH" FAKE_LDD="libmpi.so.40 libcudart.so.13" stage_mpi > "$tmp/mpi1.txt" 2>&1
check "MPI without NCCL: not the NCCL build" \
  grep -q "^skipped: bigs is not the NCCL build (ldd $BIGS: libmpi but no libnccl" "$WORK/stages/mpi"
PATH="$tmp/mpibin:$PATH" FAKE_LDD="libcudart.so.13" stage_mpi > /dev/null 2>&1
check "neither: not the NCCL build" grep -q "^skipped: bigs is not the NCCL build" "$WORK/stages/mpi"
PATH="$tmp/mpibin:$PATH" FAKE_LDD="libmpi.so.40 libnccl.so.2" stage_mpi > "$tmp/mpi3.txt" 2>&1
check "MPI and NCCL: past the link check ($(cut -f1 "$WORK/stages/mpi"))" \
  bash -c "! grep -q 'not the NCCL build' '$WORK/stages/mpi'"

echo "== the sanitizers' test names exist in test/test_gpu.cu"
for t in ${RACECHECK_FILTER//:/ }; do
  check "$t" grep -qE "^TEST_F\(${t%%.*}, ${t#*.}\)" test/test_gpu.cu
done
check "memcheck's $MEMCHECK_FILTER matches kernel tests" grep -qE "^TEST_F\\(${MEMCHECK_FILTER%%.*}, " test/test_gpu.cu

echo
[ $fails -eq 0 ] && echo "test_gpu_check: all passed" || echo "test_gpu_check: $fails FAILED"
[ $fails -eq 0 ]
