"""k-means units: PNMI and purities, de-duplication, the codebook on disk, quantising new audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import generated_signal, tiny_config

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.units import KMeansUnits, deduplicate, fit_kmeans, one_hot, quantize, unit_quality


def _phones(seed: int = 0, utterances: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.repeat(rng.integers(0, 12, 40), rng.integers(2, 9, 40)) for _ in range(utterances)]


def test_pnmi_is_one_for_units_equal_to_phones() -> None:
    phones = _phones()
    quality = unit_quality(phones, phones)
    assert quality["pnmi"] == pytest.approx(1.0)
    assert quality["phone_purity"] == pytest.approx(1.0) and quality["cluster_purity"] == pytest.approx(1.0)
    assert quality["unit_segment_length"] == pytest.approx(quality["phone_segment_length"])
    relabelled = [(7 * p + 3) % 12 for p in phones]  # a permutation of the labels: still a perfect match
    assert unit_quality(relabelled, phones)["pnmi"] == pytest.approx(1.0)


def test_pnmi_is_near_zero_for_random_units() -> None:
    phones = _phones(utterances=200)  # ~40k frames
    rng = np.random.default_rng(1)
    units = [rng.integers(0, 50, p.shape[0]) for p in phones]
    quality = unit_quality(units, phones, num_units=50)
    assert 0.0 <= quality["pnmi"] < 0.01  # the finite-sample bias, (50 - 1)(12 - 1) / 2N nats, is ~0.003
    assert quality["units_used"] == 50
    assert quality["unit_segment_length"] < 1.1


def test_purities_by_hand_and_unlabelled_frames_ignored() -> None:
    # phones 0 0 1 1, units 0 0 0 1: p(x, y) = [[.5, 0], [.25, .25]]
    quality = unit_quality([np.array([0, 0, 0, 1, 1])], [np.array([0, 0, 1, 1, -1])])
    assert quality["frames"] == 4
    assert quality["phone_purity"] == pytest.approx(0.5 + 0.25)  # max over phones, per unit
    assert quality["cluster_purity"] == pytest.approx(0.5 + 0.25)  # max over units, per phone
    h_phone = np.log(2)
    mutual = 0.5 * np.log(0.5 / (0.5 * 0.75)) + 0.25 * np.log(0.25 / (0.5 * 0.75)) + 0.25 * np.log(0.25 / (0.5 * 0.25))
    assert quality["pnmi"] == pytest.approx(mutual / h_phone)
    with pytest.raises(DataError):
        unit_quality([np.array([0, 1])], [np.array([-1, -1])])


def test_deduplicate_and_one_hot() -> None:
    units, durations = deduplicate(np.array([3, 3, 3, 1, 1, 3, 0]))
    assert units.tolist() == [3, 1, 3, 0] and durations.tolist() == [3, 2, 1, 1]
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]


def test_kmeans_is_seeded_and_saved_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 10
    frames = (centres[rng.integers(0, 5, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    first = fit_kmeans(frames, 5, seed=3, meta={"layer": "context"})
    again = fit_kmeans(frames, 5, seed=3, meta={"layer": "context"})
    np.testing.assert_array_equal(first.centers, again.centers)
    units = first.predict(frames)
    assert unit_quality([units], [np.argmin(((frames[:, None] - centres[None]) ** 2).sum(-1), axis=1)])["pnmi"] > 0.99
    first.save(tmp_path / "km")
    meta = json.loads((tmp_path / "km" / "kmeans.json").read_text())
    assert meta["num_units"] == 5 and meta["settings"]["n_init"] == 20 and meta["layer"] == "context"
    with np.load(tmp_path / "km" / "kmeans.npz", allow_pickle=False) as archive:  # plain arrays only
        assert archive["centers"].shape == (5, 8)
    loaded = KMeansUnits.load(tmp_path / "km")
    np.testing.assert_array_equal(loaded.predict(frames), units)
    np.testing.assert_array_equal(loaded.predict(torch.from_numpy(frames[None])), units[None])
    with pytest.raises(UsageError, match="expected frames"):
        loaded.predict(frames[:, :4])
    with pytest.raises(DataError):
        KMeansUnits.load(tmp_path)
    with pytest.raises(UsageError):
        fit_kmeans(frames[:3], 5)


def test_quantize_new_audio_through_a_model() -> None:
    from cpcaudio.extract.features import extract
    from cpcaudio.model import CPCModel

    torch.manual_seed(0)
    model = CPCModel(tiny_config()).eval()
    signal = generated_signal(16000 * 2, np.random.default_rng(0))
    frames = extract(model, signal, 16000, layer="encoder").frames.numpy()
    kmeans = fit_kmeans(frames, 4, seed=0, meta={"layer": "encoder"})
    units = quantize(model, kmeans, signal, 16000)
    assert units.shape == (frames.shape[0],)
    np.testing.assert_array_equal(units, kmeans.predict(frames))
    np.testing.assert_array_equal(quantize(frames, kmeans), units)
    with pytest.raises(UsageError, match="fitted on encoder"):
        quantize(model, kmeans, signal, 16000, layer="context")
    with pytest.raises(UsageError, match="needs the signal"):
        quantize(model, kmeans)


def _model_signals_and_codebook() -> tuple[torch.nn.Module, np.ndarray, np.ndarray, KMeansUnits]:
    """A tiny random model, a 1 s and a 0.5 s signal, and a 4-unit codebook of the 1 s signal's context."""
    from cpcaudio.extract.features import extract
    from cpcaudio.model import CPCModel

    torch.manual_seed(0)
    model = CPCModel(tiny_config()).eval()
    rng = np.random.default_rng(0)
    long, short = generated_signal(16000, rng), generated_signal(8000, rng)
    kmeans = fit_kmeans(extract(model, long, 16000).frames.numpy(), 4, seed=0, meta={"layer": "context"})
    return model, long, short, kmeans


def test_encode_is_the_codebook_method_and_marks_padding() -> None:
    from cpcaudio.extract.features import extract

    model, long, short, kmeans = _model_signals_and_codebook()
    alone = kmeans.encode(model, long, 16000)
    np.testing.assert_array_equal(alone, quantize(model, kmeans, long, 16000))
    batch = np.zeros((2, 1, 16000), dtype=np.float32)
    batch[0, 0], batch[1, 0, :8000] = long, short
    units = kmeans.encode(model, batch, 16000, lengths=[16000, 8000])
    features = extract(model, batch, 16000, lengths=[16000, 8000])
    assert units.shape == (2, alone.shape[0]) and units.dtype == np.int64
    short_frames = int(features.frame_lengths[1])
    np.testing.assert_array_equal(units[1, :short_frames], kmeans.encode(model, short, 16000))
    assert (units[1, short_frames:] == -1).all() and (units[0] >= 0).all()
    np.testing.assert_array_equal(kmeans.units_of(features).numpy(), units)
    with pytest.raises(UsageError, match="fitted on context"):
        kmeans.units_of(extract(model, long, 16000, layer="encoder"))


def test_extract_with_units_carries_the_unit_of_each_frame() -> None:
    from cpcaudio.extract.features import extract

    model, long, short, kmeans = _model_signals_and_codebook()
    plain = extract(model, long, 16000)
    assert plain.units is None
    features = model.extract(long, 16000, units=kmeans)
    torch.testing.assert_close(features.frames, plain.frames, rtol=0, atol=0)
    assert features.units.dtype == torch.int64 and features.units.shape == (plain.frames.shape[0],)
    np.testing.assert_array_equal(features.units.numpy(), kmeans.predict(plain.frames))
    assert len(set(features.units.tolist())) > 1  # a real quantisation, not one constant unit
    batch = np.zeros((2, 1, 16000), dtype=np.float32)
    batch[0, 0], batch[1, 0, :8000] = long, short
    batched = extract(model, batch, 16000, lengths=[16000, 8000], units=kmeans)
    short_frames = int(batched.frame_lengths[1])
    np.testing.assert_array_equal(batched.units.numpy(), kmeans.encode(model, batch, 16000, lengths=[16000, 8000]))
    assert (batched.units[1, short_frames:] == -1).all() and (batched.units[0] >= 0).all()


def test_extract_refuses_units_of_another_layer_or_width_before_running() -> None:
    from cpcaudio.extract.features import extract
    from cpcaudio.model import CPCModel

    model = CPCModel(tiny_config()).eval()
    width = model.config.context.hidden_dim
    bad_shape = np.zeros((3, 2, 2, 100), dtype=np.float32)  # would fail later, in the input checks
    context_codebook = KMeansUnits(np.eye(3, width, dtype=np.float32), {"layer": "context"})
    with pytest.raises(UsageError, match="fitted on context features, not encoder: ask for layer='context'"):
        extract(model, bad_shape, 16000, layer="encoder", units=context_codebook)
    narrow = KMeansUnits(np.eye(3, width + 1, dtype=np.float32), {})  # no recorded layer: the width decides
    with pytest.raises(UsageError, match=rf"{width + 1}-dim centres but the model's context features are {width}-dim"):
        extract(model, bad_shape, 16000, units=narrow)
    with pytest.raises(TypeError, match="units must be a fitted k-means"):
        extract(model, bad_shape, 16000, units=np.eye(3, width))
