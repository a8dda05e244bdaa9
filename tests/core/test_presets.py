"""Named config presets (``cpcaudio/configs/NAME.yaml``, ``cpcaudio train --config NAME``).

``paper.yaml`` must keep naming the CPC paper's configuration whatever the defaults become, so its values
are checked against the paper's numbers written here, never against ``CPCConfig()``.
Library: :mod:`cpcaudio.presets`.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import cpcaudio.train
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.errors import ConfigError
from cpcaudio.presets import available_presets, is_preset_name, preset_path, resolve_config_file
from cpcaudio.train import assemble_run_config

# The paper's configuration (van den Oord et al. 2018 as CPC_audio runs it), section by section.
PAPER = {
    "encoder": {
        "hidden_dim": 512, "kernel_sizes": (10, 8, 4, 4, 4), "strides": (5, 4, 2, 2, 2), "paddings": None,
        "normalization": "channel", "input_normalization": "sequence",
    },
    "context": {"kind": "gru", "hidden_dim": 256, "num_layers": 1},
    "predictor": {
        "num_steps": 12, "num_negatives": 128, "negative_sampling": "batch", "head": "linear", "queue_size": 0,
    },
    "optim": {
        "learning_rate": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "warmup_steps": 0,
        "schedule": "constant", "grad_clip": 0.0, "accumulate": 1,
    },
    "data": {"window_size": 20480, "batch_size": 8, "sampler": "same-speaker", "short_utterances": "pad"},
    "augment": {"enabled": False},
}  # fmt: skip
# Written out by paper.yaml although they do not matter for it (their feature is off in the paper).
INERT = {
    "predictor": {
        "head_hidden_dim", "head_attention_heads", "head_feedforward_dim", "head_dropout", "momentum", "queue_negatives",
    },
    "optim": {"step_size", "step_gamma"},
}
# Deliberately not in paper.yaml: taken from the dataset, or speed only.
NOT_WRITTEN = {"encoder": {"in_channels"}, "data": {"sample_rate", "num_workers"}}
FULLY_WRITTEN = ("encoder", "context", "predictor", "optim", "data")


def test_the_paper_preset_holds_the_papers_values():
    config = CPCConfig.load(preset_path("paper"))
    for section, values in PAPER.items():
        for key, value in values.items():
            assert getattr(getattr(config, section), key) == value, f"paper.yaml: {section}.{key}"
    assert math.prod(config.encoder.strides) == 160  # one frame per 10 ms at 16 kHz


def test_the_paper_preset_writes_out_every_field_so_new_defaults_do_not_leak_in():
    raw = yaml.safe_load(preset_path("paper").read_text())
    for section in FULLY_WRITTEN:
        fields = {f.name for f in dataclasses.fields(getattr(CPCConfig(), section))}
        expected = fields - NOT_WRITTEN.get(section, set())
        missing = sorted(expected - set(raw[section]))
        assert not missing, f"paper.yaml does not set {section}.{missing[0]}: write the paper's value there"
        assert set(raw[section]) <= set(PAPER[section]) | INERT.get(section, set()), (
            f"paper.yaml sets {section} keys this test does not check: add the paper's values to PAPER"
        )
    assert raw["augment"] == {"enabled": False}
    assert set(raw) == set(FULLY_WRITTEN) | {"augment"}  # train keeps the defaults


def test_preset_names_resolve_to_packaged_files_and_unknown_names_list_the_presets(tmp_path, monkeypatch):
    assert "paper" in available_presets()
    assert preset_path("paper").name == "paper.yaml" and preset_path("paper").is_file()
    with pytest.raises(ConfigError, match=r"unknown config preset 'papers'; available presets: .*paper"):
        preset_path("papers")
    monkeypatch.chdir(tmp_path)
    assert is_preset_name("paper") and not is_preset_name("paper.yaml") and not is_preset_name("configs/paper")
    assert resolve_config_file("paper") == preset_path("paper")
    (tmp_path / "paper").write_text("context: {hidden_dim: 64}\n")  # an existing file wins over the preset
    assert not is_preset_name("paper") and resolve_config_file("paper").resolve() == (tmp_path / "paper").resolve()
    assert preset_path("paper").name == "paper.yaml"  # the library function does not look at the cwd


def test_run_config_reads_the_preset_and_counts_its_keys_as_chosen(tmp_path):
    run = assemble_run_config(tmp_path / "run", "paper", ["optim.learning_rate=1e-3"])
    preset = CPCConfig.load(preset_path("paper"))
    assert run.config.optim.learning_rate == 1e-3  # --set comes after the file
    assert dataclasses.replace(run.config, optim=preset.optim) == preset
    assert {"encoder.hidden_dim", "data.sampler", "augment.enabled"} <= run.explicit_keys
    assert "data.sample_rate" not in run.explicit_keys  # still taken from the dataset


def test_cli_config_paper_reaches_training_and_a_bad_name_fails_in_one_line(tmp_path, monkeypatch):
    seen = []

    def fake_train(dataset, out, config, **options):
        seen.append(config)
        return SimpleNamespace(is_main=False)

    monkeypatch.setattr(cpcaudio.train, "train", fake_train)
    runner = CliRunner()
    ran = runner.invoke(app, ["train", str(tmp_path / "data"), str(tmp_path / "run"), "--config", "paper"])
    assert ran.exit_code == 0, ran.output
    assert seen == [CPCConfig.load(preset_path("paper"))]

    bad = runner.invoke(app, ["train", str(tmp_path / "data"), str(tmp_path / "run"), "--config", "papr"])
    assert bad.exit_code == 2 and len(seen) == 1
    (line,) = bad.output.strip().splitlines()
    assert line.startswith("error: unknown config preset 'papr'; available presets: ") and "paper" in line
    helped = runner.invoke(app, ["train", "--help"])
    assert helped.exit_code == 0 and "preset" in helped.output and "paper" in helped.output
