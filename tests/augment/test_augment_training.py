"""Augmentation in the model and the training loop: past-only leaves the targets clean; exact resume with
augmentation, across a change of loader workers; config errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import helpers
from augment_corpus import RATE, WINDOW, make_corpus
from cpcaudio.augment import AugmentationChain, TrainingBatches
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import PreparedDataset, WindowSampler
from cpcaudio.errors import ConfigError
from cpcaudio.model import CPCModel
from cpcaudio.train import read_metrics, train
from cpcaudio.train.seeding import draw_negatives

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AUGMENT = {
    "enabled": True, "pitch_probability": 0.5, "reverb_probability": 0.5, "noise_probability": 0.5,
    "bandreject_probability": 0.5, "dropout_probability": 0.5,
}  # fmt: skip


def run_config(max_steps: int, **sections) -> CPCConfig:
    base = {
        "data": {"window_size": WINDOW, "batch_size": 4, "sampler": "uniform"},
        "train": {"max_steps": max_steps, "validate_every": 2, "validation_batches": 1, "log_every": 1},
        "augment": AUGMENT,
    }
    merged = helpers.merge_sections(helpers.merge_sections(helpers.TINY_SECTIONS, **base), **sections)
    return CPCConfig.from_dict(merged)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("augment_training"))


def test_past_only_augmentation_leaves_the_future_targets_untouched(dataset):
    torch.manual_seed(0)
    model = CPCModel(run_config(1))
    sampler = WindowSampler(PreparedDataset.open(dataset), window_size=WINDOW, batch_size=4, mode="uniform")
    batch = next(TrainingBatches(sampler, AugmentationChain(model.config.augment, RATE)))
    clean, augmented = batch.signal, batch.context_signal
    assert augmented is not None and not torch.equal(clean, augmented)
    negatives = draw_negatives(model, batch.lengths, WINDOW, seed=1, device=torch.device("cpu"))
    past = model(clean, batch.lengths, negative_indices=negatives, context_signal=augmented)
    plain = model(clean, batch.lengths, negative_indices=negatives)
    assert torch.equal(past.latents, plain.latents)  # z_{t+k} and the negatives: the clean signal's
    assert torch.equal(past.latents, model.encode(clean, batch.lengths))
    assert torch.equal(past.context, model.context(model.encode(augmented, batch.lengths)))  # c_t: augmented
    assert not torch.allclose(past.context, plain.context) and past.loss != plain.loss
    with pytest.raises(ValueError, match="context_signal must have the signal's shape"):
        model(clean, batch.lengths, context_signal=augmented[:, :, :-1])


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", weights_only=True)["model"]


def test_same_seed_same_augmented_run_before_and_after_a_resume_with_other_workers(dataset, tmp_path):
    reference = tmp_path / "reference"
    train(dataset, reference, run_config(4))
    resumed = tmp_path / "resumed"
    train(dataset, resumed, run_config(2))
    summary = train(dataset, resumed, run_config(4, data={"num_workers": 2}), resume=True)
    assert summary.start_step == 2 and summary.steps == 4
    expected, got = final_weights(reference), final_weights(resumed)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    losses = lambda out: [r["loss"] for r in read_metrics(out, "train")]  # noqa: E731
    assert losses(resumed) == losses(reference)
    # The augmentation did change the run (so the comparison above could fail).
    plain = tmp_path / "plain"
    train(dataset, plain, run_config(4, augment={"enabled": False}))
    assert losses(plain)[0] != losses(reference)[0]
    assert [r["loss"] for r in read_metrics(plain, "valid")] != [r["loss"] for r in read_metrics(reference, "valid")]


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("augment.pitch_probability=1.5", "augment.pitch_probability must be a number inside [0, 1], got 1.5"),
        ("augment.pitch_cents=[300, -300]", "augment.pitch_cents must be a range [low, high] with low <= high"),
        ("augment.reverb_wet=[0.2, 1.5]", "augment.reverb_wet must be a range"),
        ("augment.target=future", "augment.target must be one of past, both"),
        ("augment.noise_snr_db=[10]", "augment.noise_snr_db must have 2 entries"),
        ("augment.dropout_fraction=[0.1, 0.95]", "inside [0, 0.9]"),
        ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ],
)
def test_config_validation_errors_are_one_line(assignment, fragment):
    with pytest.raises(ConfigError) as error:
        CPCConfig().with_overrides([assignment])
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_cli_refuses_a_bad_augment_value_in_one_line(dataset, tmp_path):
    arguments = ["train", str(dataset), str(tmp_path / "out"), "--set", "augment.noise_probability=-0.1"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "augment.noise_probability must be a number inside [0, 1]" in lines[0], result.output
    assert CPCConfig().with_overrides(["augment.enabled=true", "data.num_workers=2"]).data.num_workers == 2
