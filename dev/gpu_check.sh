#!/usr/bin/env bash
# dev/gpu_check.sh [LOGDIR]: the one prepared script for a machine with a GPU.
# Builds for sm_90, shows the GPU, runs the GPU suite (every kernel against
# its CPU twin in fp32 and bf16, the whole model, 50-step training runs
# against the CPU's, checkpoints across devices), then `bigs bench` for
# BiGS-large at T = 128, 512 and 4096 in bf16, and the PyTorch peer
# (dev/bench_torch.py: dev/reference.py on the GPU, eager and torch.compile,
# bf16 autocast) at T = 128 and 512, and ends with a table of tokens/s, MFU
# and our ratio to PyTorch. Exit status 0 only when build and tests passed.
# Full logs go to LOGDIR (default build/gpu_logs). Installs nothing; every
# stage has a timeout and a start deadline so the whole run stays under 8
# minutes (later stages are skipped, and say so, when time runs short).
set -u
cd "$(dirname "$0")/.."
LOGDIR=${1:-build/gpu_logs}
mkdir -p "$LOGDIR" build
T0=$(date +%s)
NVCC=${NVCC:-nvcc}
PY=${PYTHON:-python3}
elapsed() { echo $(( $(date +%s) - T0 )); }
# time_left SECONDS: true when the stage may still start (it must end by 470 s).
time_left() { [ $(( $(elapsed) + $1 )) -lt 470 ]; }

echo "== GPU"
nvidia-smi 2>&1 | tee "$LOGDIR/nvidia-smi.txt" | head -20
"$NVCC" --version | tail -2
git log -1 --format="commit %h %cd" --date=short 2>/dev/null | tee "$LOGDIR/commit.txt"

# GoogleTest: the system's, else built here from build/googletest (the
# source `make gtest-src` copies; the device call carries it).
GTEST_ARGS=()
if ! echo 'int main() {}' | g++ -x c++ - -lgtest -lgtest_main -lpthread -o /dev/null 2> /dev/null; then
  if [ -d build/googletest/src ]; then
    echo "== GoogleTest from build/googletest"
    mkdir -p build/gtest
    for f in gtest-all gtest_main; do
      g++ -O2 -std=c++17 -isystem build/googletest/include -Ibuild/googletest -c build/googletest/src/$f.cc \
        -o build/gtest/$f.o || break
    done
    ar rcs build/gtest/libgtest.a build/gtest/gtest-all.o && ar rcs build/gtest/libgtest_main.a build/gtest/gtest_main.o
    GTEST_ARGS=("GTEST_NVCC=-isystem build/googletest/include -Lbuild/gtest -lgtest_main -lgtest -lpthread")
  else
    echo "no GoogleTest here and no build/googletest: run \`make gtest-src\` and carry build/googletest"
  fi
fi

echo "== build for sm_90 (log: $LOGDIR/build.log)"
# -k: the binaries and the GPU suite are judged apart, so that a suite that
# does not build still leaves bench, the PyTorch peer and the demo to run.
rm -f bigs build/test_gpu
make -k -j16 CUDA_ARCH=sm_90 "${GTEST_ARGS[@]}" all build/test_gpu > "$LOGDIR/build.log" 2>&1
MAKE_RC=$?
BUILD_RC=0
[ -x bigs ] && [ -x tokenizer ] && [ -x data_prep ] || BUILD_RC=1
SUITE_BUILT=no
[ -x build/test_gpu ] && SUITE_BUILT=yes
echo "make exit $MAKE_RC after $(elapsed) s; binaries $([ $BUILD_RC = 0 ] && echo built || echo MISSING); GPU suite built: $SUITE_BUILT"
[ $MAKE_RC -ne 0 ] && grep -E "error|Error" "$LOGDIR/build.log" | head -20

TEST_RC=skipped
[ $SUITE_BUILT = no ] && TEST_RC=not-built
if [ $SUITE_BUILT = yes ]; then
  echo "== GPU suite (log: $LOGDIR/test_gpu.log)"
  timeout 150 ./build/test_gpu --gtest_output="xml:$LOGDIR/test_gpu.xml" > "$LOGDIR/test_gpu.log" 2>&1
  TEST_RC=$?
  # The comparisons (worst errors), failures, the loss tables.
  grep -E "^\[ *(OK|FAILED) *\] [A-Za-z]|worst|normwise|Failure|differ|Expected|step|^ +[0-9]+ " \
    "$LOGDIR/test_gpu.log" | head -150
  echo "GPU suite exit $TEST_RC after $(elapsed) s"
  # On a GPU machine a skipped test means the CUDA runtime sees no device
  # (say, a driver older than the toolkit): that is a failure here.
  if [ "$TEST_RC" = 0 ] && grep -qE "^\[ +SKIPPED +\] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(" "$LOGDIR/test_gpu.log"; then
    grep -m1 -A1 "Skipped" "$LOGDIR/test_gpu.log"
    echo "GPU tests were skipped on the GPU machine: the CUDA runtime sees no device (driver vs toolkit? see nvidia-smi)"
    TEST_RC=skipped-on-gpu
  fi
fi

# A kernel that faults poisons the CUDA context, and every later test then
# fails too. So each failed test runs again alone, with synchronous launches
# (CUDA_LAUNCH_BLOCKING=1) so that a fault is reported at its own launch.
RERUN=""
if [ "$TEST_RC" != 0 ] && [ "$TEST_RC" != skipped ] && [ "$TEST_RC" != skipped-on-gpu ] && [ "$TEST_RC" != not-built ]; then
  for t in $(grep -E "^\[ +FAILED +\] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(" "$LOGDIR/test_gpu.log" | awk '{print $4}'); do
    time_left 40 || { RERUN="$RERUN $t:not-rerun(time)"; continue; }
    CUDA_LAUNCH_BLOCKING=1 timeout 30 ./build/test_gpu --gtest_filter="$t" > "$LOGDIR/rerun_$t.log" 2>&1
    r=$?
    RERUN="$RERUN $t:$([ $r -eq 0 ] && echo passes-alone || echo "fails-alone($r)")"
    grep -E "Failure|differ|error|Error" "$LOGDIR/rerun_$t.log" | head -5
  done
fi

# bench NAME TIMEOUT ARGS...: one `bigs bench` run into $LOGDIR/bench_NAME.log.
bench() {
  local name=$1 t=$2
  shift 2
  if ! time_left "$t"; then echo "bench $name: skipped (time)"; return; fi
  timeout "$t" ./bigs bench --device cuda "$@" > "$LOGDIR/bench_$name.log" 2>&1
  echo "bench $name: exit $? after $(elapsed) s"
  grep -E "^bench:|GPU memory plan|bigs bench:|rror" "$LOGDIR/bench_$name.log"
}
if [ $BUILD_RC -eq 0 ]; then
  echo "== bench, BiGS-large (logs: $LOGDIR/bench_*.log)"
  for T in 128 512 4096; do ./bigs bench --plan --config large --seq $T --precision bf16; done |
    tee "$LOGDIR/plan.log" | grep largest
  bench t128 60 --config large --seq 128 --batch 64 --steps 10 --precision bf16
  bench t512 60 --config large --seq 512 --batch 16 --steps 10 --precision bf16
  bench t4096 70 --config large --seq 4096 --batch 4 --steps 5 --precision bf16
  bench t128fp32 45 --config large --seq 128 --batch 16 --steps 5 --precision fp32
fi

# The PyTorch peer, same model, same step, same FLOP count.
torch_run() {
  local name=$1 t=$2
  shift 2
  if ! time_left "$t"; then echo "torch $name: skipped (time)"; return; fi
  timeout "$t" "$PY" dev/bench_torch.py --device cuda "$@" > "$LOGDIR/torch_$name.log" 2>&1
  echo "torch $name: exit $? after $(elapsed) s"
  grep -E "^torch" "$LOGDIR/torch_$name.log"
}
echo "== PyTorch peer (logs: $LOGDIR/torch_*.log)"
if "$PY" -c "import torch" > /dev/null 2>&1; then
  torch_run eager128 60 --config large --seq 128 --batch 64 --mode eager
  torch_run eager512 60 --config large --seq 512 --batch 16 --mode eager
  torch_run compile128 150 --config large --seq 128 --batch 64 --mode compile
  torch_run compile512 100 --config large --seq 512 --batch 16 --mode compile
else
  echo "no python3 with torch here: the PyTorch rows are skipped"
fi

# The commands end to end on the GPU: the tiny demo (vocabulary, shards,
# 200 pretraining steps with validation and checkpoints, fill-mask).
DEMO_RC=skipped
if [ $BUILD_RC -eq 0 ] && time_left 60; then
  echo "== demo on the GPU, 200 steps (log: $LOGDIR/demo.log)"
  DEVICE=cuda STEPS=200 timeout 60 bash dev/demo.sh > "$LOGDIR/demo.log" 2>&1
  DEMO_RC=$?
  grep -E "device:|^step (100|200)|val loss|demo done" "$LOGDIR/demo.log" | head -12
fi

# tokens/s of a log line ("... 12345 tokens/s ..."), and its MFU.
tps() { grep -hE "tokens/s" "$1" 2>/dev/null | grep -oE "[0-9.]+ tokens/s" | head -1 | cut -d' ' -f1; }
mfu() { grep -hE "tokens/s" "$1" 2>/dev/null | grep -oE "MFU [0-9.]+%" | head -1 | cut -d' ' -f2; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }' || echo "-"; }

echo
echo "== summary ($(elapsed) s; logs in $LOGDIR)"
printf "%-44s %s\n" "stage / test" "result"
printf "%-44s %s\n" "build (sm_90)" "$([ $MAKE_RC -eq 0 ] && echo ok || echo "FAILED (make $MAKE_RC; binaries $BUILD_RC, suite $SUITE_BUILT)")"
[ "$TEST_RC" = not-built ] && printf "%-44s %s\n" "GPU suite" "NOT BUILT (see $LOGDIR/build.log)"
if [ -f "$LOGDIR/test_gpu.log" ]; then
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(" "$LOGDIR/test_gpu.log" |
    sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+) \(([0-9]+) ms\).*/\2 \1 \3/' |
    while read -r name res ms; do printf "%-44s %s (%s ms)\n" "$name" "$res" "$ms"; done
  [ "$TEST_RC" = 124 ] && printf "%-44s %s\n" "GPU suite" "TIMED OUT after 150 s"
  [ "$TEST_RC" = skipped-on-gpu ] && printf "%-44s %s\n" "GPU suite" "SKIPPED: the CUDA runtime sees no device"
fi
for r in $RERUN; do printf "%-44s %s\n" "${r%%:*} (alone, blocking launches)" "${r#*:}"; done
printf "%-44s %s\n" "demo on the GPU (dev/demo.sh, 200 steps)" "$([ "$DEMO_RC" = 0 ] && echo ok || echo "$DEMO_RC")"
grep -hE "measured bf16 cuBLASLt peak" "$LOGDIR"/bench_t128.log 2>/dev/null
echo
printf "%-30s %12s %8s %10s %12s\n" "BiGS-large training step" "tokens/s" "MFU" "vs eager" "vs compile"
for row in "bigs bf16, T 128, batch 64|t128|eager128|compile128" "bigs bf16, T 512, batch 16|t512|eager512|compile512" \
           "bigs bf16, T 4096, batch 4|t4096||" "bigs fp32, T 128, batch 16|t128fp32||"; do
  IFS='|' read -r label ours eager comp <<< "$row"
  o=$(tps "$LOGDIR/bench_$ours.log")
  printf "%-30s %12s %8s %10s %12s\n" "$label" "${o:--}" "$(mfu "$LOGDIR/bench_$ours.log")" \
    "$([ -n "$eager" ] && ratio "$o" "$(tps "$LOGDIR/torch_$eager.log")" || echo)" \
    "$([ -n "$comp" ] && ratio "$o" "$(tps "$LOGDIR/torch_$comp.log")" || echo)"
done
for t in eager128 compile128 eager512 compile512; do
  [ -f "$LOGDIR/torch_$t.log" ] && printf "%-30s %12s %8s\n" "torch $t" "$(tps "$LOGDIR/torch_$t.log")" \
    "$(mfu "$LOGDIR/torch_$t.log")"
done
[ "$MAKE_RC" = 0 ] && [ "$TEST_RC" = 0 ]
