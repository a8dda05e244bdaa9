"""``cpcaudio train`` on time series picks the ``timeseries`` preset by itself (cpcaudio.train.auto_preset):
on a non-audio dataset with no encoder key set, sized to the series, and says so; never on audio, and
never when the user chose an encoder (``--set encoder.*``, a config file that sets one, ``--config paper``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import cpcaudio.train
from badfiles import prepare_two_speaker_tones
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import prepare
from cpcaudio.geometry import num_frames
from cpcaudio.presets import available_presets, preset_path
from cpcaudio.train import assemble_run_config
from cpcaudio.train.auto_preset import STEPS_SHARE

pytest.importorskip("aeon.datasets", reason="the uea kind needs aeon (pip install aeon)")

PRESET = CPCConfig.load(preset_path("timeseries"))


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """A .ts set of 2-channel series of 30, 40, 50 and 60 steps (train) and one of 45 (test)."""
    root = tmp_path_factory.mktemp("toy_ts")
    header = (
        "@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength false\n"
        "@classLabel true a b\n@data\n"
    )
    rng = np.random.default_rng(0)

    def line(length: int, label: str) -> str:
        channels = rng.normal(size=(2, length)).round(3)
        return ":".join(",".join(map(str, row)) for row in channels) + f":{label}\n"

    (root / "src").mkdir()
    (root / "src" / "Toy_TRAIN.ts").write_text(header + "".join(line(n, "ab"[n % 20 // 10]) for n in (30, 40, 50, 60)))
    (root / "src" / "Toy_TEST.ts").write_text(header + line(45, "a"))
    prepare("uea", root / "src", root / "toy")
    return root / "toy"


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    return prepare_two_speaker_tones(tmp_path_factory.mktemp("tones"), 8000)


def frames(config: CPCConfig, samples: int) -> int:
    encoder = config.encoder
    return int(num_frames(samples, encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings()))


def test_the_preset_ships_a_stride_one_encoder_that_keeps_every_step():
    assert "timeseries" in available_presets()
    assert set(PRESET.encoder.strides) == {1} and frames(PRESET, 100) == 100


def test_a_time_series_dataset_gets_the_preset_sized_to_its_series(series, tmp_path):
    run = assemble_run_config(tmp_path / "run", dataset=series)
    config = run.config
    assert config.encoder.input_normalization == "none"  # random levels: not z-normalised one by one
    assert (replace(config.encoder, input_normalization="sequence"), config.context) == (PRESET.encoder, PRESET.context)
    assert config.optim == PRESET.optim and config.data.sampler == PRESET.data.sampler
    assert config.utterance == PRESET.utterance and PRESET.utterance.views == "crop"
    assert config.data.window_size == 22  # half the median training series (30, 40, 50, 60): two crops differ
    assert config.predictor.num_steps == min(PRESET.predictor.num_steps, frames(config, 22) // STEPS_SHARE)
    assert run.explicit_keys == frozenset()  # the preset is not the user's choice: in_channels still follows the data
    assert "'timeseries' preset" in run.note and "data.window_size=22" in run.note


def test_basic_motions_windows_hold_half_a_series_and_keep_its_levels(basic_motions, tmp_path):
    run = assemble_run_config(tmp_path / "run", overrides=["optim.learning_rate=3e-3"], dataset=basic_motions)
    assert run.config.data.window_size == 50 and run.config.optim.learning_rate == 3e-3  # --set still wins
    assert run.config.encoder.kernel_sizes == PRESET.encoder.kernel_sizes
    assert run.config.encoder.input_normalization == "none"  # accelerometer levels carry the class
    assert "median training series 100 samples" in run.note and "input_normalization=none" in run.note


def test_series_z_normalised_one_by_one_get_standardised_windows(tmp_path):
    out = tmp_path / "GunPoint"
    prepare("uea", "GunPoint", out)  # UCR: every series has mean 0 and standard deviation 1
    run = assemble_run_config(tmp_path / "run", dataset=out)
    assert run.config.encoder.input_normalization == "sequence" and "input_normalization=sequence" in run.note
    assert run.config.data.window_size == 75


def test_a_window_the_user_sets_is_kept_and_sizes_k(series, tmp_path):
    run = assemble_run_config(tmp_path / "run", overrides=["data.window_size=16"], dataset=series)
    assert run.config.data.window_size == 16
    assert run.config.predictor.num_steps == max(1, frames(run.config, 16) // STEPS_SHARE)
    chosen = assemble_run_config(tmp_path / "run", overrides=["predictor.num_steps=3"], dataset=series)
    assert chosen.config.predictor.num_steps == 3 and chosen.config.data.window_size == 22
    whole = assemble_run_config(tmp_path / "run", overrides=["utterance.loss=none"], dataset=series)
    assert whole.config.data.window_size == 45  # no crops to tell apart: a window holds the median series


@pytest.mark.parametrize(
    "overrides, config_file",
    [(["encoder.hidden_dim=32"], None), ([], "paper"), ([], "file")],
    ids=["set-encoder", "config-paper", "file-with-encoder"],
)
def test_an_encoder_chosen_by_the_user_turns_the_preset_off(series, tmp_path, overrides, config_file):
    if config_file == "file":
        config_file = tmp_path / "mine.yaml"
        config_file.write_text("encoder: {strides: [1, 1], kernel_sizes: [3, 3]}\n")
    run = assemble_run_config(tmp_path / "run", config_file, overrides, dataset=series)
    assert run.note is None
    assert run.config.data.window_size != 22 and run.config.encoder.kernel_sizes != PRESET.encoder.kernel_sizes


def test_a_file_without_encoder_keys_applies_over_the_preset(series, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("context: {hidden_dim: 24}\n")
    run = assemble_run_config(tmp_path / "run", mine, dataset=series)
    assert run.config.context.hidden_dim == 24 and run.config.encoder.kernel_sizes == PRESET.encoder.kernel_sizes
    assert run.note


def test_audio_and_unreadable_paths_keep_the_defaults(audio, tmp_path):
    for dataset in (audio, tmp_path / "no_such_dataset"):
        run = assemble_run_config(tmp_path / "run", dataset=dataset)
        assert run.config == CPCConfig() and run.note is None


def test_the_cli_trains_with_the_preset_and_logs_one_line(series, audio, tmp_path, monkeypatch):
    seen = []

    def fake_train(dataset, out, config, **options):
        seen.append(config)
        return SimpleNamespace(is_main=False)

    monkeypatch.setattr(cpcaudio.train, "train", fake_train)
    runner = CliRunner()
    ran = runner.invoke(app, ["train", str(series), str(tmp_path / "run"), "--steps", "5"])
    assert ran.exit_code == 0, ran.output
    (line,) = [text for text in ran.output.splitlines() if "preset" in text]
    assert line.startswith("time series (median training series 45 samples): using the 'timeseries' preset")
    assert seen[-1].encoder.kernel_sizes == PRESET.encoder.kernel_sizes and seen[-1].train.max_steps == 5
    quiet = runner.invoke(app, ["train", str(series), str(tmp_path / "run"), "--quiet"])
    assert quiet.exit_code == 0 and "preset" not in quiet.output
    on_audio = runner.invoke(app, ["train", str(audio), str(tmp_path / "run")])
    assert on_audio.exit_code == 0 and "preset" not in on_audio.output and seen[-1] == CPCConfig()


def test_short_variable_length_series_keep_a_whole_series_window_and_a_small_k(tmp_path):
    out = tmp_path / "JapaneseVowels"
    prepare("uea", "JapaneseVowels", out)  # 7 to 26 steps, median 15
    run = assemble_run_config(tmp_path / "run", dataset=out)
    assert run.config.data.window_size == 15  # halving would go under 16 samples: the median series whole
    assert run.config.predictor.num_steps == 15 // STEPS_SHARE
