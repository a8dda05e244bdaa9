"""benchmarks/timeseries.py: the tiny run writes every (features, protocol) row, its raw-value 1-NN figure
matches one computed here, and variable-length series are pooled without padding artefacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

aeon_datasets = pytest.importorskip("aeon.datasets", reason="the uea kind needs aeon (pip install aeon)")

import timeseries  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def independent_raw_1nn(name: str) -> float:
    """1-NN (Euclidean) test accuracy of per-channel standardised (train statistics), flattened series."""
    (train, train_y), (test, test_y) = (aeon_datasets.load_classification(name, split=s) for s in ("train", "test"))
    train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)  # (n, C, T)
    mean = train.mean(axis=(0, 2), keepdims=True)
    std = train.std(axis=(0, 2), keepdims=True)
    a = ((train - mean) / std).transpose(0, 2, 1).reshape(len(train), -1)
    b = ((test - mean) / std).transpose(0, 2, 1).reshape(len(test), -1)
    distances = ((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=-1)  # (test, train)
    return float(np.mean(np.asarray(train_y)[distances.argmin(axis=1)] == np.asarray(test_y)))


def test_tiny_run_writes_every_row_and_the_raw_floor(tmp_path):
    out = tmp_path / "timeseries.json"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "benchmarks/timeseries.py", "--tiny", "--threads", "1", "--work", str(tmp_path / "work"),
         "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=environment,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = completed.stdout.strip().splitlines()
    record = json.loads(line)
    assert json.loads(out.read_text()) == record and record["benchmark"] == "timeseries"
    rows = record["rows"]
    assert {row["dataset"] for row in rows} == {"BasicMotions"}
    assert all(set(row) == {"dataset", "features", "protocol", "pooling", "accuracy"} for row in rows)
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows)
    found = {(row["features"], row["protocol"], row["pooling"]) for row in rows}
    for features in ("model", "random"):
        expected = {(features, protocol, pooling) for protocol in ("svm", "logistic") for pooling in ("max", "mean")}
        assert expected <= found
    assert {("raw", protocol, "flatten") for protocol in ("svm", "logistic", "1nn")} <= found
    assert len(found) == len(rows)  # no row twice
    raw_1nn = timeseries.accuracy_of(rows, "BasicMotions", "raw", "1nn", "flatten")
    assert raw_1nn == pytest.approx(independent_raw_1nn("BasicMotions"), abs=1e-4)
    run = record["runs"]["BasicMotions"]
    assert run["steps"] == timeseries.TINY_STEPS and run["config"]["encoder"]["strides"][0] >= 1
    assert "'timeseries' preset" in run["preset_line"]  # cpcaudio train chose the preset itself
    assert "BasicMotions" in completed.stderr and "0.975 TS2Vec" in completed.stderr  # the table, published beside


def test_variable_length_series_pool_their_own_frames_only(tmp_path):
    from cpcaudio.data import PreparedDataset, prepare
    from cpcaudio.evaluate.baselines import random_model
    from cpcaudio.presets import load_preset

    dataset = PreparedDataset.open(prepare("uea", "JapaneseVowels", tmp_path / "jv").path)
    series, _ = timeseries.split_series(dataset, "train")
    chosen = [series[i] for i in np.argsort([s.shape[-1] for s in series])[[0, 1, -1]]]  # two short, the longest
    assert chosen[0].shape[-1] < chosen[-1].shape[-1]
    model = random_model(load_preset("timeseries", {"encoder": {"in_channels": 12}, "data": {"window_size": 16}}))
    together = timeseries.model_vectors(model, chosen, "context")  # one padded batch
    for i, one in enumerate(chosen):
        alone = timeseries.model_vectors(model, [one], "context")
        for pooling in ("max", "mean"):
            np.testing.assert_allclose(together[pooling][i], alone[pooling][0], rtol=1e-4, atol=1e-5)
    raw = timeseries.raw_vectors(chosen, 20)
    assert raw.shape == (3, 12 * 20)
    np.testing.assert_allclose(raw[1].reshape(20, 12)[[0, -1]], chosen[1].T[[0, -1]], rtol=1e-6)  # ends kept
