"""``benchmarks/train_step.py --batch-sizes`` prints one JSON line per size and a scaling line, for the whole
step and for the loss alone with its scoring paths side by side (tiny config; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_train_step(*arguments: str) -> list[dict]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "benchmarks/train_step.py", "--tiny", "--steps", "1", *arguments],
        capture_output=True, text=True, cwd=ROOT, timeout=240, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.mark.parametrize("part", ["step", "loss"])
def test_one_line_per_batch_size_then_the_scaling(part):
    records = run_train_step("--batch-sizes", "2,3", "--part", part, "--loss-path", "auto,pool,sampled-predictions")
    assert [record["benchmark"] for record in records] == ["train_step", "train_step", "train_step_scaling"]
    sizes = [record["results"][0]["batch_size"] for record in records[:2]]
    assert sizes == [2, 3]
    for record in records[:2]:
        (result,) = record["results"]
        assert result["part"] == part and set(result["variants"]) == {"auto", "pool", "sampled-predictions"}
        assert result["seconds_per_sequence"] == pytest.approx(result["seconds_per_step"] / result["batch_size"])
    (rows,) = records[2]["configs"].values()
    assert [row["batch_size"] for row in rows] == [2, 3] and rows[0]["ratio_to_first"] == 1.0


def test_bad_batch_sizes_and_paths_are_usage_errors():
    for arguments in (["--batch-sizes", "8,x"], ["--batch-sizes", "0"], ["--loss-path", "dense"]):
        completed = subprocess.run(
            [sys.executable, "benchmarks/train_step.py", "--tiny", *arguments],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        assert completed.returncode == 2 and "Traceback" not in completed.stderr, arguments
