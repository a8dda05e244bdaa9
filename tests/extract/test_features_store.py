"""``cpcaudio extract`` and the feature store: contents, resume after interruption, error lines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

from helpers import tiny_config

from cpcaudio import CPCModel
from cpcaudio.train.checkpoint import save_checkpoint
from cpcaudio.cli.main import app
from cpcaudio.errors import DataError, UsageError
from cpcaudio.extract import FeatureStore, extract_to_store, npy_path
from cpcaudio.progress import Progress
from cpcaudio.toy import generated_signal

TOLERANCE = 1e-5
REPO = Path(__file__).resolve().parents[2]
# Distinct encoder and context sizes, so that the layer of a store shows in its dim.
SECTIONS = {"encoder": {"hidden_dim": 16}, "context": {"hidden_dim": 12}}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """Like conftest's ``tiny_checkpoint``, with the distinct layer sizes of ``SECTIONS``."""
    torch.manual_seed(0)
    config = tiny_config(SECTIONS)
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    return path


# (relative path, seconds, sample rate, channels): mixed rates, a stereo file, nested folders
AUDIO_FILES = [
    ("a/u1.wav", 1.0, 16000, 1),
    ("a/u2.flac", 0.55, 16000, 1),
    ("b/u3.wav", 0.8, 8000, 1),
    ("b/deeper/u4.wav", 0.31, 22050, 2),
    ("u5.wav", 1.7, 16000, 1),
    ("u6.wav", 0.02, 16000, 1),
]


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "audio"
    for name, seconds, rate, channels in AUDIO_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.stack([generated_signal(int(seconds * rate), rng, rate) for _ in range(channels)], axis=1)
        soundfile.write(path, data, rate, subtype="PCM_16")
    (root / "notes.txt").write_text("not audio\n")
    return root


def expected_features(checkpoint: Path, root: Path, name: str, layer: str = "context") -> np.ndarray:
    """Independent path: read the file, mix to mono, extract one utterance with the Python API."""
    import cpcaudio

    model = cpcaudio.load(checkpoint, device="cpu")
    data, rate = soundfile.read(root / name, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return model.extract(mono, rate, layer=layer, chunk_seconds=float("inf")).frames.numpy()


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_extract_cli_on_a_folder_writes_a_complete_store(checkpoint, audio_folder, tmp_path):
    out = tmp_path / "features"
    result = run_cli("extract", checkpoint, audio_folder, out, "--device", "cpu", "--batch-size", "4", "--npy",
                     "--chunk-seconds", "0.3")
    assert result.exit_code == 0, result.output
    assert "wrote 6 utterances" in result.output
    store = FeatureStore.open(out)
    ids = sorted(Path(name).with_suffix("").as_posix() for name, *_ in AUDIO_FILES)
    assert store.utterance_ids == ids
    assert store.dim == 12 and store.layer == "context"
    assert store.frame_rate == pytest.approx(100.0) and store.downsample_rate == 160
    assert store.meta["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert store.meta["config"] == tiny_config(SECTIONS).to_dict()
    assert store.frame_labels(0) is None
    assert not (out / "features.npy.partial").exists() and not (out / "progress.json").exists()
    for i, utterance_id in enumerate(store.utterance_ids):
        name = next(n for n, *_ in AUDIO_FILES if n.startswith(utterance_id + "."))
        expected = expected_features(checkpoint, audio_folder, name)
        assert store.features(i).shape == expected.shape
        np.testing.assert_allclose(store.features(i), expected, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(np.load(npy_path(out, utterance_id)), store.features(i))
    # the rows are the utterances back to back
    assert store.frame_offsets.tolist() == np.concatenate([[0], np.cumsum(store.frame_lengths)[:-1]]).tolist()
    assert store.all_features.shape == (int(store.frame_lengths.sum()), 12)


def test_extract_from_a_text_list_with_layer_all(checkpoint, audio_folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# two files\naudio/b/u3.wav\n\naudio/a/u1.wav\n")
    out = tmp_path / "features"
    result = run_cli("extract", checkpoint, listing, out, "--layer", "all", "--device", "cpu")
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(out)
    assert store.utterance_ids == ["audio/b/u3", "audio/a/u1"]
    assert store.dim == 16 + 12
    np.testing.assert_allclose(
        store.features(0), expected_features(checkpoint, audio_folder, "b/u3.wav", layer="all"), atol=TOLERANCE, rtol=0
    )


class Interrupt(Exception):
    pass


def test_interrupted_extraction_resumes_and_matches_an_uninterrupted_run(checkpoint, audio_folder, tmp_path):
    reference = extract_to_store(checkpoint, audio_folder, tmp_path / "reference", device="cpu", batch_size=2)
    out = tmp_path / "features"

    def stop_after_four(event: Progress) -> None:
        if event.done >= 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract_to_store(checkpoint, audio_folder, out, device="cpu", batch_size=2, progress=stop_after_four)
    assert not (out / "features.npy").exists() and not (out / "meta.json").exists()
    with pytest.raises(DataError, match="unfinished"):
        FeatureStore.open(out)
    seen = []
    summary = extract_to_store(checkpoint, audio_folder, out, device="cpu", batch_size=3,
                               progress=lambda event: seen.append(event.done))
    assert summary.resumed_from == 4 and summary.processed == 2
    assert seen == [4, 6]
    np.testing.assert_allclose(
        FeatureStore.open(out).all_features, FeatureStore.open(reference.path).all_features, atol=TOLERANCE, rtol=0
    )
    again = extract_to_store(checkpoint, audio_folder, out, device="cpu")
    assert again.already_complete and again.processed == 0


def test_killed_mid_batch_resumes_without_a_half_written_file_looking_whole(checkpoint, audio_folder, tmp_path):
    """A real SIGKILL after some rows of the third batch were written but before its progress marker."""
    out = tmp_path / "features"
    script = textwrap.dedent(
        f"""
        import os, signal
        import cpcaudio.extract.writer as writer
        original = writer._extract_batch
        calls = []
        def dying(*args, **kwargs):
            original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        writer._extract_batch = dying
        writer.extract_to_store({str(checkpoint)!r}, {str(audio_folder)!r}, {str(out)!r}, device="cpu", batch_size=2)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    assert json.loads((out / "progress.json").read_text()) == {"completed": 4}
    assert (out / "features.npy.partial").exists()
    assert not (out / "features.npy").exists() and not (out / "meta.json").exists()
    result = run_cli("extract", checkpoint, audio_folder, out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "resumed after 4" in result.output
    reference = extract_to_store(checkpoint, audio_folder, tmp_path / "reference", device="cpu")
    np.testing.assert_allclose(
        FeatureStore.open(out).all_features, FeatureStore.open(reference.path).all_features, atol=TOLERANCE, rtol=0
    )


def test_random_init_model_and_store_reuse_rules(audio_folder, tmp_path):
    torch.manual_seed(1)
    model = CPCModel(tiny_config(SECTIONS))
    out = tmp_path / "random"
    summary = extract_to_store(model, audio_folder, out, layer="encoder", device="cpu")
    store = FeatureStore.open(out)
    assert store.meta["checkpoint"] is None and len(store.meta["weights_sha256"]) == 64
    assert summary.dim == store.dim == 16
    with pytest.raises(UsageError, match="layer"):
        extract_to_store(model, audio_folder, out, layer="context", device="cpu")
    replaced = extract_to_store(model, audio_folder, out, layer="context", device="cpu", overwrite=True)
    assert replaced.dim == FeatureStore.open(out).dim == 12
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not a cpcaudio feature store"):
        extract_to_store(model, audio_folder, foreign, device="cpu", overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("kind", ["audio", "truncated", "missing", "pickle"])
def test_bad_checkpoint_gives_one_line_and_nonzero_exit(kind, checkpoint, audio_folder, tmp_path):
    bad = tmp_path / "bad.pt"
    if kind == "audio":
        bad = audio_folder / "a" / "u1.wav"
    elif kind == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:1000])
    elif kind == "pickle":
        torch.save({"config": tiny_config(SECTIONS), "model": {}}, bad)  # a dataclass: refused by weights_only
    result = run_cli("extract", bad, audio_folder, tmp_path / "out", "--device", "cpu")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_input_and_options_give_one_line(checkpoint, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, pattern in [
        ((empty,), "holds no audio"),
        ((tmp_path / "nowhere",), "does not exist"),
        ((empty, "--layer", "middle"), "layer must be one of"),
        ((empty, "--batch-size", "0"), "batch size"),
    ]:
        result = run_cli("extract", checkpoint, args[0], tmp_path / "out", *args[1:])
        assert result.exit_code != 0
        assert pattern in result.output and len(result.output.strip().splitlines()) == 1, result.output


def prepared_dataset(tmp_path: Path) -> Path:
    data = pytest.importorskip("cpcaudio.data")
    if not hasattr(data, "prepare"):
        pytest.skip("cpcaudio.data.prepare is not available")
    result = data.prepare("synthetic", None, tmp_path / "prepared", workers=1, num_speakers=2, minutes=0.2)
    return Path(result.path)


def test_extract_a_prepared_dataset_carries_speakers_splits_and_frame_labels(checkpoint, tmp_path):
    from cpcaudio.data import PreparedDataset, frame_labels_for_encoder

    path = prepared_dataset(tmp_path)
    dataset = PreparedDataset.open(path)
    out = tmp_path / "features"
    result = run_cli("extract", checkpoint, path, out, "--device", "cpu", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(out)
    import cpcaudio

    model = cpcaudio.load(checkpoint, device="cpu")
    assert store.utterance_ids == dataset.utterance_ids
    assert store.speakers == dataset.speakers and store.splits == dataset.splits
    assert store.phone_vocabulary == dataset.phone_vocabulary
    assert store.indices("test").tolist() == dataset.indices("test").tolist()
    for i in range(len(dataset)):
        frames = model.num_frames(int(dataset.lengths[i]))
        expected = model.extract(dataset.signal(i), dataset.sample_rate).frames.numpy()
        np.testing.assert_allclose(store.features(i), expected, atol=TOLERANCE, rtol=0)
        labels = frame_labels_for_encoder(dataset.frame_labels(i), dataset.label_hop, model.encoder.geometry, frames)
        np.testing.assert_array_equal(store.frame_labels(i), labels)
        assert (store.frame_labels(i) >= 0).mean() > 0.9


def test_frame_labels_of_a_resampled_dataset_follow_the_same_centre_rule():
    """Labels counted at another rate land where the dataset's own rule puts them at the model's rate."""
    from cpcaudio.data import frame_labels_for_encoder
    from cpcaudio.extract import encoder_frame_labels

    model = CPCModel(tiny_config(SECTIONS))
    labels = np.random.default_rng(0).integers(0, 40, size=57)
    frames = model.num_frames(57 * 160)
    same_rate = frame_labels_for_encoder(labels, 160, model.encoder.geometry, frames)
    np.testing.assert_array_equal(encoder_frame_labels(labels, 160, 16000, model, frames), same_rate)
    # the same 10 ms label frames counted at 8 kHz (80 samples each) give the same frame labels
    np.testing.assert_array_equal(encoder_frame_labels(labels, 80, 8000, model, frames), same_rate)
