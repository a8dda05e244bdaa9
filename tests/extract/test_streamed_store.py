"""Long files are streamed into the store block by block (:mod:`cpcaudio.extract.blocks`): the same
features as whole-file extraction, resumable, and a peak memory that does not grow with the file."""

from __future__ import annotations

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
import soxr
import torch

from helpers import shared_data, tiny_config

from cpcaudio import CPCModel
from cpcaudio.extract import FeatureStore, extract_to_store
from cpcaudio.extract.blocks import model_rate_blocks
from cpcaudio.extract.inputs import open_source
from cpcaudio.extract.resampling import resample
from cpcaudio.extract.rows import FeatureRows, copy_rows_to_npy
from cpcaudio.train.checkpoint import save_checkpoint

TOLERANCE = 1e-5
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _checkpoint(path: Path, **sections) -> Path:
    torch.manual_seed(0)
    config = tiny_config(**sections)
    save_checkpoint(path, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def timit_folder(tmp_path_factory) -> Path:
    """A real TIMIT utterance as it is, and made into an 8 kHz file and a 22.05 kHz stereo file."""
    source = shared_data("timit_sample") / "dr1-fvmh0" / "sa1.wav"
    samples, rate = soundfile.read(source, dtype="float32")
    folder = tmp_path_factory.mktemp("timit")
    soundfile.write(folder / "sa1.wav", samples, rate, subtype="PCM_16")
    soundfile.write(folder / "sa1_8k.wav", soxr.resample(samples, rate, 8000), 8000, subtype="FLOAT")
    stereo = np.stack([samples, samples[::-1] * 0.5], axis=1)
    soundfile.write(folder / "sa1_stereo.wav", soxr.resample(stereo, rate, 22050), 22050, subtype="FLOAT")
    return folder


@pytest.mark.parametrize("sections, layer", [
    ({}, "context"),  # input_normalization: sequence (the default): a first pass for the statistics
    ({}, "all"),
    ({"encoder": {"hidden_dim": 32, "input_normalization": "none"}}, "encoder"),
    ({"encoder": {"hidden_dim": 32, "normalization": "batch"}, "context": {"hidden_dim": 32, "kind": "lstm"}}, "context"),
])
def test_a_streamed_store_equals_the_whole_file_store_on_real_speech(timit_folder, tmp_path, sections, layer):
    checkpoint = _checkpoint(tmp_path / "model.pt", **sections)
    whole = extract_to_store(checkpoint, timit_folder, tmp_path / "whole", device="cpu", layer=layer)
    streamed = extract_to_store(checkpoint, timit_folder, tmp_path / "streamed", device="cpu", layer=layer,
                                stream_seconds=0)
    assert streamed.total_frames == whole.total_frames > 800
    a, b = FeatureStore.open(tmp_path / "whole"), FeatureStore.open(tmp_path / "streamed")
    assert a.utterance_ids == b.utterance_ids and np.array_equal(a.frame_lengths, b.frame_lengths)
    np.testing.assert_allclose(b.all_features, a.all_features, atol=TOLERANCE, rtol=0)
    assert np.abs(np.asarray(a.all_features)).max() > 0.01  # not trivially equal


def test_the_streamed_blocks_are_the_whole_path_samples(timit_folder):
    """Downmix and streamed soxr give the samples that whole-file resampling gives, to the same length."""
    source = open_source(timit_folder)
    for index, utterance in enumerate(source.utterances):
        signal = source.read(index)
        if signal.shape[0] != 1:
            signal = signal.mean(axis=0, keepdims=True)
        expected = resample(signal, utterance.sample_rate, 16000)
        streamed = np.concatenate(list(model_rate_blocks(source, index, 16000, 1)), axis=1)
        assert streamed.shape == expected.shape
        np.testing.assert_allclose(streamed, expected, atol=1e-6, rtol=0)


def test_prepared_datasets_stream_too_and_layer_norm_models_are_never_streamed(tmp_path):
    from cpcaudio.data import prepare

    dataset = prepare("synthetic", None, tmp_path / "prepared", workers=1, num_speakers=2, minutes=0.1).path
    checkpoint = _checkpoint(tmp_path / "model.pt")
    extract_to_store(checkpoint, dataset, tmp_path / "whole", device="cpu")
    extract_to_store(checkpoint, dataset, tmp_path / "streamed", device="cpu", stream_seconds=0)
    a, b = FeatureStore.open(tmp_path / "whole"), FeatureStore.open(tmp_path / "streamed")
    np.testing.assert_allclose(b.all_features, a.all_features, atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(b.all_frame_labels, a.all_frame_labels)
    layer_norm = _checkpoint(tmp_path / "layer.pt", encoder={"hidden_dim": 32, "normalization": "layer"})
    summary = extract_to_store(layer_norm, dataset, tmp_path / "layer", device="cpu", stream_seconds=0)
    assert summary.processed == len(FeatureStore.open(tmp_path / "layer"))  # the whole-signal path, no refusal


def test_a_run_killed_inside_a_streamed_file_resumes_to_the_same_store(timit_folder, tmp_path):
    checkpoint = _checkpoint(tmp_path / "model.pt")
    out = tmp_path / "features"
    script = textwrap.dedent(
        f"""
        import os, signal
        import cpcaudio.extract.writer as writer
        original = writer.stream_utterance
        calls = []
        def dying(model, source, index, layer, expected, write, *args):
            calls.append(1)
            def write_then_die(first, frames):
                write(first, frames)
                if len(calls) == 2:
                    os.kill(os.getpid(), signal.SIGKILL)  # rows of the second file written, not recorded
            original(model, source, index, layer, expected, write_then_die, *args)
        writer.stream_utterance = dying
        writer.extract_to_store({str(checkpoint)!r}, {str(timit_folder)!r}, {str(out)!r}, device="cpu", stream_seconds=0)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    assert json.loads((out / "progress.json").read_text()) == {"completed": 1}
    assert not (out / "meta.json").exists()
    summary = extract_to_store(checkpoint, timit_folder, out, device="cpu", stream_seconds=0)
    assert summary.resumed_from == 1 and summary.processed == 2
    reference = extract_to_store(checkpoint, timit_folder, tmp_path / "reference", device="cpu")
    np.testing.assert_allclose(
        FeatureStore.open(out).all_features, FeatureStore.open(reference.path).all_features, atol=TOLERANCE, rtol=0
    )


def test_rows_are_written_in_place_and_copied_out_as_np_save_would(tmp_path):
    path = tmp_path / "features.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(10, 3)).flush()
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    with FeatureRows(path) as writer:
        writer.write(5, rows)
        writer.sync()
        with pytest.raises(ValueError):
            writer.write(8, rows)  # past the end
    stored = np.load(path)
    np.testing.assert_array_equal(stored[5:9], rows)
    assert not stored[:5].any() and not stored[9:].any()
    copy_rows_to_npy(path, tmp_path / "copy.npy", 5, 4, 3)
    np.save(tmp_path / "saved.npy", rows)
    assert (tmp_path / "copy.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    copy_rows_to_npy(path, tmp_path / "empty.npy", 0, 0, 3)
    assert np.load(tmp_path / "empty.npy").shape == (0, 3)


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    """benchmarks/extract_memory.py in small sizes: a file 12 times longer, about the same peak."""
    command = [sys.executable, str(REPO / "benchmarks" / "extract_memory.py"), "--config", "tiny", "--seconds", "20",
               "240", "--stream-seconds", "5", "--threads", "1", "--work", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    short, long = json.loads(done.stdout.strip().splitlines()[-1])["runs"]
    assert long["frames"] == 12 * short["frames"]
    # 240 s of float32 audio alone is 15 MiB, and the whole-file path holds several copies of it
    assert long["peak_rss_mib"] - short["peak_rss_mib"] < 10, (short, long)
