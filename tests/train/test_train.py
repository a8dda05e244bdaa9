"""The training loop: files and checkpoints, exact resume after SIGKILL, DDP equivalence, learning, CLI.

Every run is tiny (32-channel encoder, K = 2, 8 negatives, 0.2 s windows at 8 kHz) and single-threaded,
so the whole file takes well under two minutes on two busy cores. Library: :mod:`cpcaudio.train`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

import cpcaudio
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig, OptimConfig
from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.errors import ConfigError, UsageError
from cpcaudio.train import draw_negatives, initial_model, negative_seed, read_metrics, train
from cpcaudio.train.checkpoint import load_checkpoint
from cpcaudio.train.optim import build_optimizer, build_scheduler, learning_rate_multiplier

import helpers

SAMPLE_RATE = 8000
WINDOW = 1600  # 0.2 s at 8 kHz: 10 encoder frames

TRAIN_SECTIONS = {
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 2, "num_negatives": 8, "negative_sampling": "batch"},
    "data": {"window_size": WINDOW, "batch_size": 4, "sampler": "uniform"},
    "optim": {"learning_rate": 2e-4, "warmup_steps": 0, "grad_clip": 0.0},
    "train": {"max_steps": 4, "validate_every": 2, "validation_batches": 2, "log_every": 1},
}


def train_config(**sections) -> CPCConfig:
    """A seconds-sized model (:data:`TRAIN_SECTIONS`); ``sections`` override or extend the given sections."""
    return helpers.tiny_config(TRAIN_SECTIONS, **sections)


def tone_sequence(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Piecewise tones of 50-150 ms with a little noise (float32, (time,))."""
    out = np.zeros(num_samples, dtype=np.float32)
    position = 0
    while position < num_samples:
        length = min(int(rng.integers(SAMPLE_RATE // 20, SAMPLE_RATE // 7)), num_samples - position)
        frequency = rng.uniform(100, 1500)
        t = np.arange(length) / SAMPLE_RATE
        out[position : position + length] = 0.4 * np.sin(2 * np.pi * frequency * t)
        position += length
    return out + 0.01 * rng.standard_normal(num_samples).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A prepared 8 kHz dataset: 3 speakers x 5 utterances of 1 s, split train/test by the folder rule."""
    root = tmp_path_factory.mktemp("train_data")
    source = root / "source"
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob", "cid"):
        (source / speaker).mkdir(parents=True)
        for index in range(5):
            path = source / speaker / f"{speaker}_{index}.wav"
            soundfile.write(path, tone_sequence(SAMPLE_RATE, rng), SAMPLE_RATE, subtype="PCM_16")
    prepare("folder", source, root / "prepared", workers=1)
    return root / "prepared"


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded torch: fast on busy machines and the same arithmetic as the subprocesses."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train_losses(out_dir: Path) -> dict[int, float]:
    records = read_metrics(out_dir, "train")
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate train records in {out_dir}: {steps}"
    return {r["step"]: r["loss"] for r in records}


# ---- optimiser and schedule -------------------------------------------------------------------------


def test_schedule_warmup_then_cosine_and_step():
    cosine = learning_rate_multiplier(OptimConfig(warmup_steps=4, schedule="cosine"), max_steps=14)
    assert [cosine(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cosine(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert cosine(14) == pytest.approx(0.0, abs=1e-12)
    step = learning_rate_multiplier(OptimConfig(warmup_steps=0, schedule="step", step_size=3, step_gamma=0.5), max_steps=10)
    assert [step(i) for i in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]

    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([parameter], OptimConfig(learning_rate=1.0, warmup_steps=2))
    scheduler = build_scheduler(optimizer, OptimConfig(learning_rate=1.0, warmup_steps=2), max_steps=5)
    rates = []
    for _ in range(3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [0.5, 1.0, 1.0]
    assert type(optimizer) is torch.optim.Adam
    assert type(build_optimizer([parameter], OptimConfig(weight_decay=0.01))) is torch.optim.AdamW


# ---- one run: files, checkpoints, best ----------------------------------------------------------------


def test_run_writes_metrics_logs_and_loadable_checkpoints(dataset, tmp_path):
    out = tmp_path / "run"
    # A far too large learning rate: validation loss jumps after step 1 and wobbles (down at step 3 but
    # not below step 1), so "best" is neither "last" nor "better than the previous validation".
    config = train_config(optim={"learning_rate": 0.3}, train={"max_steps": 4, "validate_every": 1})
    events = []
    summary = train(dataset, out, config, progress=events.append, command="cpcaudio train x y")

    assert summary.steps == 4 and summary.start_step == 0 and summary.is_main
    records = read_metrics(out)
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    for record in train_records:
        assert set(record) >= {"step", "loss", "accuracy", "throughput", "lr", "grad_norm"}
        assert len(record["accuracy"]) == 2 and record["throughput"] > 0 and math.isfinite(record["loss"])
    validations = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in validations] == [1, 2, 3, 4]

    # The resolved config: sample rate taken from the 8 kHz dataset (the default 16000 was not chosen).
    assert CPCConfig.load(out / "config.yaml").data.sample_rate == SAMPLE_RATE
    assert (out / "command.txt").read_text() == "cpcaudio train x y\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["step"] == 4 and last["format_version"] == 1 and last["package_version"] == cpcaudio.__version__
    assert set(last) >= {"config", "model", "optimizer", "scheduler", "sampler", "rng", "best", "world_size"}
    assert set(last["rng"][0]) >= {"python", "numpy", "torch"}
    assert last["optimizer"]["state"], "the optimiser state must be saved, not empty"
    losses = [r["loss"] for r in validations]
    best_index = int(np.argmin(losses))
    assert best_index != len(losses) - 1, "test needs a run whose last validation is not its best"
    assert any(losses[i] < losses[i - 1] and losses[i] > min(losses[:i]) for i in range(1, len(losses))), losses
    assert best["step"] == validations[best_index]["step"] == last["best"]["step"] == summary.best_step
    assert best["validation"]["loss"] == pytest.approx(losses[best_index])
    assert [r.get("best") for r in validations] == [
        losses[i] < min(losses[:i], default=math.inf) for i in range(len(losses))
    ]

    model = cpcaudio.load(out / "best.pt", device="cpu")
    assert not model.training and model.config.data.sample_rate == SAMPLE_RATE
    for name, value in model.state_dict().items():
        assert torch.equal(value, best["model"][name])
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])

    kinds = [event.kind for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("step") == 4


def test_config_must_match_the_dataset_and_runs_are_not_clobbered(dataset, tmp_path):
    with pytest.raises(ConfigError, match="data.sample_rate=16000 but the dataset has 8000"):
        train(dataset, tmp_path / "a", train_config(), explicit_keys={"data.sample_rate"})
    with pytest.raises(ConfigError, match="encoder.in_channels=2 but the dataset has 1"):
        train(dataset, tmp_path / "a", train_config(encoder={"in_channels": 2}))

    out = tmp_path / "b"
    train(dataset, out, train_config(train={"max_steps": 1}))
    with pytest.raises(UsageError, match="--resume"):
        train(dataset, out, train_config(train={"max_steps": 2}))
    with pytest.raises(ConfigError, match="cannot change context.hidden_dim when resuming"):
        train(dataset, out, train_config(context={"hidden_dim": 16}), resume=True)
    summary = train(dataset, out, train_config(train={"max_steps": 2}), resume=True)
    assert (summary.start_step, summary.steps) == (1, 2)
    assert (out / "command.txt").read_text().count("\n") == 2  # one line per invocation

    # Epochs: the 12 training utterances hold 96000 samples, 6400 per step -> 15 steps per epoch.
    by_epochs = train(dataset, tmp_path / "c", train_config(train={"max_epochs": 0.2, "max_steps": 99}))
    assert by_epochs.max_steps == by_epochs.steps == 3


# ---- exact resume after SIGKILL ---------------------------------------------------------------------

KILLED_RUN = """
import json, sys, time
from cpcaudio.config import CPCConfig
from cpcaudio.train import train

def slow_down(event):  # pace the run so that the test can kill it in the middle
    if event.kind == "step":
        time.sleep(0.25)

train(sys.argv[1], sys.argv[2], CPCConfig.from_dict(json.loads(sys.argv[3])), progress=slow_down, resume=True)
"""


def test_run_killed_with_sigkill_resumes_on_the_same_trajectory(dataset, tmp_path):
    config = train_config(
        optim={"warmup_steps": 2, "schedule": "cosine", "learning_rate": 1e-3, "grad_clip": 1.0, "accumulate": 2},
        data={"sampler": "same-speaker"},
        train={"max_steps": 10, "validate_every": 3, "checkpoint_every": 1},
    )
    reference = tmp_path / "reference"
    train(dataset, reference, config)

    out = tmp_path / "killed"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(dataset), str(out), json.dumps(config.to_dict())],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if any(r["step"] >= 4 for r in read_metrics(out, "train")):
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    killed_at = load_checkpoint(out / "last.pt")["step"]
    assert 3 <= killed_at < 10

    summary = train(dataset, out, config, resume=True)
    assert summary.start_step == killed_at and summary.steps == 10

    expected, resumed = train_losses(reference), train_losses(out)
    assert sorted(resumed) == list(range(1, 11))
    for step in range(1, 11):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=0), f"step {step}"
    expected_valid, resumed_valid = read_metrics(reference, "valid"), read_metrics(out, "valid")
    assert [r["step"] for r in resumed_valid] == [r["step"] for r in expected_valid] == [3, 6, 9, 10]
    assert [r["loss"] for r in resumed_valid] == pytest.approx([r["loss"] for r in expected_valid], rel=1e-6)
    final = torch.load(out / "last.pt", weights_only=True)
    final_reference = torch.load(reference / "last.pt", weights_only=True)
    for name, value in final_reference["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=1e-6, atol=1e-7)
    assert final["best"]["step"] == final_reference["best"]["step"]
    assert final["best"]["loss"] == pytest.approx(final_reference["best"]["loss"], rel=1e-6)


# ---- data parallel ----------------------------------------------------------------------------------


def test_two_gloo_processes_take_the_same_first_step_as_one_process_on_the_union(dataset, tmp_path):
    """torchrun, 2 CPU processes, one step == one process on the union of the two ranks' batches.

    How the comparison is made valid:

    * negatives: each rank draws them from its local batch with the seed ``negative_seed(seed, rank,
      1, 0)``; the single process uses the very same indices, shifted by ``batch * frames`` for rank 1's
      half, so every prediction is scored against the same candidate latents;
    * averaging: each rank's loss is the mean over its valid positions and DDP averages the two
      gradients; all windows are full (``short_utterances=skip``), so both ranks have the same number of
      positions and the average equals the gradient of the mean over the union;
    * normalisation: ``channel`` has no statistics across sequences, so nothing else couples the ranks;
    * Adam's first step is ~ lr * sign(gradient); ``eps = 1`` makes it ~ lr * gradient so that a wrong
      gradient scale (e.g. a sum instead of a mean over ranks) would show.
    """
    config = train_config(
        data={"short_utterances": "skip", "sample_rate": SAMPLE_RATE},
        optim={"learning_rate": 0.5, "eps": 1.0},
        train={"max_steps": 1, "validate_every": 1},
    )
    config_file = tmp_path / "config.yaml"
    config.save(config_file)
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cpcaudio.cli.main", "train", str(dataset), str(out), "--config", str(config_file), "--device", "cpu",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained steps 0 -> 1") == 1, result.stdout  # only rank 0 prints
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["world_size"] == 2 and [s["rank"] for s in saved["sampler"]] == [0, 1]

    resolved = CPCConfig.load(out / "config.yaml")
    model = initial_model(resolved)
    prepared = PreparedDataset.open(dataset)
    signals, negatives = [], []
    frames = model.num_frames(WINDOW)
    for rank in range(2):
        sampler = WindowSampler(
            prepared, WINDOW, 4, mode="uniform", seed=0, split="train", rank=rank, world_size=2, short_utterances="skip"
        )
        batch = next(iter(sampler))
        assert bool((batch.lengths == WINDOW).all())
        signals.append(batch.signal)
        local = draw_negatives(model, batch.lengths, WINDOW, negative_seed(0, rank, 1, 0), torch.device("cpu"))
        negatives.append(local + rank * 4 * frames)

    def one_step(signal, negative_indices):
        reference = initial_model(resolved)
        optimizer = build_optimizer(reference.parameters(), resolved.optim)
        reference(signal, None, negative_indices).loss.backward()
        optimizer.step()
        return reference.state_dict()

    union = one_step(torch.cat(signals), torch.cat(negatives))
    start = model.state_dict()
    moved = max(float((union[name] - start[name]).abs().max()) for name in start)
    assert moved > 1e-3
    for name, value in union.items():
        torch.testing.assert_close(saved["model"][name], value, rtol=0, atol=1e-5, msg=name)
    rank0_only = one_step(signals[0], negatives[0])
    assert max(float((rank0_only[n] - union[n]).abs().max()) for n in union) > 1e-4  # the check can fail


# ---- learning on real speech --------------------------------------------------------------------------


def test_short_run_on_speech_raises_validation_accuracy_well_above_chance(tmp_path):
    source = helpers.shared_data("tts_festival")
    prepared = tmp_path / "festival"
    prepare("folder", source, prepared, workers=1)
    config = CPCConfig.from_dict(
        {
            "encoder": {"hidden_dim": 32},
            "context": {"hidden_dim": 32},
            "predictor": {"num_steps": 2, "num_negatives": 8},
            "data": {"window_size": 3200, "batch_size": 8, "sampler": "uniform"},
            "train": {"max_steps": 200, "validate_every": 50, "validation_batches": 4, "log_every": 50},
        }
    )  # the paper's learning rate 2e-4: tiny models stall on a plateau at 5e-4 and above
    train(prepared, tmp_path / "run", config)
    validations = read_metrics(tmp_path / "run", "valid")
    chance = 1 / (config.predictor.num_negatives + 1)
    first, last = validations[0]["accuracy"][0], validations[-1]["accuracy"][0]
    assert last > 3 * chance, validations
    assert last > first + 0.1, validations


# ---- CLI ----------------------------------------------------------------------------------------------


def test_cli_bad_set_key_exits_with_one_clear_line(dataset, tmp_path):
    result = CliRunner().invoke(app, ["train", str(dataset), str(tmp_path / "out"), "--set", "optim.learning_rat=1e-3"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "unknown config key 'optim.learning_rat'" in lines[0] and "optim.learning_rate" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_trains_quietly_and_resumes(dataset, tmp_path):
    out = tmp_path / "out"
    config_file = tmp_path / "config.yaml"
    train_config(data={"sample_rate": SAMPLE_RATE}).save(config_file)
    runner = CliRunner()
    arguments = ["train", str(dataset), str(out), "--config", str(config_file), "--steps", "2", "--quiet"]
    quiet = runner.invoke(app, arguments)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output == ""
    resumed = runner.invoke(app, ["train", str(dataset), str(out), "--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained steps 2 -> 3" in resumed.output and "audio seconds per second" in resumed.output
    assert CPCConfig.load(out / "config.yaml").train.max_steps == 3
    refused = runner.invoke(app, ["train", str(dataset), str(out), "--set", "context.hidden_dim=16", "--resume"])
    assert refused.exit_code == 2 and "cannot change context.hidden_dim" in refused.output
