"""``--set`` overrides of the demo's training config: the user's value is the one that trains.

Regression test of issue 11: ``cpcaudio demo --tiny --data DIR --set data.window_size=4096`` trained with
the window the demo derives from the dataset (20480 samples at 16 kHz) and said nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.demo.plan import DatasetInfo, make_plan
from cpcaudio.errors import UsageError

SPEECH_16K = DatasetInfo(Path("prepared"), sample_rate=16000, num_channels=1, audio=True, tasks=["phone", "speaker"])


def test_window_size_of_set_wins_over_the_window_derived_from_the_data():
    derived = make_plan("tiny", None, None, 0, "cpu", "prepared", SPEECH_16K)
    assert derived.config["data"]["window_size"] == 20480  # 1.28 s at the dataset's 16 kHz
    chosen = make_plan("tiny", None, None, 0, "cpu", "prepared", SPEECH_16K, ["data.window_size=4096"])
    assert chosen.config["data"]["window_size"] == 4096
    assert chosen.config["data"]["sample_rate"] == 16000 and chosen.config["encoder"]["in_channels"] == 1


def test_keys_the_demo_derives_are_refused_in_set():
    with pytest.raises(UsageError, match="sets data.sample_rate itself"):
        make_plan("tiny", None, None, 0, "cpu", "prepared", SPEECH_16K, ["data.sample_rate=8000"])
    with pytest.raises(UsageError, match="sets train.max_steps itself.*--steps"):
        make_plan("tiny", None, None, 0, "cpu", None, None, [" train.max_steps = 5"])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """A prepared synthetic corpus of 4 speakers and half a minute (phones and speakers to probe)."""
    from cpcaudio.data import prepare

    path = tmp_path_factory.mktemp("prepared") / "synthetic"
    prepare("synthetic", None, path, num_speakers=4, minutes=0.5, seed=0)
    return path


def test_demo_on_data_trains_with_the_window_size_given_with_set(small_dataset, tmp_path):
    out = tmp_path / "demo"
    arguments = ["demo", "--tiny", "--device", "cpu", "--steps", "2", "--data", str(small_dataset), "--out", str(out)]
    done = CliRunner().invoke(app, [*arguments, "--set", "data.window_size=4096"])
    assert done.exit_code == 0, done.output
    config = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert config["data"]["window_size"] == 4096
    assert "batch 8 x 0.256 s" in done.output  # the train stage's line says so too
