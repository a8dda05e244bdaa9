"""Resource guards (``cpcaudio.resources``): memory and disk estimates checked before any work starts,
a dataset shorter than the window, and the translation of environment errors (full disk, no memory,
unwritable path) into one line and exit code 4 (resources) or 3.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from badfiles import (
    assert_clean_failure,
    assert_no_complete_dataset,
    assert_no_complete_store,
    make_folder,
    tiny_run_sections,
    tone,
    write_audio,
)
from cpcaudio import resources
from cpcaudio.train.checkpoint import save_checkpoint
from cpcaudio.cli.common import user_errors
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.presets import load_preset
from cpcaudio.data import prepare
from cpcaudio.data.format import DatasetWriter
from cpcaudio.errors import DataError, ResourceError, UsageError
from cpcaudio.model import CPCModel

RESOURCE, DATA, USAGE = 4, 3, 2
MIB = 1024**2
runner = CliRunner()
TINY = tiny_run_sections(8000)


def cli(*arguments: object):
    return runner.invoke(app, [str(a) for a in arguments])


# ---- estimates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"context": {"kind": "lstm", "num_layers": 2, "hidden_dim": 64}},
        {"predictor": {"head": "mlp", "head_hidden_dim": 32, "num_steps": 3}},
        {"encoder": {"normalization": "none", "in_channels": 6, "kernel_sizes": [3, 3], "strides": [1, 2]}},
    ],
    ids=["paper", "lstm", "mlp-heads", "small-multichannel"],
)
def test_parameter_count_matches_the_model(sections):
    config = CPCConfig.from_dict(sections)
    assert resources.count_parameters(config) == sum(p.numel() for p in CPCModel(config).parameters())


def test_training_estimate_grows_with_the_batch_as_stated():
    one = resources.estimate_training_memory(load_preset("paper", {"data": {"batch_size": 1}}))
    four = resources.estimate_training_memory(load_preset("paper", {"data": {"batch_size": 4}}))
    frames = 128  # 20480 samples / 160
    score_growth = ((4 * frames) ** 2 - frames**2) * 4
    assert four.activation_bytes - one.activation_bytes == 3 * one.per_item_bytes + score_growth
    assert four.model_bytes == one.model_bytes == 4 * resources.count_parameters(load_preset("paper"))
    assert four.optimizer_bytes == 3 * four.model_bytes  # gradients + Adam's two moments
    # The paper's config at batch 8: measured 580 MiB of peak growth on CPU (docs/reliability.md).
    eight = resources.estimate_training_memory(load_preset("paper"))
    assert 300 * MIB < eight.total_bytes < 900 * MIB


def test_training_that_cannot_fit_is_refused_with_the_batch_that_fits(monkeypatch):
    config = CPCConfig.from_dict({"data": {"batch_size": 64}})
    available = 1024 * MIB
    monkeypatch.setattr(resources, "available_memory", lambda device: available)
    with pytest.raises(ResourceError, match=r"training needs about .* but 1\.0 GiB is available") as error:
        resources.check_training_fits(config, "cpu")
    message = str(error.value)
    fitting = int(message.split("--set data.batch_size=")[1].split()[0])
    estimate = lambda b: resources.estimate_training_memory(CPCConfig.from_dict({"data": {"batch_size": b}})).total_bytes  # noqa: E731
    assert 1 <= fitting < 64 and estimate(fitting) <= available < estimate(fitting + 1)

    monkeypatch.setattr(resources, "available_memory", lambda device: 10 * MIB)
    with pytest.raises(ResourceError, match=r"even one window does not fit: lower data.window_size"):
        resources.check_training_fits(config, "cpu")
    monkeypatch.setenv(resources.SKIP_ENVIRONMENT_VARIABLE, "1")
    assert resources.check_training_fits(config, "cpu").total_bytes > 10 * MIB  # skipped: no error


def test_tiny_training_fits_here_and_checkpoints_need_disk(monkeypatch, tmp_path: Path):
    config = CPCConfig.from_dict(TINY)
    estimate = resources.check_training_fits(config, "cpu", tmp_path)
    assert estimate.total_bytes < 50 * MIB
    monkeypatch.setattr(resources, "free_disk_space", lambda path: 1000)
    with pytest.raises(ResourceError, match=r"checkpoints .* needs about .* on disk at .* but only 1000 B is free"):
        resources.check_training_fits(config, "cpu", tmp_path)


def test_available_memory_is_known_on_cpu():
    free = resources.available_memory("cpu")
    assert free is None or free > 0
    assert resources.available_memory("mps") is None


# ---- dataset shorter than the window -----------------------------------------------------------------------------


def test_dataset_shorter_than_the_window():
    config = CPCConfig.from_dict(TINY)  # window 1600 samples = 10 frames, K = 2
    resources.check_dataset_covers_window([1600, 800], config)
    with pytest.raises(DataError, match=r"holds 1500 samples .* fewer than one window of data.window_size=1600 .*"
                                        r"--set data.window_size=800"):
        resources.check_dataset_covers_window([800, 700], config, "train", "data/x")
    with pytest.raises(DataError, match=r"longest utterance .* has 320 samples \(2 frames\), too few to predict"):
        resources.check_dataset_covers_window([320] * 10, config)
    skip = CPCConfig.from_dict({**TINY, "data": {**TINY["data"], "short_utterances": "skip"}})
    with pytest.raises(DataError, match=r"no utterance .* is as long as a window .* data.short_utterances=pad"):
        resources.check_dataset_covers_window([1000, 1000], skip)


def test_train_refuses_a_dataset_shorter_than_the_window(tmp_path: Path):
    source = tmp_path / "source"
    for speaker in ("anna", "bert"):
        for index in range(2):
            write_audio(source / speaker / f"{index}.wav", tone(600, 8000), 8000)
    prepare("folder", source, tmp_path / "dataset", workers=1)
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in TINY.items()).replace("'", "") + "\n")
    result = cli("train", tmp_path / "dataset", tmp_path / "run", "--config", config, "--quiet", "--device", "cpu")
    assert_clean_failure(result, DATA, r"fewer than one window of data.window_size=1600", tmp_path / "dataset")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_refuses_a_batch_that_cannot_fit(monkeypatch, tmp_path: Path):
    source = tmp_path / "source"
    for speaker in ("anna", "bert"):
        for index in range(2):
            write_audio(source / speaker / f"{index}.wav", tone(4000, 8000), 8000)
    prepare("folder", source, tmp_path / "dataset", workers=1)
    monkeypatch.setattr(resources, "available_memory", lambda device: 64 * 1024)  # below the tiny config's ~330 KiB estimate
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {v}" for k, v in TINY.items()).replace("'", "") + "\n")
    result = cli("train", tmp_path / "dataset", tmp_path / "run", "--config", config, "--quiet", "--device", "cpu")
    assert_clean_failure(result, RESOURCE, r"training needs about .* of memory on cpu")
    assert not (tmp_path / "run" / "last.pt").exists()


# ---- disk and memory for prepare and extract ----------------------------------------------------------------------


def test_prepare_refuses_to_start_without_disk_space(monkeypatch, tmp_path: Path):
    corpus = make_folder(tmp_path / "corpus")
    monkeypatch.setattr(resources, "free_disk_space", lambda path: 4096)
    out = tmp_path / "out"
    result = cli("prepare", "folder", corpus.root, out, "-q", "--workers", "1")
    line = assert_clean_failure(result, RESOURCE, r"the prepared dataset needs about 3\d\.\d KiB on disk .* 4\.0 KiB is free", out)
    assert "choose another output directory" in line
    assert not out.exists()  # created by nobody: the check runs before anything is written


def test_prepare_disk_full_while_writing(monkeypatch, tmp_path: Path):
    corpus = make_folder(tmp_path / "corpus")
    calls = []

    def add(self, *arguments, **options):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *arguments, **options)

    original = DatasetWriter.add
    monkeypatch.setattr(DatasetWriter, "add", add)
    out = tmp_path / "out"
    result = cli("prepare", "folder", corpus.root, out, "-q", "--workers", "1")
    assert_clean_failure(result, RESOURCE, r"no space left on the disk of .* while writing the prepared dataset", out)
    assert_no_complete_dataset(out)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    config = CPCConfig.from_dict(TINY)
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    return path


def test_extract_refuses_a_batch_that_cannot_fit(monkeypatch, tmp_path: Path, model: Path):
    corpus = make_folder(tmp_path / "audio")
    monkeypatch.setattr(resources, "available_memory", lambda device: 100_000)
    out = tmp_path / "features"
    result = cli("extract", model, corpus.root, out, "--device", "cpu", "--quiet", "--batch-size", "4")
    assert_clean_failure(result, RESOURCE, r"extraction needs about .* for a batch of 4 utterances .* use --batch-size 1")
    assert not out.exists()


def test_extract_refuses_to_start_without_disk_space(monkeypatch, tmp_path: Path, model: Path):
    corpus = make_folder(tmp_path / "audio")
    monkeypatch.setattr(resources, "free_disk_space", lambda path: 100)
    out = tmp_path / "features"
    result = cli("extract", model, corpus.root, out, "--device", "cpu", "--quiet")
    assert_clean_failure(result, RESOURCE, r"the feature store needs about .* on disk .* but only 100 B is free", out)
    assert_no_complete_store(out)
    assert not out.exists()


# ---- output paths -------------------------------------------------------------------------------------------------


def test_check_output_dir(tmp_path: Path):
    resources.check_output_dir(tmp_path / "new" / "deeper")  # missing parents are fine
    resources.check_output_dir(tmp_path)  # an existing folder too
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=r"exists and is a file"):
        resources.check_output_dir(blocker)
    with pytest.raises(UsageError, match=r"is a file, not a folder"):
        resources.check_output_dir(blocker / "a" / "b")


# ---- environment errors that escape a command ---------------------------------------------------------------------


def _raiser(error: BaseException) -> typer.Typer:
    application = typer.Typer()

    @application.command()
    def fail() -> None:
        with user_errors(None):
            raise error

    @application.command()
    def other() -> None:  # a second command keeps typer from collapsing to a single-command app
        pass

    return application


@pytest.mark.parametrize(
    "error, code, message",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/out/signal.bin"), RESOURCE,
         r"/data/out/signal.bin: No space left on device; free some space"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/out"), DATA, r"/data/out: Permission denied; check"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/file/out"), DATA, r"/data/file/out: Not a directory"),
        (MemoryError(), RESOURCE, r"out of memory; lower data.batch_size"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), RESOURCE, r"out of memory; lower"),
        (DataError("first line\nsecond line"), DATA, r"^error: first line second line$"),
    ],
    ids=["disk-full", "permission", "not-a-directory", "memory", "torch-oom", "multi-line"],
)
def test_environment_errors_become_one_line(error, code, message):
    result = runner.invoke(_raiser(error), ["fail"])
    assert_clean_failure(result, code, message)


def test_bugs_still_show_their_traceback():
    result = runner.invoke(_raiser(ZeroDivisionError("a bug")), ["fail"])
    assert isinstance(result.exception, ZeroDivisionError)
