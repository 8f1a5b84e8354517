#!/usr/bin/env bash
# Data-parallel training launched by Slurm (README "Data-parallel training"):
# `srun --mpi=pmix -n 2 bigs pretrain ...` (the ranks started by Slurm's PMIx
# plugin) and `salloc -n 2 mpirun bigs pretrain ...` against one process of
# the MPI-free build: log.jsonl, state.bin and model.bin byte for byte; srun
# with no MPI plugin refused; one process in a batch script runs alone.
#
#   dev/test_slurm.sh [--bigs-mpi build/bigs_mpi] [--bigs build/bigs_cpu] [--work build/test_slurm]
#
# Starts munged, slurmctld and slurmd for this machine alone in a temporary
# directory (tried as root) and stops them on exit; with
# BIGS_TEST_SLURM=cluster it uses the cluster `sinfo` reaches instead.
# Skips (exit 0) where srun is not installed, or where the one-node cluster
# does not come up within 30 s (BIGS_TEST_SLURM_WAIT=seconds), printing the
# daemons' last log lines.
# Debian 12 packages (apt-get install):
#   slurmd slurmctld slurm-client munge   (slurm-wlm-basic-plugins, which they pull in, has mpi_pmix_v4)
#   openmpi-bin libopenmpi-dev            (mpirun, and mpicxx for build/bigs_mpi)
# Prints one line per check, "ok ..." or "FAIL ..."; exits 1 on any failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bigs_mpi=$root/build/bigs_mpi bigs=$root/build/bigs_cpu work=$root/build/test_slurm
while [ $# -gt 0 ]; do
  case $1 in
    --bigs-mpi) bigs_mpi=$(realpath "$2"); shift 2 ;;
    --bigs) bigs=$(realpath "$2"); shift 2 ;;
    --work) work=$(realpath -m "$2"); shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "test_slurm: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v srun >/dev/null || { echo "test_slurm: skipped: srun is not installed (Debian: slurm-client)"; exit 0; }
for b in "$bigs_mpi" "$bigs"; do
  [ -x "$b" ] || { echo "FAIL $b is not built (make; bigs_mpi needs mpicxx)"; exit 1; }
done
start=$SECONDS failed=0 pids=() tmp=
ok() { echo "ok $*"; }
fail() { echo "FAIL $*"; failed=1; }
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT

# A cluster of this machine alone, unless BIGS_TEST_SLURM=cluster asks for the
# one sinfo reaches (on a login node, make test would otherwise queue jobs there).
if [ "${BIGS_TEST_SLURM:-}" = cluster ] && timeout 20 sinfo -h >/dev/null 2>&1; then
  ok "a Slurm cluster is reachable: using it ($(sinfo -h -o '%P %D nodes' | head -n 1))"
else
  for d in munged slurmctld slurmd; do
    command -v "$d" >/dev/null || PATH=$PATH:/usr/sbin
    command -v "$d" >/dev/null || { echo "test_slurm: skipped: no $d to start a one-node cluster (Debian: munge slurmctld slurmd)"; exit 0; }
  done
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_slurm.XXXXXX")
  chmod 755 "$tmp"
  mkdir -m 711 "$tmp/munge" && mkdir "$tmp/state" "$tmp/spool"
  head -c 1024 /dev/urandom >"$tmp/munge/munge.key" && chmod 400 "$tmp/munge/munge.key"
  munged -F --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/socket" --pid-file="$tmp/munge/pid" \
    --log-file="$tmp/munge/log" --seed-file="$tmp/munge/seed" >"$tmp/munged.out" 2>&1 & pids+=($!)
  host=$(hostname -s) user=$(id -un) port=$((20000 + RANDOM % 20000))
  cat >"$tmp/slurm.conf" <<EOF
ClusterName=bigs_test
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/socket
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  export SLURM_CONF=$tmp/slurm.conf
  for i in $(seq 50); do [ -S "$tmp/munge/socket" ] && break; sleep 0.1; done
  slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.out" 2>&1 & pids+=($!)
  slurmd -D -f "$SLURM_CONF" >"$tmp/slurmd.out" 2>&1 & pids+=($!)
  # Wait for the node to be idle: each sinfo bounded (where slurmctld cannot
  # answer, sinfo waits for it without end), the whole wait too, and cut short
  # when a daemon has exited.
  state= gone= wait_s=${BIGS_TEST_SLURM_WAIT:-30} deadline=$((SECONDS + ${BIGS_TEST_SLURM_WAIT:-30}))
  while :; do
    state=$(timeout 5 sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    for n in 0 1 2; do
      kill -0 "${pids[$n]}" 2>/dev/null || gone="$gone $(echo munged slurmctld slurmd | cut -d' ' -f$((n + 1)))"
    done
    [ -n "$gone" ] || [ $SECONDS -ge $deadline ] && break
    sleep 0.5
  done
  if [ "$state" != idle ]; then  # this machine's limits, not bigs's: said, with the daemons' last words
    echo "test_slurm: skipped: the one-node cluster did not come up here ($([ -n "$gone" ] && echo "exited:$gone" ||
      echo "not idle after $wait_s s"); node state '${state:-no answer}'); its logs:"
    tail -n 5 "$tmp"/*.log "$tmp/munge/log" "$tmp"/*.out 2>/dev/null || true
    exit 0
  fi
  ok "started munged, slurmctld and slurmd for $host ($(nproc) CPUs) in $tmp"
fi
if ! timeout 20 srun --mpi=list 2>&1 | grep -q pmix; then
  echo "test_slurm: skipped: Slurm has no PMIx plugin (srun --mpi=list: $(timeout 20 srun --mpi=list 2>&1 | tr '\n' ' '))"
  exit 0
fi

# Shards of T = 32 from the first 400 lines of the corpus, a mini model (as dev/test_mpi.py).
rm -rf "$work" && mkdir -p "$work"
head -n 400 "$root/data/kjv.txt" >"$work/text.txt"
printf 'H 16\nI 24\nL 2\nN 4\n' >"$work/mini.cfg"
"$root/data_prep" pretrain --vocab "$root/data/bert-base-uncased-vocab.txt" --seq 32 --out "$work/shards" \
  --val-fraction 0.2 "$work/text.txt" >"$work/data_prep.log" 2>&1 || { fail "data_prep pretrain: $(tail -n 3 "$work/data_prep.log")"; exit 1; }
args() {
  printf '%s\n' pretrain --train "$work/shards/train_*.bin" --val "$work/shards/val_*.bin" --config "$work/mini.cfg" \
    --steps 20 --warmup 2 --lr 3e-3 --eval-every 10 --eval-seqs 8 --log-every 5 --save-every 10 --threads 1 \
    --batch 2 --micro-batch 1 --out "$work/$1"
}
mapfile -t a_one < <(args one)
"$bigs" "${a_one[@]}" >"$work/one.log" 2>&1 || { fail "one process: $(tail -n 3 "$work/one.log")"; exit 1; }

# differs NAME: which of the run's files differ from the one process's ("" when none).
differs() {
  local f diff=
  for f in log.jsonl state.bin model.bin; do cmp -s "$work/one/$f" "$work/$1/$f" || diff="$diff $f"; done
  echo "$diff"
}

# NAME, then the launcher's command line: 2 ranks, compared with the one process.
check() {
  local name=$1 t0=$SECONDS a rc diff; shift
  mapfile -t a < <(args "$name")
  timeout 120 "$@" "$bigs_mpi" "${a[@]}" >"$work/$name.log" 2>&1 && rc=0 || rc=$?
  if [ $rc != 0 ]; then fail "$*: exit status $rc ($work/$name.log):"; tail -n 5 "$work/$name.log"; return; fi
  grep -q "world: 2 ranks through MPI" "$work/$name.log" || { fail "$*: not 2 ranks ($work/$name.log)"; return; }
  diff=$(differs "$name")
  if [ -n "$diff" ]; then fail "$*: differs from one process in$diff"
  else ok "$* bigs pretrain: 2 ranks, log.jsonl, state.bin, model.bin = one process's ($((SECONDS - t0)) s)"; fi
}
check srun_pmix srun --mpi=pmix -N 1 -n 2 -O
if command -v mpirun >/dev/null; then
  check salloc_mpirun salloc -N 1 -n 2 -O mpirun --allow-run-as-root --oversubscribe --bind-to none
else
  echo "skipped salloc mpirun: no mpirun (Debian: openmpi-bin)"
fi

# srun with no MPI plugin starts 2 lone processes: refused, said once, before any work.
mapfile -t a < <(args srun_none)
want="srun started 2 tasks that are not ranks of one MPI job"
timeout 120 srun --mpi=none -N 1 -n 2 -O "$bigs_mpi" "${a[@]}" >"$work/srun_none.log" 2>&1 && rc=0 || rc=$?
said=$(grep -c "$want" "$work/srun_none.log" || true)
if [ $rc != 0 ] && [ "$said" = 1 ] && [ ! -e "$work/srun_none" ]; then
  ok "srun --mpi=none -n 2: refused (exit $rc), said once, nothing written"
else
  fail "srun --mpi=none -n 2: exit $rc, '$want' said $said times, $work/srun_none $([ -e "$work/srun_none" ] && echo made || echo absent)"
  tail -n 5 "$work/srun_none.log"
fi

# A batch script of a 2-task allocation that runs one process of the MPI build itself: a world of one.
mapfile -t a < <(args sbatch_one)
printf '#!/bin/sh\nexec' >"$work/job.sh"
printf ' %q' "$bigs_mpi" "${a[@]}" >>"$work/job.sh"
timeout 120 sbatch --wait -N 1 -n 2 -O -o "$work/sbatch_one.log" "$work/job.sh" >/dev/null 2>&1 && rc=0 || rc=$?
diff=$(differs sbatch_one)
if [ $rc = 0 ] && [ -z "$diff" ]; then
  ok "sbatch -n 2 with one process in the script: runs alone, = one process's files"
else
  fail "sbatch -n 2 with one process in the script: exit $rc, differs in:${diff:- nothing}"
  tail -n 5 "$work/sbatch_one.log" 2>/dev/null || true
fi
echo "test_slurm: $([ $failed = 0 ] && echo passed || echo FAILED) ($((SECONDS - start)) s)"
exit $failed
