"""Nothing is lost when a job is killed: ``kill -9`` of the whole process group at random moments of
``prepare``, ``train`` and ``extract``. After every kill the output is either complete or resumable
(never a half-written file that looks complete), and the rerun (``train --resume``) finishes with results
equal to an uninterrupted run: bit for bit for prepared arrays and checkpoints, to float rounding for
features.

The kill moments are drawn from ``random.Random(seed)``, seed from ``CPCAUDIO_KILL_SEED`` (default 8),
as fractions of the uninterrupted run's duration; a failure message prints them to reproduce it.
Every command runs single-threaded in its own process group, like a preempted job.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from badfiles import tone, write_audio
from cpcaudio.train.checkpoint import load_checkpoint, save_checkpoint
from cpcaudio.config import CPCConfig
from cpcaudio.data import PreparedDataset, prepare
from cpcaudio.data.format import is_unfinished_dataset
from cpcaudio.errors import DataError
from cpcaudio.extract import FeatureStore
from cpcaudio.model import CPCModel

SEED = int(os.environ.get("CPCAUDIO_KILL_SEED", "8"))
KILLS = 3
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def command(*arguments: object) -> list[str]:
    return [sys.executable, "-m", "cpcaudio.cli.main", *[str(a) for a in arguments]]


def run_to_end(arguments: list[str], timeout: float = 300) -> float:
    """Run a command to completion; returns its wall time."""
    started = time.perf_counter()
    process = subprocess.run(arguments, env=ENVIRONMENT, capture_output=True, text=True, timeout=timeout)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    return time.perf_counter() - started


def watch(arguments: list[str], kill_when: Optional[Callable[[float, float], bool]] = None, jitter: float = 0.0,
          timeout: float = 300) -> tuple[bool, float]:
    """Run a command in its own process group; once ``kill_when(seconds since start, start time)`` holds,
    wait ``jitter`` seconds more and SIGKILL the whole group (as a preemption would).

    Returns:
        (whether the kill hit the running job, seconds from start to the kill or the end).
    """
    started, started_wall = time.perf_counter(), time.time() - 0.01
    process = subprocess.Popen(
        arguments, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    triggered = math.inf
    while process.poll() is None:
        now = time.perf_counter() - started
        if kill_when is not None and triggered == math.inf and kill_when(now, started_wall):
            triggered = now
        if now >= triggered + jitter:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            process.stderr.close()
            return True, now
        assert now < timeout, f"{arguments} still runs after {timeout} s"
        time.sleep(0.005)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    return False, time.perf_counter() - started


def kill_points(progress: Callable[[float], float]) -> list[tuple[str, Callable[[float, float], bool], float]]:
    """``KILLS`` random moments: one during start-up and set-up (within the first 1.5 s), the others once
    the job's ``progress(start time)`` (0..1, from files this run wrote) passes random fractions, each plus
    a random jitter of up to 50 ms so that kills land anywhere inside a step, also while a file is written."""
    rng = random.Random(SEED)
    seconds = rng.uniform(0.0, 1.5)
    points = [(f"after {seconds:.2f} s", lambda elapsed, since: elapsed >= seconds, 0.0)]
    for fraction in sorted(rng.uniform(0.05, 0.95) for _ in range(KILLS - 1)):
        points.append(
            (f"at {fraction:.0%} done", lambda elapsed, since, f=fraction: progress(since) >= f, rng.uniform(0.0, 0.05))
        )
    return points


def read_or(path: Path, parse: Callable[[str], float], since: float = 0.0, default: float = 0.0) -> float:
    """``parse(path's text)`` if ``path`` was written after ``since``; else (or while the file is missing
    or half-written) ``default``."""
    try:
        if path.stat().st_mtime < since:
            return default
        return parse(path.read_text())
    except (OSError, ValueError, KeyError):
        return default


# ---- prepare --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """48 two-second utterances of 3 speakers at 44.1 kHz with .phn labels (resampled to 16 kHz)."""
    root = tmp_path_factory.mktemp("kill") / "corpus"
    rng = np.random.default_rng(0)
    for number, speaker in enumerate(("anna", "bert", "cora")):
        for index in range(16):
            samples = tone(88200, 44100, frequency=150 + 40 * number + 7 * index)
            samples += 0.01 * rng.standard_normal(samples.shape).astype(np.float32)
            audio = write_audio(root / speaker / f"{speaker}_{index:02d}.wav", samples, 44100)
            audio.with_suffix(".phn").write_text("0 0.4 sil\n0.4 1.0 aa\n1.0 1.6 iy\n1.6 2.0 sil\n")
    return root


def _prepare_command(corpus: Path, out: Path) -> list[str]:
    return command("prepare", "textgrid", corpus, out, "--sample-rate", "16000", "--workers", "1", "-q")


def _dataset_files(out: Path) -> dict[str, bytes]:
    files = {name: (out / name).read_bytes() for name in ("signal.bin", "frame_labels.bin", "utterances.tsv", "report.json")}
    meta = json.loads((out / "meta.json").read_text())
    for key in ("created", "command"):
        meta.pop(key)
    files["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    return files


def test_prepare_killed_at_random_moments(corpus: Path, tmp_path: Path):
    reference_out = tmp_path / "reference"
    run_to_end(_prepare_command(corpus, reference_out))
    reference = _dataset_files(reference_out)
    out = tmp_path / "killed"
    partial, final_size = out / ".signal.bin.partial", len(reference["signal.bin"])
    def progress(since: float) -> float:
        try:
            status = partial.stat()
        except FileNotFoundError:
            return 0.0
        return status.st_size / final_size if status.st_mtime >= since else 0.0

    history = []
    for name, kill_when, jitter in kill_points(progress):
        killed, moment = watch(_prepare_command(corpus, out), kill_when, jitter)
        state = f"{partial.stat().st_size} bytes of signal" if partial.exists() else sorted(os.listdir(out)) if out.exists() else "nothing"
        history.append((name, f"{moment:.2f} s", "killed" if killed else "finished", state))
        if not out.exists():
            continue
        if (out / "meta.json").exists():  # finished before the kill: complete and right
            assert _dataset_files(out) == reference, history
            break
        # Killed mid-way: nothing opens as a dataset, and only dataset files / their temporaries are there.
        assert is_unfinished_dataset(out) or not any(out.iterdir()), (history, sorted(os.listdir(out)))
        with pytest.raises(DataError, match="not a prepared dataset"):
            PreparedDataset.open(out)
    note = f"seed {SEED}; kills: {history}"
    if not (out / "meta.json").exists():
        run_to_end(_prepare_command(corpus, out))  # the same command, no --overwrite needed
    assert _dataset_files(out) == reference, note
    assert len(PreparedDataset.open(out)) == 48
    print(f"prepare: {note}")


# ---- train ------------------------------------------------------------------------------------------------------

TRAIN_CONFIG = {
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 2, "num_negatives": 8},
    "data": {"window_size": 3200, "batch_size": 4, "sampler": "uniform"},
    "train": {"max_steps": 24, "validate_every": 8, "validation_batches": 2, "log_every": 1, "checkpoint_every": 1},
}


@pytest.fixture(scope="module")
def dataset(corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill_dataset") / "dataset"
    prepare("textgrid", corpus, out, sample_rate=16000, workers=1)
    return out


def _train_command(dataset: Path, run: Path, config: Path, resume: bool) -> list[str]:
    return command("train", dataset, run, "--config", config, "--device", "cpu", "--quiet", *(["--resume"] if resume else []))


def _train_state(run: Path) -> dict:
    record = load_checkpoint(run / "last.pt")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "step": record["step"],
        "model": record["model"],
        "optimizer": record["optimizer"]["state"],
        "train_losses": [(m["step"], m["loss"]) for m in metrics if m["kind"] == "train"],
        "valid_losses": [(m["step"], m["loss"]) for m in metrics if m["kind"] != "train"],
    }


def _assert_same_training(state: dict, reference: dict, note: str) -> None:
    assert state["step"] == reference["step"], note
    for name, tensor in reference["model"].items():
        assert torch.equal(state["model"][name], tensor), (name, note)
    for index, values in reference["optimizer"].items():
        for key, tensor in values.items():
            assert torch.equal(torch.as_tensor(state["optimizer"][index][key]), torch.as_tensor(tensor)), (index, key, note)
    assert state["train_losses"] == reference["train_losses"], note
    assert state["valid_losses"] == reference["valid_losses"], note


def _metrics_steps(text: str) -> float:
    return float(sum('"kind": "train"' in line for line in text.splitlines()))


def test_train_killed_at_random_moments(dataset: Path, tmp_path: Path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TRAIN_CONFIG))
    reference_run = tmp_path / "reference"
    run_to_end(_train_command(dataset, reference_run, config, False))
    reference = _train_state(reference_run)
    assert reference["step"] == 24
    run = tmp_path / "killed"
    progress = lambda since: read_or(run / "metrics.jsonl", _metrics_steps, since) / 24  # noqa: E731  (steps logged)
    history = []
    finished = False
    for number, (name, kill_when, jitter) in enumerate(kill_points(progress)):
        killed, moment = watch(_train_command(dataset, run, config, resume=number > 0), kill_when, jitter)
        finished = not killed
        step = load_checkpoint(run / "last.pt")["step"] if (run / "last.pt").exists() else None  # always loads
        history.append((name, f"{moment:.2f} s", "killed" if killed else "finished", f"last.pt at step {step}"))
        assert step is None or 1 <= step <= 24, history
        if finished:
            break
    note = f"seed {SEED}; kills: {history}"
    if not finished:
        run_to_end(_train_command(dataset, run, config, resume=True))
    _assert_same_training(_train_state(run), reference, note)
    # A temporary of last.pt left by a kill mid-write is removed by the next write of last.pt.
    assert not list(run.glob(".last.pt.*.tmp")), sorted(os.listdir(run))
    print(f"train: {note}")


# ---- extract -----------------------------------------------------------------------------------------------------


def _extract_command(checkpoint: Path, dataset: Path, out: Path) -> list[str]:
    return command("extract", checkpoint, dataset, out, "--device", "cpu", "--batch-size", "2", "--layer", "all", "--quiet")


def test_extract_killed_at_random_moments(dataset: Path, tmp_path: Path):
    config = CPCConfig.from_dict({"encoder": {"hidden_dim": 96}, "context": {"hidden_dim": 96}})
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    reference_out = tmp_path / "reference"
    run_to_end(_extract_command(checkpoint, dataset, reference_out))
    reference = FeatureStore.open(reference_out)
    out = tmp_path / "killed"
    progress = lambda since: read_or(out / "progress.json", lambda text: json.loads(text)["completed"], since) / 48  # noqa: E731
    history = []
    for name, kill_when, jitter in kill_points(progress):
        killed, moment = watch(_extract_command(checkpoint, dataset, out), kill_when, jitter)
        done = read_or(out / "progress.json", lambda text: json.loads(text)["completed"], default=-1)
        history.append((name, f"{moment:.2f} s", "killed" if killed else "finished", f"{done:.0f} of 48 recorded"))
        if (out / "meta.json").exists():
            break  # finished: compared below
        assert not (out / "features.npy").exists(), (history, sorted(os.listdir(out)))
        if out.exists() and any(out.iterdir()):
            with pytest.raises(DataError, match="unfinished extraction|not a feature store"):
                FeatureStore.open(out)
    note = f"seed {SEED}; kills: {history}"
    if not (out / "meta.json").exists():
        run_to_end(_extract_command(checkpoint, dataset, out))  # the same command resumes
    store = FeatureStore.open(out)
    assert store.utterance_ids == reference.utterance_ids, note
    assert store.frame_lengths.tolist() == reference.frame_lengths.tolist(), note
    np.testing.assert_allclose(store.all_features, reference.all_features, rtol=0, atol=1e-6, err_msg=note)
    np.testing.assert_array_equal(store.all_frame_labels, reference.all_frame_labels, err_msg=note)
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference_out)), note
    print(f"extract: {note}")
