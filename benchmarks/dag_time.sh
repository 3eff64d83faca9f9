#!/usr/bin/env bash
# Wall time of the whole DAG (tiny profile): a cold run in a scratch copy of the repository
# (no results/, models/, figures/, .snakemake/), then a no-op rerun that must do nothing.
#
#   bash benchmarks/dag_time.sh [SCRATCH_DIR] [CORES]     (defaults: /tmp/dagbench, all)
#
# Appends one line per run to benchmarks/results/dag_time.csv (date, cores, run, seconds, exit
# code) and prints them. The scratch copy is made with rsync, never git. Run it on an otherwise
# idle machine: the cold time is the DAG's cost, the no-op time is Snakemake's own overhead.
set -u
SRC="$(cd "$(dirname "$0")/.." && pwd)"
DST="${1:-/tmp/dagbench}"
CORES="${2:-all}"
OUT="$SRC/benchmarks/results"
mkdir -p "$OUT"
[ -f "$OUT/dag_time.csv" ] || echo "date,cores,nproc,run,seconds,exit_code" > "$OUT/dag_time.csv"

rm -rf "$DST"
mkdir -p "$DST"
rsync -a --exclude results --exclude models --exclude figures --exclude .snakemake \
      --exclude '__pycache__' --exclude benchmarks/results "$SRC/" "$DST/"

run() {  # run LABEL: time one snakemake invocation in the scratch copy
  local label="$1" t0 t1 rc
  t0=$(date +%s.%N)
  (cd "$DST" && snakemake --cores "$CORES" -s "$DST/Snakefile" > "$DST/snakemake-$label.log" 2>&1)
  rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  echo "$(date -Iseconds),$CORES,$(nproc),$label,$secs,$rc" | tee -a "$OUT/dag_time.csv"
  if [ "$rc" -ne 0 ]; then
    echo "snakemake ($label) exited $rc; last lines of $DST/snakemake-$label.log:" >&2
    tail -20 "$DST/snakemake-$label.log" >&2
  fi
  return "$rc"
}

run cold
cold_rc=$?
run noop
noop_rc=$?
if grep -q "Nothing to be done" "$DST/snakemake-noop.log"; then
  echo "no-op rerun: nothing to be done (as it must)"
else
  echo "WARNING: the rerun was not a no-op; see $DST/snakemake-noop.log" >&2
fi
# A DAG whose claims FAIL exits nonzero by design (DESIGN.md): the time still counts; the
# script's exit code is the cold run's.
[ "$noop_rc" -eq 0 ] || echo "no-op rerun exited $noop_rc" >&2
exit "$cold_rc"
