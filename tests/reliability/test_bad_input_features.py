"""Round 2 of bad input to ``extract`` and ``probe`` (issue 15): non-finite weights, features and stores,
two writers into one store, ``--device cuda`` without CUDA, files named ``.safetensors`` that are none,
file lists with a byte-order mark, and progress output in a log versus on a terminal.

Each failure: its exit code, exactly one ``error:`` line naming the file and the fix, no traceback, and no
store that looks complete.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from badfiles import assert_clean_failure, assert_no_complete_store, tiny_run_sections, tone, write_audio
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import prepare
from cpcaudio.errors import CheckpointError
from cpcaudio.extract import FeatureStore, extract_to_store
from cpcaudio.extract.finite import NonFiniteFeaturesError
from cpcaudio.model import CPCModel
from cpcaudio.train.checkpoint import save_checkpoint

USAGE, DATA = 2, 3
RATE = 16000
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
CONFIG = CPCConfig.from_dict(tiny_run_sections(RATE))


def cli(*arguments: object):
    return runner.invoke(app, [str(a) for a in arguments])


def _save(path: Path, model: CPCModel) -> Path:
    save_checkpoint(path, {"config": CONFIG.to_dict(), "model": model.state_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A 4-utterance dataset of two speakers (train and test), its audio folder, and three checkpoints of
    one tiny model: intact (``model.pt``), every weight NaN (``nan.pt``, what a diverged run leaves),
    and finite weights whose activations overflow to NaN (``overflow.pt``)."""
    root = tmp_path_factory.mktemp("features")
    source = root / "audio"
    for number, speaker in enumerate(("anna", "bert")):
        for index in range(4):
            samples = tone(4000 + 800 * index, RATE, frequency=200 + 150 * number + 30 * index)
            write_audio(source / speaker / f"{speaker}_{index}.wav", samples, RATE)
    prepare("folder", source, root / "dataset", workers=1, test_fraction=0.5)
    torch.manual_seed(0)
    model = CPCModel(CONFIG)
    _save(root / "model.pt", model)
    with torch.no_grad():
        model.encoder.layers[0].conv.weight.fill_(3e38)  # finite, but every sum over it overflows
    _save(root / "overflow.pt", model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    _save(root / "nan.pt", model)
    return root


def _probe(work: Path, out: Path, *model: object) -> list[object]:
    return ["probe", work / "dataset", "--task", "speaker", "--out", out, "--baselines", "none", "--device", "cpu", *model]


# ---- 1. non-finite weights, features and stores --------------------------------------------------------------


def test_extract_refuses_a_checkpoint_with_non_finite_weights(work: Path, tmp_path: Path):
    out = tmp_path / "features"
    result = cli("extract", work / "nan.pt", work / "dataset", out, "--device", "cpu")
    line = assert_clean_failure(result, DATA, r"has non-finite weights \(\d+ NaN or infinite values", work / "nan.pt")
    assert "diverged" in line and "learning_rate" in line
    assert not out.exists()  # refused before the output folder is touched
    model = CPCModel(CONFIG)
    with torch.no_grad():
        model.context_network.parameters().__next__().fill_(float("inf"))
    with pytest.raises(CheckpointError, match="the model given has non-finite weights"):
        extract_to_store(model, work / "dataset", out, device="cpu")


@pytest.mark.parametrize("streamed", [False, True], ids=["batched", "streamed"])
def test_extract_refuses_non_finite_features_and_leaves_nothing_complete(work: Path, tmp_path: Path, streamed: bool):
    out = tmp_path / "features"
    if streamed:  # the block-by-block path of long files, on every file
        with pytest.raises(NonFiniteFeaturesError, match=r"checkpoint .*overflow.pt gives non-finite features"):
            extract_to_store(work / "overflow.pt", work / "audio", out, device="cpu", stream_seconds=0)
    else:
        result = cli("extract", work / "overflow.pt", work / "audio", out, "--device", "cpu")
        assert_clean_failure(result, DATA, r"gives non-finite features \(NaN or inf\) for .*\.wav", work / "overflow.pt")
        again = cli("extract", work / "overflow.pt", work / "audio", out, "--device", "cpu")  # the resume, too
        assert_clean_failure(again, DATA, r"gives non-finite features", work / "overflow.pt")
    assert_no_complete_store(out)


def test_probe_refuses_a_store_with_non_finite_features(work: Path, tmp_path: Path):
    store = tmp_path / "store"
    assert cli("extract", work / "model.pt", work / "dataset", store, "--device", "cpu", "-q").exit_code == 0
    features = np.load(store / "features.npy", mmap_mode="r+")
    features[3:7] = np.nan  # what extract wrote from a diverged model before this round
    features.flush()
    del features
    result = cli(*_probe(work, tmp_path / "report", "--features", store))
    line = assert_clean_failure(result, DATA, r"holds non-finite features \(NaN or inf\) for utterance '", store)
    assert "extract again" in line
    assert not (tmp_path / "report" / "results.json").exists()


@pytest.mark.parametrize("checkpoint, message", [
    ("nan.pt", r"has non-finite weights .*diverged"),
    ("overflow.pt", r"features \(CPC checkpoint .*overflow.pt, context features\) are non-finite"),
])
def test_probe_refuses_a_model_with_non_finite_weights_or_features(work: Path, tmp_path: Path, checkpoint, message):
    result = cli(*_probe(work, tmp_path / "report", "--checkpoint", work / checkpoint))
    assert_clean_failure(result, DATA, message, work / checkpoint)
    assert not (tmp_path / "report" / "results.json").exists()


# ---- 2. one writer per store -------------------------------------------------------------------------------------


def test_a_second_extract_into_the_same_store_is_refused_naming_the_holder(work: Path, tmp_path: Path):
    out = tmp_path / "features"
    ready = tmp_path / "first-is-extracting"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        import cpcaudio.extract.writer as writer
        original = writer._extract_batch
        calls = []
        def slow(*args, **kwargs):  # the first batch is recorded, the second never ends
            calls.append(1)
            if len(calls) == 2:
                Path({str(ready)!r}).touch()
                time.sleep(120)
            original(*args, **kwargs)
        writer._extract_batch = slow
        writer.extract_to_store({str(work / "model.pt")!r}, {str(work / "audio")!r}, {str(out)!r}, device="cpu",
                                batch_size=2)
        """
    )
    first = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first extraction never started"
            time.sleep(0.1)
        command = [sys.executable, "-m", "cpcaudio.cli.main", "extract", str(work / "model.pt"), str(work / "audio"),
                   str(out), "--device", "cpu"]
        for extra in ([], ["--overwrite"]):  # --overwrite does not delete a running writer's files either
            second = subprocess.run(command + extra, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert second.returncode == USAGE, second.stderr
            assert "Traceback" not in second.stderr
            errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, second.stderr
            assert str(out) in errors[0] and f"pid {first.pid}" in errors[0], errors[0]
        assert (out / "plan.json").is_file() and (out / "features.npy.partial").is_file()
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    # the lock died with its holder: the same command resumes and finishes
    result = cli("extract", work / "model.pt", work / "audio", out, "--device", "cpu")
    assert result.exit_code == 0 and "resumed after 2" in result.output, result.output
    assert len(FeatureStore.open(out)) == 8
    assert {p.name for p in out.iterdir()} == {".lock", "meta.json", "utterances.json", "features.npy"}


def test_the_lock_file_counts_as_the_stores_own(work: Path, tmp_path: Path):
    out = tmp_path / "features"
    out.mkdir()
    (out / ".lock").write_text("12345\n")  # left by a run that failed before writing anything
    assert cli("extract", work / "model.pt", work / "audio", out, "--device", "cpu", "-q").exit_code == 0
    assert cli("extract", work / "model.pt", work / "audio", out, "--device", "cpu", "-q", "--overwrite").exit_code == 0
    assert (out / ".lock").exists() and len(FeatureStore.open(out)) == 8


# ---- 3. --device cuda without CUDA -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["--features", "--checkpoint", None])
def test_probe_device_cuda_without_cuda_is_one_line(work: Path, tmp_path: Path, monkeypatch, model):
    store = tmp_path / "store"
    assert cli("extract", work / "model.pt", work / "dataset", store, "--device", "cpu", "-q").exit_code == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, also on a GPU one
    given = {"--features": ["--features", store], "--checkpoint": ["--checkpoint", work / "model.pt"], None: []}[model]
    arguments = ["probe", work / "dataset", "--task", "speaker", "--out", tmp_path / "report", *given, "--device", "cuda"]
    assert_clean_failure(cli(*arguments), USAGE, r"device 'cuda' requested but CUDA is not available here; use --device cpu")
    assert not (tmp_path / "report").exists()
    result = cli("extract", work / "model.pt", work / "dataset", tmp_path / "other", "--device", "cuda")
    assert_clean_failure(result, USAGE, r"CUDA is not available here")


# ---- 4. a file named .safetensors that is not one ----------------------------------------------------------------


def test_a_file_named_safetensors_that_is_none_is_one_line(work: Path, tmp_path: Path):
    fake = tmp_path / "model.safetensors"
    fake.write_text("these are not the weights you are looking for\n")
    result = cli("extract", fake, work / "dataset", tmp_path / "features", "--device", "cpu")
    assert_clean_failure(result, DATA, r"is named \.safetensors but is not a readable safetensors file", fake)
    assert not (tmp_path / "features").exists()
    result = cli(*_probe(work, tmp_path / "report", "--checkpoint", fake))
    assert_clean_failure(result, DATA, r"is not a readable safetensors file", fake)
    safetensors = pytest.importorskip("safetensors.torch")
    real = tmp_path / "real.safetensors"
    safetensors.save_file({"weight": torch.zeros(3)}, str(real))  # a real one, but no cpcaudio checkpoint
    result = cli("extract", real, work / "dataset", tmp_path / "features", "--device", "cpu")
    assert_clean_failure(result, DATA, r"is not a cpcaudio checkpoint", real)


# ---- 5. a file list with a UTF-8 byte-order mark -----------------------------------------------------------------


def test_an_extract_list_with_a_byte_order_mark_is_read(work: Path, tmp_path: Path):
    listing = tmp_path / "list.txt"
    files = sorted((work / "audio").rglob("*.wav"))[:3]
    listing.write_bytes("\ufeff".encode("utf-8") + "".join(f"{f}\n" for f in files).encode("utf-8"))  # Excel's way
    out = tmp_path / "features"
    result = cli("extract", work / "model.pt", listing, out, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(out)
    assert store.utterance_ids == [str(f.with_suffix("").as_posix()).lstrip("/") for f in files]


# ---- 7. progress: bars on a terminal only --------------------------------------------------------------------------


def _run_with_stderr(command: list[str], terminal: bool) -> tuple[int, str]:
    """Run ``command`` with stderr into a pipe (a log) or a pseudo-terminal; returns (exit code, stderr)."""
    if not terminal:
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
        return done.returncode, done.stderr.decode()
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command", ["extract", "probe"])
def test_progress_is_plain_lines_in_a_log_and_a_bar_on_a_terminal(work: Path, tmp_path: Path, command: str):
    def arguments(out: Path) -> list[str]:
        if command == "extract":
            return [sys.executable, "-m", "cpcaudio.cli.main", "extract", str(work / "model.pt"), str(work / "dataset"),
                    str(out), "--device", "cpu"]
        return [sys.executable, "-m", "cpcaudio.cli.main", *map(str, _probe(work, out, "--checkpoint", work / "model.pt"))]

    code, log = _run_with_stderr(arguments(tmp_path / "log"), terminal=False)
    assert code == 0, log
    assert "\r" not in log and "\x1b" not in log, repr(log)
    stage = r"extract: 8/8 utt" if command == "extract" else r"probe: model / \S+: 1/1 fit"
    assert re.search(rf"^{stage}$", log, re.MULTILINE), log
    code, screen = _run_with_stderr(arguments(tmp_path / "terminal"), terminal=True)
    assert code == 0, screen
    assert "\r" in screen, repr(screen)  # tqdm redraws its bar in place


def test_an_error_in_a_log_starts_its_own_line(work: Path, tmp_path: Path):
    command = [sys.executable, "-m", "cpcaudio.cli.main", "extract", str(work / "overflow.pt"), str(work / "dataset"),
               str(tmp_path / "features"), "--device", "cpu"]
    code, log = _run_with_stderr(command, terminal=False)
    assert code == DATA and "\r" not in log, repr(log)
    assert len(re.findall(r"^error: checkpoint .*overflow.pt gives non-finite features", log, re.MULTILINE)) == 1, log
