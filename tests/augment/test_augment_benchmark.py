"""benchmarks/augment.py runs at its tiny size and writes the three step times (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_augment_benchmark_tiny_prints_and_writes_the_three_step_times(tmp_path):
    out = tmp_path / "augment.json"
    command = [sys.executable, "benchmarks/augment.py", "--tiny", "--steps", "1", "--warmup", "1", "--json", str(out)]
    completed = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (line,) = completed.stdout.splitlines()
    record = json.loads(line)
    assert record == json.loads(out.read_text())
    assert record["benchmark"] == "augment" and set(record["seconds_per_step"]) == {"off", "main", "workers"}
    assert all(seconds > 0 for seconds in record["seconds_per_step"].values()) and record["batch_seconds"] > 0
    assert record["augment"]["enabled"] and record["workers"] == 2
    assert "augmentation, 2 workers" in completed.stderr
