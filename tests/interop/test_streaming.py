"""Streaming extraction equals whole-signal extraction (1e-5) for any sequence of chunk sizes, including
chunks shorter than the hop, keeps only a receptive field of samples, and refuses what cannot stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import generated_signal, shared_data, tiny_config

from cpcaudio.errors import UsageError
from cpcaudio.extract.streaming import RunningStatistics, StreamingExtractor, stream_frames
from cpcaudio.interop import load_model
from cpcaudio.model import CPCModel
from cpcaudio.model.input_norm import standardize

TOLERANCE = 1e-5
ROOT = Path(__file__).resolve().parents[2]


def speech(name: str = "dr1-fvmh0/sa1.wav") -> np.ndarray:
    samples, rate = sf.read(shared_data(f"timit_sample/{name}"), dtype="float32")
    assert rate == 16000
    return samples


def random_pieces(signal: np.ndarray, rng: np.random.Generator, largest: int) -> list[np.ndarray]:
    """``signal`` (..., time) cut at random sizes in [0, largest), a third of them below 160 samples (the hop)."""
    pieces, start = [], 0
    while start < signal.shape[-1]:
        size = int(rng.integers(0, 160)) if rng.random() < 1 / 3 else int(rng.integers(0, largest))
        pieces.append(signal[..., start : start + size])
        start += size
    return pieces


def model_with(seed: int = 0, **sections) -> CPCModel:
    torch.manual_seed(seed)
    model = CPCModel(tiny_config(**sections))
    if model.config.encoder.normalization == "batch":  # running statistics away from their initial values
        model.train()
        with torch.no_grad():
            model(torch.from_numpy(generated_signal(4 * 8000, np.random.default_rng(seed))).view(4, 1, 8000) * 3)
    return model.eval()


STREAMABLE = {
    "channel": dict(encoder={"normalization": "channel", "input_normalization": "none"}),
    "channel-unbiased-lstm2": dict(
        encoder={"normalization": "channel-unbiased", "input_normalization": "none"},
        context={"kind": "lstm", "num_layers": 2},
    ),
    "batch-gru2": dict(encoder={"normalization": "batch", "input_normalization": "none"}, context={"num_layers": 2}),
    "none": dict(encoder={"normalization": "none", "input_normalization": "none"}),
}


@pytest.mark.parametrize("name", sorted(STREAMABLE))
def test_random_chunks_give_the_whole_signal_frames(name):
    model = model_with(**STREAMABLE[name])
    signal = speech()
    whole = model.extract(signal, 16000, layer="all").frames
    rng = np.random.default_rng(len(name))
    for largest in (50, 700, 9000):
        frames = stream_frames(StreamingExtractor(model, layer="all"), random_pieces(signal, rng, largest))
        torch.testing.assert_close(frames, whole, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "encoder",
    [
        {"kernel_sizes": [7, 3, 3], "strides": [3, 2, 2]},
        {"kernel_sizes": [7, 3, 3], "strides": [3, 2, 2], "paddings": [0, 0, 0]},  # no padding: offset 0
        {"kernel_sizes": [4, 4], "strides": [1, 3], "paddings": [3, 1]},  # more padding than the default
    ],
)
def test_other_encoder_geometries_stream_exactly(encoder):
    model = model_with(encoder={**encoder, "input_normalization": "none"})
    signal = speech()[:6000]
    frames = stream_frames(StreamingExtractor(model), random_pieces(signal, np.random.default_rng(0), 60))
    torch.testing.assert_close(frames, model.extract(signal, 16000).frames, atol=TOLERANCE, rtol=0)


def test_one_sample_at_a_time_and_each_layer():
    model = model_with(**STREAMABLE["channel"])
    signal = speech()[: 3 * 1600 + 37]  # 0.3 s and a bit
    for layer in ("context", "encoder"):
        stream = StreamingExtractor(model, layer=layer)
        pieces = [stream.push(signal[i : i + 1]) for i in range(signal.size)]
        geometry = model.encoder.geometry
        arrivals = [i for i, piece in enumerate(pieces) for _ in range(piece.shape[0])]
        # frame t comes out with the last sample of its receptive field, not before, not later
        assert arrivals == [geometry.frame_start(t) + geometry.receptive_field - 1 for t in range(len(arrivals))]
        frames = torch.cat(pieces + [stream.flush()])
        torch.testing.assert_close(frames, model.extract(signal, 16000, layer=layer).frames, atol=TOLERANCE, rtol=0)
        assert stream.frames_emitted == model.num_frames(signal.size)


def test_frames_come_out_as_soon_as_their_field_is_complete():
    model = model_with(**STREAMABLE["channel"])
    geometry = model.encoder.geometry
    stream = StreamingExtractor(model)
    field_end = geometry.frame_start(9) + geometry.receptive_field  # frame 9's last sample + 1
    assert stream.push(speech()[: field_end - 1]).shape[0] == 9
    assert stream.push(speech()[field_end - 1 : field_end]).shape[0] == 1


def test_imported_cpc_audio_model_streams_exactly():
    model = load_model(shared_data("cpc_audio_checkpoints/default") / "checkpoint_2.pt", device="cpu")
    signal = speech("dr4-maeb0/si1411.wav")
    whole = model.extract(signal, 16000, layer="all").frames
    pieces = random_pieces(signal, np.random.default_rng(5), 4000)
    frames = stream_frames(StreamingExtractor(model, layer="all"), pieces)
    torch.testing.assert_close(frames, whole, atol=TOLERANCE, rtol=0)


def test_multichannel_stream():
    model = model_with(encoder={"in_channels": 3, "input_normalization": "none"})
    rng = np.random.default_rng(2)
    signal = np.stack([generated_signal(12345, rng) for _ in range(3)])  # (3, time)
    frames = stream_frames(StreamingExtractor(model), random_pieces(signal, rng, 3000))
    torch.testing.assert_close(frames, model.extract(signal, 16000).frames, atol=TOLERANCE, rtol=0)
    with pytest.raises(UsageError, match=r"\(3, time\)"):
        StreamingExtractor(model).push(signal[0])


def test_signals_shorter_than_the_receptive_field():
    model = model_with(**STREAMABLE["channel"])
    for length in (0, 1, 100, 300, 466):
        signal = speech()[:length]
        frames = stream_frames(StreamingExtractor(model), random_pieces(signal, np.random.default_rng(length), 90))
        assert frames.shape == (model.num_frames(length), model.config.context.hidden_dim)
        if length:
            torch.testing.assert_close(frames, model.extract(signal, 16000).frames, atol=TOLERANCE, rtol=0)


def test_only_the_left_context_is_kept():
    model = model_with(**STREAMABLE["channel"])
    geometry = model.encoder.geometry
    stream = StreamingExtractor(model)
    signal = generated_signal(16000 * 20, np.random.default_rng(0))
    for start in range(0, signal.size, 1000):
        stream.push(signal[start : start + 1000])
        assert stream.buffered_samples < geometry.receptive_field + geometry.hop
    assert stream.samples_received == signal.size


def test_sequence_standardisation_needs_whole_signal_statistics():
    model = model_with()  # input_normalization: sequence (the default)
    with pytest.raises(UsageError, match="input_statistics"):
        StreamingExtractor(model)
    signal = speech() * 0.3
    statistics = RunningStatistics()
    for piece in random_pieces(signal, np.random.default_rng(0), 5000):
        statistics.update(piece)
    mean, std = statistics.result()
    tensor = torch.from_numpy(signal).view(1, 1, -1).double()
    np.testing.assert_allclose(mean, tensor.mean().item(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, tensor.std(unbiased=False).item(), rtol=1e-9)
    by_hand = (tensor.float() - float(mean[0])) / (float(std[0]) + 1e-5)
    assert torch.allclose(standardize(tensor.float()), by_hand, atol=1e-6)
    stream = StreamingExtractor(model, input_statistics=(mean, std))
    frames = stream_frames(stream, random_pieces(signal, np.random.default_rng(1), 3000))
    torch.testing.assert_close(frames, model.extract(signal, 16000).frames, atol=TOLERANCE, rtol=0)
    with pytest.raises(UsageError, match="raw samples"):
        StreamingExtractor(model_with(**STREAMABLE["none"]), input_statistics=(mean, std))


def test_what_cannot_stream_is_refused_in_one_line():
    for model, match in (
        (model_with(encoder={"normalization": "layer", "input_normalization": "none"}), "normalization 'layer'"),
        (model_with(), "input_normalization"),
    ):
        with pytest.raises(UsageError, match=match) as error:
            StreamingExtractor(model)
        assert "\n" not in str(error.value)
    model = model_with(**STREAMABLE["none"])
    with pytest.raises(UsageError, match="8000 Hz"):
        StreamingExtractor(model, sample_rate=8000)
    with pytest.raises(UsageError, match="layer"):
        StreamingExtractor(model, layer="hidden")


def test_flush_ends_the_stream_and_reset_starts_another():
    model = model_with(**STREAMABLE["none"])
    signal = speech()[:8000]
    stream = StreamingExtractor(model)
    first = stream_frames(stream, [signal])
    assert stream.flush().shape == (0, model.config.context.hidden_dim)
    with pytest.raises(UsageError, match="reset"):
        stream.push(signal)
    stream.reset()
    torch.testing.assert_close(stream_frames(stream, [signal[:3000], signal[3000:]]), first, atol=TOLERANCE, rtol=0)


def test_benchmark_tiny_prints_its_json_line():
    completed = subprocess.run(
        [sys.executable, "benchmarks/streaming.py", "--tiny", "--threads", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (record,) = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert record["benchmark"] == "streaming" and record["frames"] == 2000
    assert record["peak_rss_mib"] >= record["baseline_rss_mib"] > 0 and len(record["rss_mib_by_quarter"]) == 4
