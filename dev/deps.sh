#!/usr/bin/env bash
# What the tests need on a Debian machine, in one list that `make test` and
# .ci/run both use.
#   dev/deps.sh check     list what is missing; exit 1 if anything is
#   dev/deps.sh ensure    check, then install what is missing when run as root
#                         (apt-get, pip); otherwise print the command to run
#                         and exit 1 (what `make test` does first)
#   dev/deps.sh install   install all of it (CI, on a fresh machine)
set -uo pipefail
PYTHON=${PYTHON:-/usr/bin/python3}

# Debian packages, and why:
apt_packages=(
  build-essential          # g++, make
  libgtest-dev             # the C++ suites (GoogleTest)
  python3 python3-pip      # the Python oracles and dev/ scripts; pip for tokenizers
  python3-numpy python3-torch python3-scipy python3-sklearn  # dev/reference.py, the metric oracles
  libopenblas0-pthread     # an optimised libblas.so.3 for them: Debian's python3-torch (BLAS_INFO=generic) and
                           # python3-numpy call the system's, the netlib reference BLAS without it (about 15x
                           # slower; dev/bench_cpu.py refuses to compare against it)
  python3-msgpack          # test_convert writes Flax checkpoints with the msgpack library
  python3-h5py             # test_import_hdf5 writes the authors' hdf5 corpus layout
  python3-matplotlib       # test_plot_kernels draws dev/plot_kernels.py's figure
  python3-crc32c           # dev/convert_hf.py reads and writes the checkpoints' CRC-32C; test_mpi checks the ranks' with it
  openmpi-bin libopenmpi-dev  # mpirun and mpicxx: bigs's data-parallel build, run by dev/test_mpi.py
  slurmd slurmctld slurm-client munge  # dev/test_slurm.sh: srun --mpi=pmix and salloc on a one-node Slurm
  clang libclang-rt-dev    # the libFuzzer harnesses with ASan and UBSan (make fuzz)
  zip                      # dev/glue.sh zips the submission (Python's zipfile otherwise)
  unicode-data             # dev/gen_unicode_tables.py's source
  fortunes fortunes-zh fortunes-de fortunes-it fortunes-es fortunes-ru fortunes-cs fortunes-pl fortunes-bg
                           # the tokenizer parity corpus (dev/make_parity_corpus.py)
  bible-kjv                # dev/make_kjv_corpus.sh (data/kjv.txt)
)
# PyPI, as "module requirement": Hugging Face tokenizers, the parity oracle of
# our tokenizer; atheris, the fuzzer of dev/convert_hf.py's readers.
pip_packages=("tokenizers tokenizers>=0.15" "atheris atheris>=2.3")

missing_apt=() missing_pip=()
find_missing() {
  missing_apt=() missing_pip=()
  if command -v dpkg-query >/dev/null 2>&1; then
    local installed
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${apt_packages[@]}" 2>/dev/null | awk '$2 == "ii" { print $1 }')
    for p in "${apt_packages[@]}"; do
      grep -qx "$p" <<<"$installed" || missing_apt+=("$p")
    done
  fi
  local entry module req
  for entry in "${pip_packages[@]}"; do
    read -r module req <<<"$entry"
    "$PYTHON" -c "import $module" >/dev/null 2>&1 || missing_pip+=("$req")
  done
}

install() {  # install APT... -- PIP...
  local apt=() pip=() seen=0 a
  for a in "$@"; do
    if [ "$a" = -- ]; then seen=1; elif [ $seen = 0 ]; then apt+=("$a"); else pip+=("$a"); fi
  done
  if [ ${#apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -q --no-install-recommends "${apt[@]}" >/dev/null || return 1
  fi
  if [ ${#pip[@]} -gt 0 ]; then
    "$PYTHON" -m pip install -q --break-system-packages "${pip[@]}" || return 1
  fi
}

cmd=${1:-check}
case $cmd in
  install)
    pips=()
    for entry in "${pip_packages[@]}"; do pips+=("${entry#* }"); done
    install "${apt_packages[@]}" -- "${pips[@]}" ;;
  check | ensure)
    if ! command -v dpkg-query >/dev/null 2>&1; then
      echo "dev/deps.sh: not a Debian system: cannot check the packages; the tests need the equivalents of:"
      echo "  ${apt_packages[*]}"
      echo "  and from PyPI: ${pip_packages[*]#* }"
    fi
    find_missing
    [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_pip[@]} -eq 0 ] && exit 0
    echo "dev/deps.sh: missing for the tests: ${missing_apt[*]} ${missing_pip[*]}"
    if [ "$cmd" = ensure ] && [ "$(id -u)" = 0 ]; then
      echo "dev/deps.sh: installing them"
      install "${missing_apt[@]}" -- "${missing_pip[@]}" || { echo "dev/deps.sh: the installation failed" >&2; exit 1; }
      find_missing
      [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_pip[@]} -eq 0 ] && exit 0
      echo "dev/deps.sh: still missing after installing: ${missing_apt[*]} ${missing_pip[*]}" >&2
      exit 1
    fi
    echo "dev/deps.sh: install them with:  sudo bash dev/deps.sh ensure" >&2
    exit 1 ;;
  *) echo "usage: dev/deps.sh check|ensure|install" >&2; exit 2 ;;
esac
