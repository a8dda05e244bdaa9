"""The wall-clock budget (``train.max_minutes``, ``cpcaudio train --minutes``): where it stops, what it leaves.

Deterministic, not timing-based: the budget's clock (:func:`cpcaudio.train.budget.clock`) is replaced by a
fake one that advances :data:`STEP_SECONDS` inside every training step, so step n ends at n * 25 s.
Library: :mod:`cpcaudio.train.budget`, :mod:`cpcaudio.train.loop`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import prepare
from cpcaudio.train import budget, loop, read_metrics, summary_text, train

from badfiles import tiny_run_sections, write_two_speaker_tones

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 8000
STEP_SECONDS = 25.0  # fake wall time of one training step
BUDGET_MINUTES = 1.0  # 60 s: steps 1, 2 end at 25 s, 50 s (< 60), step 3 at 75 s: the budget ends the run
STEPS_IN_BUDGET = math.ceil(60 * BUDGET_MINUTES / STEP_SECONDS)  # 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny 8 kHz dataset: two speakers, three 0.4 s tones each."""
    root = tmp_path_factory.mktemp("budget")
    write_two_speaker_tones(root / "source", RATE)
    prepare("folder", root / "source", root / "dataset", workers=1)
    return root / "dataset"


@pytest.fixture
def slow_steps(monkeypatch):
    """Every training step takes STEP_SECONDS on the budget's (fake) clock; returns the clock's state."""
    now = {"seconds": 1000.0}
    monkeypatch.setattr(budget, "clock", lambda: now["seconds"])
    step = loop._Trainer._train_step

    def timed_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        now["seconds"] += STEP_SECONDS
        return result

    monkeypatch.setattr(loop._Trainer, "_train_step", timed_step)
    return now


def budget_config(**train_section) -> CPCConfig:
    """A tiny model that would train 50 steps, validating only every 100 (so only the end validates)."""
    sections = tiny_run_sections(RATE)
    sections["train"] = {**sections["train"], "max_steps": 50, "validate_every": 100, **train_section}
    return CPCConfig.from_dict(sections)


def test_the_budget_stops_within_one_step_and_leaves_a_resumable_last_pt(dataset, tmp_path, slow_steps):
    out = tmp_path / "run"
    summary = train(dataset, out, budget_config(max_minutes=BUDGET_MINUTES), command="cpcaudio train d r")

    # The first step whose end reaches 60 s: 75 s, less than one step past the budget.
    assert summary.steps == STEPS_IN_BUDGET and summary.budget_reached and summary.max_minutes == BUDGET_MINUTES
    assert 60 * BUDGET_MINUTES <= summary.steps * STEP_SECONDS < 60 * BUDGET_MINUTES + STEP_SECONDS
    assert "time budget of 1 min reached after 3 steps" in summary_text(summary)
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["step"] == STEPS_IN_BUDGET and last["kind"] == "last"
    assert [r["step"] for r in read_metrics(out, "train")] == [1, 2, 3]  # every step logged (log_every 1)
    assert [r["step"] for r in read_metrics(out, "valid")] == [3]  # the closing validation, as at max_steps
    assert summary.last_validation is not None and summary.last_validation["step"] == 3

    # --resume gets the whole budget again (it is in the checkpoint's config) and continues from step 3
    # on the trajectory of a run that was never stopped.
    resumed = train(dataset, out, resume=True)
    assert (resumed.start_step, resumed.steps, resumed.budget_reached) == (3, 6, True)
    assert "time budget of 1 min reached after 3 steps" in summary_text(resumed)
    reference = train(dataset, tmp_path / "reference", budget_config(max_steps=6))
    assert not reference.budget_reached and reference.steps == 6
    stopped = {r["step"]: r["loss"] for r in read_metrics(out, "train")}
    straight = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "reference", "train")}
    assert list(stopped) == [1, 2, 3, 4, 5, 6]
    assert stopped == straight


def test_max_steps_still_bounds_a_budgeted_run_and_zero_is_off(dataset, tmp_path, slow_steps):
    capped = train(dataset, tmp_path / "capped", budget_config(max_minutes=BUDGET_MINUTES, max_steps=2))
    assert (capped.steps, capped.budget_reached) == (2, False)
    assert "time budget" not in summary_text(capped)
    off = train(dataset, tmp_path / "off", budget_config(max_steps=5))  # 125 fake seconds, no budget
    assert (off.steps, off.budget_reached) == (5, False)


def test_cli_minutes_sets_the_config_and_the_summary_says_how_many_steps_fit(dataset, tmp_path, slow_steps):
    config_file = tmp_path / "tiny.yaml"
    budget_config().save(config_file)
    out = tmp_path / "run"
    runner = CliRunner()
    common = ["train", str(dataset), str(out), "--device", "cpu"]
    result = runner.invoke(app, [*common, "--config", str(config_file), "--minutes", "1"])
    assert result.exit_code == 0, result.output
    assert "time budget of 1 min reached after 3 steps" in result.output
    assert "steps 0 -> 50 or 1 min, whichever comes first" in result.output
    assert CPCConfig.load(out / "config.yaml").train.max_minutes == 1.0

    # A resume may change the budget (here: off), so --steps alone ends the run.
    resumed = runner.invoke(app, [*common, "--resume", "--minutes", "0", "--steps", "4", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
    assert CPCConfig.load(out / "config.yaml").train.max_minutes == 0.0

    refused = runner.invoke(app, [*common, "--minutes", "-2", "--overwrite"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines() == [
        "error: train.max_minutes must be >= 0, got -2.0"
    ], refused.output
