"""Each effect does what it says, on generated signals: pitch, band-reject, time dropout, noise SNR, reverb."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cpcaudio.augment import AugmentationChain, ColouredNoise, NoiseFolder, coloured_noise, effects
from cpcaudio.augment.chain import dropout_segments, hz_to_mel, reject_band
from cpcaudio.config import AugmentConfig
from cpcaudio.errors import DataError

RATE = 16000
N = 20480  # 1.28 s, the paper's window


def peak_frequency(signal: np.ndarray) -> float:
    """The strongest frequency of the middle of a mono signal, to a fraction of a cent."""
    middle = signal[N // 5 : -N // 5]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size), 1 << 21))
    return float(np.argmax(spectrum)) * RATE / (1 << 21)


@pytest.mark.parametrize("cents", [-300.0, 75.0, 300.0, 1200.0])
def test_pitch_shift_moves_a_tone_by_the_requested_cents_and_keeps_the_length(cents):
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(N) / RATE)).astype(np.float32)[None]  # (1, N)
    shifted = effects.pitch_shift(tone, RATE, cents)
    assert shifted.shape == tone.shape and shifted.dtype == np.float32
    moved = 1200.0 * math.log2(peak_frequency(shifted[0]) / 440.0)
    assert moved == pytest.approx(cents, abs=1.0)
    assert np.sqrt(np.mean(shifted**2)) > 0.8 * np.sqrt(np.mean(tone**2))  # the tone is still there


def band_energy(signal: np.ndarray, low: float, high: float) -> float:
    frequencies = np.fft.rfftfreq(signal.shape[-1], 1.0 / RATE)
    power = np.abs(np.fft.rfft(signal, axis=-1)) ** 2
    return float(power[..., (frequencies >= low) & (frequencies <= high)].sum())


def test_band_reject_removes_the_band_and_keeps_the_rest():
    noise = np.random.default_rng(0).standard_normal((2, N)).astype(np.float32)  # two channels
    filtered = effects.band_reject(noise, RATE, 1000.0, 2000.0)
    assert filtered.shape == noise.shape
    inside = 10 * np.log10(band_energy(filtered, 1000, 2000) / band_energy(noise, 1000, 2000))
    below = 10 * np.log10(band_energy(filtered, 50, 850) / band_energy(noise, 50, 850))
    above = 10 * np.log10(band_energy(filtered, 2300, 7900) / band_energy(noise, 2300, 7900))
    assert inside < -40.0
    assert abs(below) < 0.1 and abs(above) < 0.1


def test_reject_band_draws_centre_and_width_from_their_ranges():
    config = AugmentConfig(bandreject_centre_hz=(500.0, 3000.0), bandreject_width_octaves=(0.2, 0.4))
    for seed in range(50):
        low, high = reject_band(config, RATE, np.random.default_rng(seed))
        centre, octaves = math.sqrt(low * high), math.log2(high / low)
        assert 500.0 - 1e-6 <= centre <= 3000.0 + 1e-6 and 0.2 - 1e-9 <= octaves <= 0.4 + 1e-9
    # 8 kHz data: a band above 95% of Nyquist is cut there, or not drawn at all.
    edge = AugmentConfig(bandreject_centre_hz=(3700.0, 3900.0), bandreject_width_octaves=(0.5, 0.5))
    bands = [reject_band(edge, 8000, np.random.default_rng(seed)) for seed in range(20)]
    assert all(band is None or band[1] <= 0.95 * 4000 for band in bands)
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.5)


@pytest.mark.parametrize("fraction, segment_ms", [(0.1, (10.0, 100.0)), (0.3, (5.0, 5.0)), (0.0, (10.0, 20.0))])
def test_time_dropout_zeroes_exactly_the_requested_fraction(fraction, segment_ms):
    config = AugmentConfig(dropout_fraction=(fraction, fraction), dropout_segment_ms=segment_ms)
    signal = np.random.default_rng(1).uniform(0.1, 1.0, (1, N)).astype(np.float32)  # no zeros
    longest = round(segment_ms[1] * RATE / 1000)
    for seed in range(5):
        segments = dropout_segments(config, RATE, N, np.random.default_rng(seed))
        dropped = effects.time_dropout(signal, segments)
        assert int((dropped == 0).sum()) == round(fraction * N)
        assert all(0 <= start and start + length <= N and 1 <= length <= longest for start, length in segments)
        assert np.array_equal(dropped[dropped != 0], signal[dropped != 0])  # nothing else changed


@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_additive_noise_reaches_the_requested_snr(snr_db):
    rng = np.random.default_rng(2)
    speech = (0.3 * np.sin(2 * np.pi * 200.0 * np.arange(N) / RATE)).astype(np.float32)[None]
    noisy = effects.add_noise(speech, coloured_noise(1, N, 1.0, rng), snr_db)
    added = (noisy - speech).astype(np.float64)
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added**2))
    assert measured == pytest.approx(snr_db, abs=0.01)
    silent = np.zeros((1, N), dtype=np.float32)
    assert np.array_equal(effects.add_noise(silent, coloured_noise(1, N, 0.0, rng), snr_db), silent)


def test_coloured_noise_has_the_requested_spectral_slope():
    for exponent in (0.0, 1.0, 2.0):
        noise = coloured_noise(4, N, exponent, np.random.default_rng(3))
        assert noise.shape == (4, N) and np.allclose(noise.std(axis=1), 1.0, atol=1e-3)
        frequencies = np.fft.rfftfreq(N, 1.0 / RATE)
        power = (np.abs(np.fft.rfft(noise, axis=-1)) ** 2).mean(axis=0)
        keep = (frequencies > 50) & (frequencies < 7000)
        slope = np.polyfit(np.log(frequencies[keep]), np.log(power[keep]), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.1)


def energy_decay_db(response: np.ndarray) -> np.ndarray:
    """Schroeder's backward-integrated energy decay curve of an impulse response, in dB."""
    remaining = np.cumsum((response.astype(np.float64) ** 2)[::-1])[::-1]
    return 10 * np.log10(remaining / remaining[0] + 1e-30)


@pytest.mark.parametrize("decay_seconds", [0.2, 0.5])
def test_reverb_lengthens_the_decay_to_the_requested_rt60(decay_seconds):
    rng = np.random.default_rng(4)
    click = np.zeros((1, N), dtype=np.float32)
    click[0, 100] = 1.0
    dry_tail = click[0, 100 + int(0.05 * RATE) :]
    wet = effects.reverberate(click, effects.room_impulse_response(RATE, decay_seconds, 0.5, rng))[0, 100:]
    assert not dry_tail.any()  # without reverb nothing follows the click
    assert np.sum(wet[int(0.05 * RATE) :] ** 2) > 1e-3 * np.sum(wet**2)  # with it, a tail (above -30 dB)
    curve = energy_decay_db(wet)
    t5, t35 = (int(np.argmax(curve <= level)) / RATE for level in (-5.0, -35.0))
    assert 2.0 * (t35 - t5) == pytest.approx(decay_seconds, rel=0.15)  # T30 extrapolated to 60 dB


def test_noise_folder_reads_segments_resampled_and_rejects_bad_folders(tmp_path):
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    soundfile.write(folder / "sub" / "hum.wav", 0.2 * rng.standard_normal((3000, 2)), 8000)  # short, stereo, 8 kHz
    soundfile.write(folder / "hiss.flac", 0.1 * rng.standard_normal(40000), 16000)
    source = NoiseFolder(folder, RATE)
    assert len(source.files) == 2
    for seed in range(6):
        segment = source.segment(3, N, np.random.default_rng(seed))
        assert segment.shape == (3, N) and segment.dtype == np.float32
        assert np.isfinite(segment).all() and segment.std() > 0.01
        assert np.array_equal(segment[0], segment[2])
    first = source.segment(1, N, np.random.default_rng(7))
    assert np.array_equal(first, source.segment(1, N, np.random.default_rng(7)))

    config = AugmentConfig(enabled=True, noise_dir=str(folder), noise_snr_db=(12.0, 12.0), noise_probability=1.0,
                           pitch_probability=0.0, reverb_probability=0.0)  # fmt: skip
    speech = (0.3 * np.sin(2 * np.pi * 300.0 * np.arange(N) / RATE)).astype(np.float32)[None]
    noisy = AugmentationChain(config, RATE).window(speech, seed=0, rank=0, step=0, position=0)
    assert 10 * np.log10(np.mean(speech**2) / np.mean((noisy - speech) ** 2)) == pytest.approx(12.0, abs=0.01)

    for bad, reason in ((tmp_path / "absent", "is not a folder"), (tmp_path, "holds no audio files")):
        if bad == tmp_path:
            bad = tmp_path / "empty"
            bad.mkdir()
        with pytest.raises(DataError, match=reason) as error:
            NoiseFolder(bad, RATE)
        assert "\n" not in str(error.value) and "augment.noise_dir" in str(error.value)
    assert isinstance(AugmentationChain(AugmentConfig(), RATE).settings.noise, ColouredNoise)
