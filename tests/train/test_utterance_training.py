"""Training with an utterance-level objective (config ``utterance``): every loss and view, tiny runs.

Tones at 8 kHz for the crop and augment views; aeon's 6-channel BasicMotions (accelerometer and gyroscope)
for the channel groups, with a stride-1 encoder (the default 160x encoder gives no frame on 100 steps).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

import cpcaudio
from cpcaudio.augment import training_batches
from cpcaudio.augment.chain import AugmentationChain
from cpcaudio.augment.views import SecondView
from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.train import read_metrics, train

import helpers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLE_RATE = 8000
SECTIONS = {
    "encoder": {"hidden_dim": 16},
    "context": {"hidden_dim": 16},
    "predictor": {"num_steps": 2, "num_negatives": 4},
    "data": {"window_size": 1600, "batch_size": 4},
    "train": {"max_steps": 2, "validate_every": 2, "validation_batches": 1, "log_every": 1},
}
AUGMENT = {"enabled": True, "pitch_probability": 0.0, "reverb_probability": 0.5, "noise_probability": 0.8}
IMU_SETTINGS = [  # --set for BasicMotions: 6 channels, 100 steps per series, a tiny stride-1 encoder
    "encoder.kernel_sizes=[3,3]", "encoder.strides=[1,1]", "encoder.hidden_dim=16", "context.hidden_dim=16",
    "predictor.num_steps=2", "predictor.num_negatives=4", "data.window_size=64", "data.batch_size=4",
    "train.validate_every=2", "train.validation_batches=1", "train.log_every=1",
    "utterance.views=channels", "utterance.channel_groups=[[0,1,2],[3,4,5]]",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 speakers x 3 utterances of 0.6 s and 0.3 s (shorter than 2 windows, one shorter than a window)."""
    root = tmp_path_factory.mktemp("utterance_data")
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob"):
        (root / "source" / speaker).mkdir(parents=True)
        for index, seconds in enumerate((0.6, 0.6, 0.15)):
            signal = helpers.generated_signal(int(seconds * SAMPLE_RATE), rng, SAMPLE_RATE)
            soundfile.write(root / "source" / speaker / f"{speaker}_{index}.wav", signal, SAMPLE_RATE, subtype="PCM_16")
    prepare("folder", root / "source", root / "prepared", workers=1)
    return root / "prepared"


def config_for(**utterance):
    augment = AUGMENT if utterance.get("views") == "augment" else {}
    return helpers.tiny_config(SECTIONS, utterance=utterance, augment=augment)


def check_records(out: Path, steps: int) -> None:
    train_records, valid = read_metrics(out, "train"), read_metrics(out, "valid")
    assert [r["step"] for r in train_records] == list(range(1, steps + 1))
    for record in train_records + valid:
        assert math.isfinite(record["loss"]) and math.isfinite(record["utterance_loss"]), record
        assert record["utterance_loss"] > 0


@pytest.mark.parametrize(
    "utterance",
    [
        {"loss": "nt-xent", "views": "crop"},
        {"loss": "triplet", "views": "augment", "triplet_negative": "random", "pooling": "last"},
        {"loss": "margin", "views": "crop", "cpc": False, "projection_dim": 0},
        {"loss": "nt-xent", "views": "augment", "cpc": False},
    ],
    ids=["nt-xent-crop", "triplet-augment", "margin-alone", "nt-xent-augment-alone"],
)
def test_tiny_training_with_each_loss_and_view_has_finite_losses_and_extracts(dataset, tmp_path, utterance):
    out = tmp_path / "run"
    summary = train(dataset, out, config_for(**utterance))
    assert summary.steps == 2
    check_records(out, 2)
    model = cpcaudio.load(out / "last.pt", device="cpu")
    assert (model.heads is None) == (not utterance.get("cpc", True))
    features = model.extract(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), SAMPLE_RATE)
    assert features.frames.shape == (model.num_frames(SAMPLE_RATE // 2), 16)
    assert torch.isfinite(features.frames).all()


@pytest.mark.parametrize("views", ["crop", "augment"])
def test_a_resumed_run_follows_the_same_trajectory(dataset, tmp_path, views):
    config = config_for(loss="nt-xent", views=views).with_overrides(["train.max_steps=4", "train.checkpoint_every=1"])
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    train(dataset, reference, config)
    train(dataset, resumed, config.with_overrides(["train.max_steps=2"]))
    assert train(dataset, resumed, config, resume=True).start_step == 2
    expected, got = read_metrics(reference, "train"), read_metrics(resumed, "train")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["utterance_loss"] == pytest.approx(a["utterance_loss"], rel=1e-6)
    final, final_reference = torch.load(resumed / "last.pt"), torch.load(reference / "last.pt")
    for name, value in final_reference["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=1e-6, atol=1e-7)


def test_second_views_are_deterministic_crops_of_the_same_utterance_and_fresh_augmentations(dataset):
    prepared = PreparedDataset.open(dataset)
    sampler = WindowSampler(prepared, window_size=1600, batch_size=4, seed=3)
    batch = sampler.batch(5)
    crop = SecondView(sampler, "crop")(batch)
    assert torch.equal(crop.signal, batch.signal)
    assert torch.equal(SecondView(sampler, "crop")(batch).view_signal, crop.view_signal)  # a function of the step
    for row, utterance in enumerate(batch.utterance_index.tolist()):
        whole = torch.from_numpy(prepared.read(utterance, 0, int(prepared.lengths[utterance])))  # (C, samples)
        length = int(crop.view_lengths[row])
        view = crop.view_signal[row, :, :length]
        starts = [s for s in range(whole.shape[-1] - length + 1) if torch.equal(whole[:, s : s + length], view)]
        assert starts and length == min(1600, whole.shape[-1])  # a window of the same utterance
    assert not torch.equal(SecondView(sampler, "crop")(sampler.batch(6)).view_signal, sampler.batch(6).signal)

    chain = AugmentationChain(helpers.tiny_config(augment=AUGMENT).augment, SAMPLE_RATE)
    augmented = SecondView(sampler, "augment", chain)(batch)
    assert torch.equal(augmented.view_lengths, batch.lengths)
    first_view = chain.augment(batch, sampler.seed, sampler.rank)  # what the CPC context reads
    assert not torch.equal(augmented.view_signal, first_view) and not torch.equal(augmented.view_signal, batch.signal)
    assert torch.equal(SecondView(sampler, "augment", chain)(batch).view_signal, augmented.view_signal)


def test_loader_workers_make_the_same_views(dataset):
    config = config_for(loss="nt-xent", views="crop").with_overrides(["augment.enabled=true"])
    made = []
    for workers in (0, 1):
        sampler = WindowSampler(PreparedDataset.open(dataset), window_size=1600, batch_size=4, seed=1)
        with training_batches(sampler, config.with_overrides([f"data.num_workers={workers}"]), SAMPLE_RATE) as batches:
            made.append([next(batches) for _ in range(2)])
    for in_process, in_worker in zip(*made):
        assert in_process.view_signal is not None and in_process.context_signal is not None
        for name in ("signal", "context_signal", "view_signal", "view_lengths"):
            assert torch.equal(getattr(in_process, name), getattr(in_worker, name)), name


@pytest.mark.parametrize("loss", ["nt-xent", "triplet", "margin"])
def test_channel_groups_train_on_basic_motions_through_the_cli(basic_motions, tmp_path, loss):
    out = tmp_path / "run"
    settings = [item for assignment in IMU_SETTINGS + [f"utterance.loss={loss}"] for item in ("--set", assignment)]
    result = CliRunner().invoke(app, ["train", str(basic_motions), str(out), "--steps", "2", "--quiet", *settings])
    assert result.exit_code == 0, result.output
    check_records(out, 2)
    model = cpcaudio.load(out / "last.pt", device="cpu")
    assert model.config.encoder.in_channels == 6 and len(model.encoder.layers[0].blocks) == 2
    series = PreparedDataset.open(basic_motions).read(0, 0, 100)  # (6, 100)
    features = model.extract(series, 1, layer="all")
    assert features.frames.shape == (100, 32) and torch.isfinite(features.frames).all()
