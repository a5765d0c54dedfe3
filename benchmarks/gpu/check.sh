#!/usr/bin/env bash
# The GPU check of issue 12, in one script for a one-GPU machine (at most 8 minutes):
#
#   bash benchmarks/gpu/check.sh [--dry-run] [RESULTS_DIR]     (default benchmarks/gpu/results)
#
# Writes RESULTS_DIR/check.md (and the raw JSON lines beside it):
#   1. the paper config (DenseNet-121 blocks 1-3, 512 x 512, 9 slices) in seconds per step at
#      batch 2 and 8, AMP off / bf16 / fp16, student alone and with the teacher's pass, so the
#      teacher overhead (benchmarks/bench_train_step.py);
#   2. DataLoader samples/s with 4, 8 and 16 workers on a DeepLesion-like 16-bit PNG tree it
#      writes itself (benchmarks/bench_png_stacks.py --workers);
#   3. `uld predict` slices/s on a 64-slice 512 x 512 volume with an untrained paper-config model;
#   4. the test suite's GPU-marked tests (tests/test_gpu.py: AMP parity, the device of every
#      tensor, fp16 scaler and resume, predict on CUDA).
# --dry-run: the same steps at toy sizes on whatever device there is (CI runs it on the CPU,
# tests/test_gpu_check.py), to prove the script works before a GPU is paid for.
# Needs python with uld installed; no network (the model starts from random weights).
set -euo pipefail
cd "$(dirname "$0")/../.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-benchmarks/gpu/results}
mkdir -p "$OUT"
PY=${PYTHON:-python}
STEPS=$(mktemp -d)
trap 'rm -rf "$STEPS"' EXIT
rm -f "$OUT/train.jsonl" "$OUT/loader.jsonl"
start=$(date +%s)

if [ $DRY = 1 ]; then
  SIZE=64; TRAIN_STEPS=2; BATCHES="2"; WORKERS="0,1"; SLICES=12; LOADER=8; PRED_SLICES=4
  MODEL=(--config demo --set model.small_channels=[8,16] --set model.out_channels=16
         --set model.representation_size=32)
  AMPS="off bf16"
else
  SIZE=512; TRAIN_STEPS=20; BATCHES="2 8"; WORKERS="4,8,16"; SLICES=60; LOADER=256; PRED_SLICES=64
  MODEL=(--config deeplesion --set model.pretrained=)
  AMPS="off bf16 fp16"
fi
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
if [ "$DEVICE" = cpu ]; then AMPS="off bf16"; fi  # fp16 autocast is CUDA only

echo "== 1. training step: ${MODEL[*]}, ${SIZE}x${SIZE}, device $DEVICE"
for batch in $BATCHES; do
  for amp in $AMPS; do
    $PY benchmarks/bench_train_step.py "${MODEL[@]}" --size $SIZE --batch "$batch" \
      --steps $TRAIN_STEPS --amp "$amp" --json "$OUT/train.jsonl" | tail -3
  done
done

echo "== 2. DataLoader samples/s, workers $WORKERS"
OMP_NUM_THREADS=1 $PY benchmarks/bench_png_stacks.py --only-loader --workers "$WORKERS" \
  --slices $SLICES --size $SIZE --loader-samples $LOADER --json "$OUT/loader.jsonl"

echo "== 3. uld predict, $PRED_SLICES slices of ${SIZE}x${SIZE}"
$PY - "$STEPS" $SIZE $PRED_SLICES "${MODEL[@]}" <<'PY'
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from uld.config import config_to_dict, load_config
from uld.data.volume import Volume, write_volume
from uld.model.build import build_detector
from uld.train.checkpoint import atomic_save, model_file

out, size, slices, args = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
name = args[args.index("--config") + 1]
sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
config = load_config(name, sets)
config = replace(config, model=replace(config.model, pretrained=""))
torch.manual_seed(0)
model = build_detector(config.model, config.data.num_slices)
atomic_save(model_file(model.state_dict(), config_to_dict(config), 0, {}), out / "model.pt")
y, x = np.mgrid[:size, :size] / size - 0.5
body = np.where((x / 0.42) ** 2 + (y / 0.32) ** 2 < 1, 40.0, -1000.0)
hu = np.repeat(body[None], slices, axis=0).astype(np.int16)
write_volume(Volume(hu=hu, spacing_xyz=(0.8, 0.8, 2.0)), out / "scan.nii.gz")
PY
$PY -m uld.cli predict "$STEPS/scan.nii.gz" --model "$STEPS/model.pt" --out "$STEPS/pred" \
  --no-overlays --quiet | tee "$STEPS/predict.txt"

echo "== 4. GPU-marked tests"
set +e
$PY -m pytest -q -rs -m gpu tests/test_gpu.py 2>&1 | tail -15 | tee "$STEPS/tests.txt"
set -e

$PY - "$OUT" "$STEPS" "$DRY" "$DEVICE" "$(( $(date +%s) - start ))" <<'PY'
import json
import re
import sys
from pathlib import Path

import torch

out, steps, dry, device, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", \
    sys.argv[4], int(sys.argv[5])
rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
loader = json.loads((out / "loader.jsonl").read_text().splitlines()[-1])
predict = (steps / "predict.txt").read_text()
rate = re.search(r"\(([0-9.]+) slices/s\)", predict)
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
lines = [f"# GPU check (issue 12){' -- DRY RUN, toy sizes' if dry else ''}", "",
         f"device {device} ({gpu}), torch {torch.__version__}, {seconds} s in all", "",
         "## 1. Training step (benchmarks/bench_train_step.py)", "",
         "| config | batch | size | AMP | student s/step | with teacher s/step | teacher overhead | it/s |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['config']} | {r['batch']} | {r['size']} | {r['amp']} | {r['student_s']:.4f} | "
                 f"{r['with_teacher_s']:.4f} | {100 * r['teacher_overhead']:.1f} % | "
                 f"{1 / r['with_teacher_s']:.2f} |")
lines += ["", f"## 2. DataLoader ({loader['cores']} cores, {loader['size']} px PNG tree)", "",
          "| workers | samples/s |", "|---|---|"]
lines += [f"| {w} | {v:.1f} |" for w, v in loader["loader_samples_per_s"].items()]
lines += ["", "## 3. uld predict", "", f"{rate.group(1) if rate else '?'} slices/s: {predict.strip()}",
          "", "## 4. GPU-marked tests", "", "```", (steps / "tests.txt").read_text().strip(), "```", ""]
(out / "check.md").write_text("\n".join(lines))
print("\n".join(lines))
PY
echo "results in $OUT/check.md"
