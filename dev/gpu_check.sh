#!/usr/bin/env bash
# dev/gpu_check.sh [LOGDIR]: the one prepared script for a machine with a GPU.
# Builds for sm_90, shows the GPU, runs the GPU suite (every kernel against
# its CPU twin, the whole model, a 50-step training run against the CPU's),
# then `bigs bench` (fp32 and TF32) and the tiny demo on the GPU, and prints
# a short table last. Exit status 0 only when all of it passed.
# Full logs go to LOGDIR (default build/gpu_logs). Installs nothing; each
# stage has a timeout so the whole run stays under 8 minutes.
set -u
cd "$(dirname "$0")/.."
LOGDIR=${1:-build/gpu_logs}
mkdir -p "$LOGDIR" build
T0=$(date +%s)
NVCC=${NVCC:-nvcc}
elapsed() { echo $(( $(date +%s) - T0 )); }

echo "== GPU"
nvidia-smi 2>&1 | tee "$LOGDIR/nvidia-smi.txt" | head -20
"$NVCC" --version | tail -2

echo "== build for sm_90 (log: $LOGDIR/build.log)"
make -j8 CUDA_ARCH=sm_90 all build/test_gpu > "$LOGDIR/build.log" 2>&1
BUILD_RC=$?
echo "build exit $BUILD_RC after $(elapsed) s"
[ $BUILD_RC -ne 0 ] && tail -30 "$LOGDIR/build.log"

TEST_RC=skipped
if [ $BUILD_RC -eq 0 ]; then
  echo "== GPU suite (log: $LOGDIR/test_gpu.log)"
  timeout 180 ./build/test_gpu --gtest_output="xml:$LOGDIR/test_gpu.xml" > "$LOGDIR/test_gpu.log" 2>&1
  TEST_RC=$?
  # The comparisons (worst relative errors), failures, the loss table.
  grep -E "^\[ *(OK|FAILED) *\] [A-Za-z]|worst|Failure|differ|Expected|step|^ +[0-9]+ " "$LOGDIR/test_gpu.log" | head -200
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
if [ "$TEST_RC" != 0 ] && [ "$TEST_RC" != skipped ] && [ "$TEST_RC" != skipped-on-gpu ]; then
  for t in $(grep -E "^\[ +FAILED +\] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(" "$LOGDIR/test_gpu.log" | awk '{print $4}'); do
    [ "$(elapsed)" -gt 330 ] && { RERUN="$RERUN $t:not-rerun(time)"; continue; }
    CUDA_LAUNCH_BLOCKING=1 timeout 60 ./build/test_gpu --gtest_filter="$t" > "$LOGDIR/rerun_$t.log" 2>&1
    r=$?
    RERUN="$RERUN $t:$([ $r -eq 0 ] && echo passes-alone || echo "fails-alone($r)")"
    grep -E "Failure|differ|error|Error" "$LOGDIR/rerun_$t.log" | head -5
  done
fi

BENCH_RC=skipped
if [ $BUILD_RC -eq 0 ] && ./bigs bench --help > /dev/null 2>&1 && [ "$(elapsed)" -lt 330 ]; then
  echo "== bench (log: $LOGDIR/bench.log)"
  {
    timeout 50 ./bigs bench --config large --seq 128 --batch 8 --steps 10 --device cuda
    timeout 50 ./bigs bench --config large --seq 128 --batch 8 --steps 10 --device cuda --tf32
    timeout 35 ./bigs bench --config large --seq 512 --batch 4 --steps 5 --device cuda --tf32
  } > "$LOGDIR/bench.log" 2>&1
  BENCH_RC=$?
  cat "$LOGDIR/bench.log"
fi

# The commands end to end on the GPU: the tiny demo (vocabulary, shards,
# 200 pretraining steps with validation and checkpoints, fill-mask).
DEMO_RC=skipped
if [ $BUILD_RC -eq 0 ] && [ "$(elapsed)" -lt 380 ]; then
  echo "== demo on the GPU, 200 steps (log: $LOGDIR/demo.log)"
  DEVICE=cuda STEPS=200 timeout 90 bash dev/demo.sh > "$LOGDIR/demo.log" 2>&1
  DEMO_RC=$?
  grep -E "device:|^step (50|100|150|200)|val loss|demo done|^In the|^    " "$LOGDIR/demo.log" | head -24
fi

echo
echo "== summary ($(elapsed) s; logs in $LOGDIR)"
printf "%-44s %s\n" "stage / test" "result"
printf "%-44s %s\n" "build (sm_90)" "$([ $BUILD_RC -eq 0 ] && echo ok || echo "FAILED ($BUILD_RC)")"
if [ -f "$LOGDIR/test_gpu.log" ]; then
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z0-9_]+\.[A-Za-z0-9_]+ \(" "$LOGDIR/test_gpu.log" |
    sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+) \(([0-9]+) ms\).*/\2 \1 \3/' |
    while read -r name res ms; do printf "%-44s %s (%s ms)\n" "$name" "$res" "$ms"; done
  [ "$TEST_RC" = 124 ] && printf "%-44s %s\n" "GPU suite" "TIMED OUT after 180 s"
  [ "$TEST_RC" = skipped-on-gpu ] && printf "%-44s %s\n" "GPU suite" "SKIPPED: the CUDA runtime sees no device"
fi
for r in $RERUN; do printf "%-44s %s\n" "${r%%:*} (alone, blocking launches)" "${r#*:}"; done
grep -E "tokens/s" "$LOGDIR/bench.log" 2>/dev/null
printf "%-44s %s\n" "demo on the GPU (dev/demo.sh, 200 steps)" "$([ "$DEMO_RC" = 0 ] && echo ok || echo "$DEMO_RC")"
grep -E "val loss" "$LOGDIR/demo.log" 2>/dev/null | tail -1 | sed 's/^/demo: /'
[ "$BUILD_RC" = 0 ] && [ "$TEST_RC" = 0 ] && { [ "$BENCH_RC" = 0 ] || [ "$BENCH_RC" = skipped ]; } &&
  { [ "$DEMO_RC" = 0 ] || [ "$DEMO_RC" = skipped ]; }
