#!/usr/bin/env bash
# Runs every test suite of the project (called by `make test`) and ends with
# one summary line, "N passed, N failed". A suite is one GoogleTest binary or
# one script; each must exit 0 to pass.
set -u
build=${1:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
passed=0
failed=0
failures=()
skipped=()

run() {  # run NAME COMMAND...
  local name=$1
  shift
  echo "=== $name: $*"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

for t in test_model test_cpu_kernels test_train test_tokenizer test_data_prep test_crash test_lab; do
  run "$t" "$build/$t" --gtest_brief=1
done
if [ -x "$build/test_gpu" ]; then  # built where nvcc is; skips itself without a GPU
  run test_gpu "$build/test_gpu" --gtest_brief=1
fi
# The emulated CUDA device (test/emu; built where the CUDA Toolkit's headers
# are): its own rules with planted bugs, plain and under ASan; cuBLASLt and
# cuFFT against numpy; then the GPU suite and whole GPU runs of bigs on it.
if [ -x "$build/emu/test_emu" ]; then
  run test_emu "$build/emu/test_emu" --gtest_brief=1
  run test_emu_asan env ASAN_OPTIONS=detect_leaks=1 "$build/emu/test_emu_asan" --gtest_brief=1
  run test_emu_libs bash -c "rm -rf '$build/emu_libs' && mkdir -p '$build/emu_libs' &&
    EMU_LIBS_OUT='$build/emu_libs' '$build/emu/test_emu_libs' --gtest_brief=1 &&
    '$PYTHON' dev/test_emu_libs.py '$build/emu_libs'"
  if [ -x "$build/emu/test_emu_nccl" ] && command -v mpirun >/dev/null 2>&1; then
    run test_emu_nccl mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$build/emu/test_emu_nccl" --gtest_brief=1
  fi
  run test_gpu_emulated "$build/emu/test_gpu" --gtest_brief=1
  run test_gpu_runs "$PYTHON" dev/test_gpu_runs.py --build "$build" --workdir "$build/test_gpu_runs"
else
  skipped+=("the emulated CUDA device's suites (no CUDA Toolkit headers: install the toolkit, or set EMU_INC)")
fi
# The data-parallel suite needs the MPI build, which make builds where mpicxx
# is (it says so in HAVE_MPI), and mpirun; dev/deps.sh installs Open MPI.
have_mpi=${HAVE_MPI-$(command -v mpicxx >/dev/null 2>&1 && echo yes)}
if [ "$have_mpi" = yes ] && [ -x "$build/bigs_mpi" ] && command -v mpirun >/dev/null 2>&1; then
  run test_mpi "$PYTHON" dev/test_mpi.py --bigs-mpi "$build/bigs_mpi" --bigs "$build/bigs_cpu" --workdir "$build/test_mpi"
  # srun and salloc on a one-node Slurm it starts (dev/deps.sh installs Slurm); skips itself without srun.
  run test_slurm bash dev/test_slurm.sh --bigs-mpi "$build/bigs_mpi" --bigs "$build/bigs_cpu" --work "$build/test_slurm"
else
  skipped+=("test_mpi (no mpicxx or no mpirun: install Open MPI (Debian: openmpi-bin libopenmpi-dev; dev/deps.sh ensure) and run make test again)")
fi
run test_convert "$PYTHON" dev/test_convert.py --bigs "$build/bigs_cpu" --workdir "$build/test_convert"
run test_glue "$PYTHON" dev/test_glue.py --bigs "$build/bigs_cpu" --workdir "$build/test_glue"
run test_import_hdf5 "$PYTHON" dev/test_import_hdf5.py --bigs "$build/bigs_cpu" --workdir "$build/test_import_hdf5"
run test_optimizer "$PYTHON" dev/test_optimizer.py --bigs "$build/bigs_cpu" --workdir "$build/test_optimizer"
run test_glue_metrics "$PYTHON" dev/test_glue_metrics.py --workdir "$build/test_glue_metrics"
run test_bench_cpu "$PYTHON" dev/test_bench_cpu.py --bigs "$build/bigs_cpu" --workdir "$build/test_bench_cpu"
run test_gpu_check bash dev/test_gpu_check.sh
run test_plot_kernels "$PYTHON" dev/test_plot_kernels.py --workdir "$build/test_plot_kernels"
run tokenizer_parity "$PYTHON" dev/tokenizer_parity.py ./tokenizer data/bert-base-uncased-vocab.txt --workdir "$build/tokenizer_parity" --quick

echo
for s in "${skipped[@]}"; do echo "skipped suite: $s"; done
[ ${#failures[@]} -eq 0 ] || echo "failed suites: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
