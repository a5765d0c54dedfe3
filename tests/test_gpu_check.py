"""benchmarks/gpu/check.sh --dry-run works on the CPU (CI runs it here, so the GPU check is
known to run before a GPU machine is paid for)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_its_results(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh"), "--dry-run",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "check.md").read_text()
    assert "DRY RUN" in report
    for heading in ("1. Training step", "2. DataLoader", "3. uld predict", "4. GPU-marked tests"):
        assert heading in report
    assert "| off |" in report and "| bf16 |" in report and "slices/s" in report
    assert "SKIPPED" in report  # the GPU tests ran, and skipped with their reason
