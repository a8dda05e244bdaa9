"""``cpcaudio prepare`` and ``cpcaudio info`` through typer's CliRunner, failure paths included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import shared_data

from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset

runner = CliRunner()


def _timit() -> Path:
    return shared_data("timit_sample")


def test_prepare_and_info(tmp_path):
    out = tmp_path / "timit"
    arguments = ["prepare", "timit", str(_timit()), str(out), "--limit", "12", "--fold-39", "--workers", "1", "-q"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    dataset = PreparedDataset.open(out)
    assert len(dataset) == 12 and len(dataset.phone_vocabulary) == 39
    assert dataset.meta["command"].startswith(f"cpcaudio prepare timit {_timit()} {out}")
    assert "--limit 12" in dataset.meta["command"] and "--fold-39" in dataset.meta["command"]

    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 utterances, 2 speakers" in result.output
    assert "split train" in result.output and "split test" in result.output
    assert "frame labels phone: 39 symbols, one per 160 samples" in result.output
    assert "label gender" in result.output

    result = runner.invoke(app, ["info", str(out), "--json"])
    summary = json.loads(result.output)
    assert summary["utterances"] == 12 and summary["speakers"] == 2
    assert abs(summary["hours"] - dataset.total_samples / 16000 / 3600) < 1e-9
    frames = summary["frame_labels"]
    assert sum(frames["counts"].values()) + frames["unlabelled"] == int(dataset.label_counts.sum())


def test_prepare_prints_summary_and_skips(tmp_path):
    out = tmp_path / "timit"
    result = runner.invoke(app, ["prepare", "timit", str(_timit()), str(out), "--on-error", "skip", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "prepared 79 utterances, 8 speakers" in result.output
    assert "skipped: 1 file(s)" in result.output and "si1367.phn: labels end at" in result.output


def test_prepare_failure_paths(tmp_path):
    out = tmp_path / "timit"
    result = runner.invoke(app, ["prepare", "timit", str(_timit()), str(out), "--workers", "1", "-q"])
    assert result.exit_code == 3
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "si1367.phn" in lines[0] and "--on-error skip" in lines[0]
    assert "Traceback" not in result.output and not out.exists()

    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = runner.invoke(app, ["prepare", "timit", str(_timit()), str(out), "-q"])
    assert result.exit_code == 2 and "not empty; pass --overwrite" in result.output

    result = runner.invoke(app, ["prepare", "fsdd", str(_timit()), str(tmp_path / "x"), "--fold-39", "-q"])
    assert result.exit_code == 2 and "'fold_39' does not apply to the fsdd kind" in result.output

    result = runner.invoke(app, ["prepare", "nonsense", str(_timit()), str(tmp_path / "y"), "-q"])
    assert result.exit_code == 2 and "unknown source kind 'nonsense'" in result.output

    result = runner.invoke(app, ["prepare", "timit", str(_timit()), "-q"])
    assert result.exit_code == 2 and "missing OUT" in result.output

    result = runner.invoke(app, ["info", str(tmp_path / "nothing")])
    assert result.exit_code == 3 and "no such dataset directory" in result.output


def test_prepare_uea_by_name(tmp_path):
    pytest.importorskip("aeon.datasets")
    out = tmp_path / "bm"
    result = runner.invoke(app, ["prepare", "uea", "BasicMotions", str(out), "--sample-rate", "10", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", str(out)])
    assert "timeseries, 10 steps/s (declared), 6 channel(s)" in result.output
    assert "label class  4 values: badminton:20 running:20 standing:20 walking:20" in result.output
