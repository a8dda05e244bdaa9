"""The time-domain effects of Kharitonov et al. (2020), as pure functions of one window.

Every function takes the valid part of one window, float32 ``(channels, time)``, and returns a new
float32 array of the same shape; each channel gets the same effect. Parameters are explicit (the chain in
:mod:`cpcaudio.augment.chain` draws them), so each effect can be checked on its own.

CPC_audio runs these as sox effect chains (WavAugment). sox is not a dependency here; the effects are
built from what cpcaudio already uses:

- pitch shift: a phase-vocoder time stretch followed by a soxr resample (duration kept);
- reverberation: convolution with a synthetic room impulse response (a direct path plus an exponentially
  decaying noise tail whose 60 dB decay time is the requested RT60);
- band-reject: a zero-phase FFT mask, zero inside the band, raised-cosine transitions just outside it;
- additive noise: scaled to the requested signal-to-noise ratio (noise from :mod:`cpcaudio.augment.noise`);
- time dropout: the given segments set to zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

STFT_SECONDS = 0.032  # pitch shift: analysis window of about 32 ms (512 samples at 16 kHz)


def pitch_shift(signal: np.ndarray, sample_rate: int, cents: float) -> np.ndarray:
    """Shift the pitch by ``cents`` (100 cents = 1 semitone) and keep the duration.

    A phase vocoder stretches the window in time by ``2^(cents/1200)`` and soxr resamples it back to its
    length (librosa's recipe, in numpy: no per-process start-up cost in loader workers).

    Args:
        signal: float32 ``(channels, time)``.
        sample_rate: samples per second.
        cents: the shift; positive raises the pitch.

    Returns:
        float32 ``(channels, time)``; a copy of ``signal`` when ``cents`` is 0, when the signal is shorter
        than two analysis windows, or when the result would not be finite.
    """
    import soxr

    n_fft = 1 << max(4, round(math.log2(STFT_SECONDS * sample_rate)))
    time = signal.shape[-1]
    if cents == 0 or time < 2 * n_fft:
        return signal.copy()
    rate = 2.0 ** (-cents / 1200.0)  # < 1 stretches (then resampling raises the pitch)
    hop = n_fft // 4
    stretched = _istft(_stretch(_stft(signal, n_fft, hop), rate, hop, n_fft), n_fft, hop, round(time / rate))
    shifted = soxr.resample(np.ascontiguousarray(stretched.T), sample_rate / rate, sample_rate).T  # (C, T')
    shifted = np.pad(shifted[:, :time], ((0, 0), (0, max(0, time - shifted.shape[-1]))))
    if not np.isfinite(shifted).all():
        return signal.copy()
    return np.ascontiguousarray(shifted, dtype=np.float32)


def _hann(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic


def _stft(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(channels, time)`` -> complex ``(channels, frames, n_fft // 2 + 1)``, frames centred on ``t * hop``."""
    padded = np.pad(signal.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)))  # zeros: the first frame's
    # phases (where the vocoder starts) then come from the signal alone, not from a mirrored copy of it
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]  # (C, frames, n_fft)
    return np.fft.rfft(frames * _hann(n_fft), axis=-1)


def _istft(spectra: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`: ``(channels, frames, bins)`` -> ``(channels, length)``."""
    window = _hann(n_fft)
    frames = np.fft.irfft(spectra, n_fft, axis=-1) * window  # (C, frames, n_fft)
    count = frames.shape[1]
    out = np.zeros((frames.shape[0], n_fft + hop * (count - 1)))
    weight = np.zeros(out.shape[-1])
    for index in range(count):
        out[:, index * hop : index * hop + n_fft] += frames[:, index]
        weight[index * hop : index * hop + n_fft] += window**2
    out /= np.where(weight > 1e-8, weight, 1.0)
    out = out[:, n_fft // 2 : n_fft // 2 + length]
    return np.pad(out, ((0, 0), (0, length - out.shape[-1])))


def _stretch(spectra: np.ndarray, rate: float, hop: int, n_fft: int) -> np.ndarray:
    """Phase vocoder: frames at fractional positions ``0, rate, 2 rate, ...``; magnitudes interpolated,
    phases advanced by each bin's measured frequency. ``(C, frames, bins)`` -> ``(C, frames / rate, bins)``."""
    positions = np.arange(0.0, spectra.shape[1], rate)
    index = positions.astype(np.int64)
    alpha = (positions - index)[None, :, None]
    padded = np.concatenate([spectra, np.zeros_like(spectra[:, :1])], axis=1)
    before, after = padded[:, index], padded[:, index + 1]
    magnitude = (1.0 - alpha) * np.abs(before) + alpha * np.abs(after)
    expected = 2.0 * np.pi * hop * np.arange(spectra.shape[-1]) / n_fft  # phase advance of each bin per hop
    deviation = np.angle(after) - np.angle(before) - expected
    deviation -= 2.0 * np.pi * np.round(deviation / (2.0 * np.pi))
    increments = np.cumsum(expected + deviation, axis=1)
    phase = np.angle(spectra[:, :1]) + np.concatenate([np.zeros_like(increments[:, :1]), increments[:, :-1]], axis=1)
    return magnitude * np.exp(1j * phase)


def room_impulse_response(
    sample_rate: int, decay_seconds: float, wet: float, rng: np.random.Generator
) -> np.ndarray:
    """A synthetic room: a direct path and a decaying noise tail, of unit energy.

    Args:
        sample_rate: samples per second.
        decay_seconds: RT60, the time the tail takes to decay by 60 dB (the response stops there).
        wet: share of the response's energy in the tail (0: dry, 1: reverberant sound only).
        rng: draws the tail.

    Returns:
        float32 ``(taps,)``, ``taps = round(decay_seconds * sample_rate)`` (at least 2).
    """
    taps = max(2, int(round(decay_seconds * sample_rate)))
    t = np.arange(taps) / sample_rate
    tail = rng.standard_normal(taps) * 10.0 ** (-3.0 * t / decay_seconds)  # -60 dB at t = decay_seconds
    tail[0] = 0.0
    tail *= math.sqrt(wet) / max(float(np.linalg.norm(tail)), 1e-12)
    tail[0] = math.sqrt(1.0 - wet)  # the direct path
    return tail.astype(np.float32)


def reverberate(signal: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """Convolve with ``impulse_response`` (causal), cut to the input's length.

    Args:
        signal: float32 ``(channels, time)``.
        impulse_response: float ``(taps,)``, e.g. from :func:`room_impulse_response`.

    Returns:
        float32 ``(channels, time)``.
    """
    time = signal.shape[-1]
    size = 1 << max(0, (time + impulse_response.size - 2).bit_length())  # >= the full convolution's length
    spectrum = np.fft.rfft(signal, size, axis=-1) * np.fft.rfft(impulse_response, size)
    return np.fft.irfft(spectrum, size, axis=-1)[:, :time].astype(np.float32)


def band_reject(signal: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Remove the band ``[low_hz, high_hz]``: zero-phase, so nothing moves in time.

    The gain is 0 inside the band and rises to 1 over a raised-cosine transition just outside each edge
    (10% of the band's width, at least three frequency bins). The FFT is at least twice the window, so the
    filter does not wrap around.

    Args:
        signal: float32 ``(channels, time)``.
        sample_rate: samples per second.
        low_hz, high_hz: the band's edges, ``0 <= low_hz < high_hz``.

    Returns:
        float32 ``(channels, time)``.
    """
    time = signal.shape[-1]
    size = 1 << max(1, (2 * time - 1).bit_length())
    frequencies = np.fft.rfftfreq(size, 1.0 / sample_rate)
    transition = max(0.1 * (high_hz - low_hz), 3.0 * sample_rate / size)
    distance = np.maximum(low_hz - frequencies, frequencies - high_hz)  # < 0 inside the band
    ramp = np.clip(distance / transition, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * ramp)
    spectrum = np.fft.rfft(signal, size, axis=-1) * gain
    return np.fft.irfft(spectrum, size, axis=-1)[:, :time].astype(np.float32)


def add_noise(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + g * noise`` with ``g`` set so that the signal-to-noise ratio is ``snr_db``.

    Powers are means of squares over every channel and sample of the window.

    Args:
        signal, noise: float32 ``(channels, time)``.
        snr_db: ``10 log10(P_signal / P_added_noise)``.

    Returns:
        float32 ``(channels, time)``; a copy of ``signal`` when it or the noise is silent.
    """
    signal_power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power <= 0.0 or noise_power <= 0.0:
        return signal.copy()
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (signal + gain * noise).astype(np.float32)


def time_dropout(signal: np.ndarray, segments: Sequence[tuple[int, int]]) -> np.ndarray:
    """Set the samples of each ``(start, length)`` segment to zero (every channel).

    Args:
        signal: float32 ``(channels, time)``.
        segments: ``(start, length)`` pairs inside ``[0, time)``.

    Returns:
        float32 ``(channels, time)``.
    """
    out = signal.copy()
    for start, length in segments:
        out[:, start : start + length] = 0.0
    return out
