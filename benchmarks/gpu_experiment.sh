#!/usr/bin/env bash
# `uld experiment paper` on a one-GPU machine: the runs in parallel worker processes.
#
#   bash benchmarks/gpu_experiment.sh BUDGET OUTDIR RESULTS_DIR [--set key=value ...]
#
# Each worker trains and evaluates its runs one after another (`uld experiment paper --only`);
# the add run of seed 0 comes before the hard-negative run that needs it. When every worker is
# done, one more invocation writes the report (all runs are then reused). Every 30 s, and at the
# end, the small files of the experiment (reports, results, summaries, metrics, configs, logs,
# pictures) are packed into RESULTS_DIR/experiment.tar.gz, so a run cut short still reports
# what finished. Needs python3 with torch/torchvision and uld's other dependencies on the path.
set -u
BUDGET=$1; EXP=$2; RESULTS=$3; shift 3
mkdir -p "$EXP/logs" "$RESULTS"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python3 - "$BUDGET" "$EXP" <<'PY'
import sys
from pathlib import Path
from uld.experiment.plan import BUDGETS
from uld.experiment.runner import ensure_dataset
ensure_dataset(Path(sys.argv[2]) / "data", BUDGETS[sys.argv[1]].synth, progress=False)
PY
pack() {
  (cd "$EXP" && find . -path ./data/volumes -prune -o -type f \( -name '*.json' -o -name '*.md' \
     -o -name '*.png' -o -name '*.yaml' -o -name '*.jsonl' -o -name '*.txt' -o -name '*.csv' \) \
     -size -4M -print | grep -v test_detections.json | tar czf "$RESULTS/experiment.tar.gz.tmp" -T -) \
    && mv "$RESULTS/experiment.tar.gz.tmp" "$RESULTS/experiment.tar.gz"
}
worker() {
  local args=()
  for run in "$@"; do args+=(--only "$run"); done
  python3 -m uld.cli experiment paper --budget "$BUDGET" --out "$EXP" --quiet "${SETS[@]}" \
    "${args[@]}" > "$EXP/logs/$1.log" 2>&1 || echo "worker $1 failed" >> "$EXP/logs/failures.txt"
}
SETS=()
for s in "$@"; do SETS+=("$s"); done
pids=()
for group in "add_s0 add_pminus_s0" oracle_s0 none_s0 ignore_s0 oracle_s1 none_s1 add_s1 \
             ignore_s1 oracle_s2 none_s2 add_s2 ignore_s2 tau0.95_s0 tau0.85_s0 tau0.80_s0 \
             decay_s0 none_random_s0 add_random_s0; do
  # shellcheck disable=SC2086
  worker $group &
  pids+=($!)
done
( while sleep 30; do pack; done ) &
packer=$!
start=$(date +%s)
for pid in "${pids[@]}"; do wait "$pid"; done
echo "workers done after $(( $(date +%s) - start )) s"
python3 -m uld.cli experiment paper --budget "$BUDGET" --out "$EXP" --quiet "${SETS[@]}" \
  > "$EXP/logs/report.log" 2>&1 || echo "report failed" >> "$EXP/logs/failures.txt"
kill "$packer" 2>/dev/null
pack
cat "$EXP/logs/failures.txt" 2>/dev/null
tail -n 60 "$EXP/report.md" 2>/dev/null
