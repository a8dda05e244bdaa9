"""Training with a MoCo-style queue of negatives (``predictor.queue_size``): finite losses, one momentum
update per optimiser step, an exact resume with the queue in ``last.pt``, and old queue-less checkpoints.

Tiny runs (32 channels, K = 2, 8 negatives, 0.2 s windows at 8 kHz, 4 windows a batch), single-threaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import cpcaudio
from cpcaudio.data import prepare
from cpcaudio.model import CPCModel
from cpcaudio.train import read_metrics, train
from cpcaudio.train.checkpoint import load_checkpoint, save_checkpoint

import helpers

SAMPLE_RATE = 8000
QUEUE = {"queue_size": 64}  # 8 keys a batch (64 // QUEUE_SPAN) out of its 4 x 10 frames

SECTIONS = {
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 2, "num_negatives": 8, "negative_sampling": "batch"},
    "data": {"window_size": 1600, "batch_size": 4, "sampler": "uniform"},
    "optim": {"learning_rate": 1e-3, "warmup_steps": 0, "grad_clip": 0.0},
    "train": {"max_steps": 4, "validate_every": 2, "validation_batches": 1, "log_every": 1},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def queue_config(**sections):
    return helpers.tiny_config(SECTIONS, **helpers.merge_sections({"predictor": QUEUE}, **sections))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """3 speakers x 4 utterances of 1 s of noisy tones at 8 kHz, prepared (train/test by the folder rule)."""
    root = tmp_path_factory.mktemp("queue_data")
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for speaker in ("ann", "bob", "cid"):
        (root / "source" / speaker).mkdir(parents=True)
        for index in range(4):
            tone = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 1500) * t) + 0.05 * rng.standard_normal(SAMPLE_RATE)
            soundfile.write(root / "source" / speaker / f"{speaker}_{index}.wav", tone, SAMPLE_RATE, subtype="PCM_16")
    prepare("folder", root / "source", root / "prepared", workers=1)
    return root / "prepared"


def train_losses(out_dir: Path) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in read_metrics(out_dir, "train")}


def test_training_with_a_queue_has_finite_losses_and_one_momentum_update_per_step(dataset, tmp_path, monkeypatch):
    calls = []
    original = CPCModel.momentum_update
    monkeypatch.setattr(CPCModel, "momentum_update", lambda self: (calls.append(1), original(self)))
    config = queue_config(predictor={"queue_negatives": 16}, optim={"accumulate": 2}, train={"max_steps": 3})
    train(dataset, tmp_path / "run", config)
    losses = train_losses(tmp_path / "run")
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(loss) for loss in losses.values())
    assert len(calls) == 3  # once per optimiser step, not per micro-batch
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert int(last["model"]["momentum.queue.count"]) == 3 * 2 * 8  # 3 steps x 2 micro-batches x 8 keys
    model = cpcaudio.load(tmp_path / "run" / "last.pt", device="cpu")  # extraction-ready, queue and all
    assert model.momentum.queue.filled == 48 and model.extract(np.zeros(4000), SAMPLE_RATE).frames.shape[0] > 0
    encoder = {name: value for name, value in model.encoder.named_parameters()}
    moved = [not torch.equal(model.momentum.encoder.get_buffer(name), encoder[name]) for name in encoder]
    assert any(moved) and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_resume_with_a_queue_is_exact(dataset, tmp_path):
    config = queue_config()
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    train(dataset, reference, config)
    train(dataset, out, queue_config(train={"max_steps": 2}))
    assert int(load_checkpoint(out / "last.pt")["model"]["momentum.queue.count"]) == 16
    summary = train(dataset, out, config, resume=True)
    assert summary.start_step == 2 and summary.steps == 4
    assert train_losses(out) == train_losses(reference)  # bit for bit
    expected, resumed = load_checkpoint(reference / "last.pt")["model"], load_checkpoint(out / "last.pt")["model"]
    assert expected.keys() == resumed.keys() and int(resumed["momentum.queue.count"]) == 32
    for key in expected:  # weights, momentum encoder, queue latents, pointer and count
        assert torch.equal(expected[key], resumed[key]), key


def test_checkpoints_without_a_queue_still_load_and_resume(dataset, tmp_path):
    out = tmp_path / "old"
    train(dataset, out, helpers.tiny_config(SECTIONS, train={"max_steps": 2}))
    record = load_checkpoint(out / "last.pt")
    assert not any(key.startswith("momentum.") for key in record["model"])
    for key in ("queue_size", "momentum", "queue_negatives"):  # as written before the queue existed
        del record["config"]["predictor"][key]
    save_checkpoint(out / "last.pt", record)
    model = cpcaudio.load(out / "last.pt", device="cpu")
    assert model.momentum is None and model.config.predictor.queue_size == 0
    summary = train(dataset, out, helpers.tiny_config(SECTIONS), resume=True)
    assert summary.start_step == 2 and summary.steps == 4
