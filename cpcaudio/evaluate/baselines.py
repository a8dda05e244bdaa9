"""Baseline features that every probe report shows next to the model: MFCC, log-mel, raw values, random CPC.

All functions take a signal as ``(channels, time)`` (or ``(time,)``) float array and return frames as
``(frames, features)`` float32, together with where those frames sit in time
(:class:`~cpcaudio.evaluate.timing.FrameTiming`), so that frame labels can be aligned to any feature rate.

* **MFCC**: 13 coefficients + deltas + delta-deltas (39 features), 25 ms window, 10 ms hop (one frame per
  160 samples at 16 kHz, i.e. one frame per label frame), 40 mel bands, computed by librosa. Frame ``t``
  is centred on sample ``t * hop`` (librosa's ``center=True``). Multichannel signals are averaged to mono.
* **log-mel**: 40 log mel-band energies, same window and hop.
* **raw values**: the signal itself, one frame per sample with the channels as features: the floor for
  multichannel time series, where spectral features make no sense.
* **random CPC**: the same :class:`cpcaudio.CPCModel` architecture, untrained, from a fixed seed.
"""

from __future__ import annotations

import math
import warnings

from typing import TYPE_CHECKING

import numpy as np

from cpcaudio.evaluate.timing import FrameTiming
from cpcaudio.geometry import FrameGeometry

if TYPE_CHECKING:
    import torch

    from cpcaudio.config import CPCConfig

WINDOW_SECONDS = 0.025  # analysis window of MFCC and log-mel
HOP_SECONDS = 0.010  # frame step of MFCC and log-mel (160 samples at 16 kHz)
NUM_MFCC = 13  # cepstral coefficients before deltas
NUM_MELS = 40  # mel bands of MFCC and log-mel
LOG_FLOOR = 1e-10  # added to mel energies before the log


def spectral_sizes(sample_rate: int) -> tuple[int, int, int]:
    """``(window, hop, n_fft)`` in samples for a 25 ms window and 10 ms hop at ``sample_rate``.

    16 kHz gives (400, 160, 512); 8 kHz gives (200, 80, 256).
    """
    window = max(1, round(WINDOW_SECONDS * sample_rate))
    hop = max(1, round(HOP_SECONDS * sample_rate))
    n_fft = 2 ** math.ceil(math.log2(window))
    return window, hop, n_fft


def spectral_timing(sample_rate: int) -> FrameTiming:
    """Timing of :func:`mfcc` and :func:`log_mel` frames: frame ``t`` centred on sample ``t * hop``.

    librosa's ``center=True`` pads ``n_fft // 2`` samples on each side, so frame ``t`` sees samples
    ``[t * hop - n_fft // 2, t * hop + n_fft // 2)``.
    """
    _, hop, n_fft = spectral_sizes(sample_rate)
    return FrameTiming(FrameGeometry(hop=hop, receptive_field=n_fft, offset=-(n_fft // 2)), sample_rate)


def raw_timing(sample_rate: int) -> FrameTiming:
    """Timing of :func:`raw_values` frames: sample ``t`` covers ``[t, t + 1)``, centred at ``t + 0.5``."""
    return FrameTiming(FrameGeometry(hop=1, receptive_field=1, offset=0), sample_rate)


def _mono(signal: np.ndarray) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim == 1:
        return signal
    if signal.ndim != 2:
        raise ValueError(f"expected a signal of shape (channels, time) or (time,), got {signal.shape}")
    return signal.mean(axis=0)


def _mel_power(signal: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Mel power spectrogram ``(NUM_MELS, frames)`` and the number of frames ``1 + time // hop``."""
    import librosa

    mono = _mono(signal)
    window, hop, n_fft = spectral_sizes(sample_rate)
    num_frames = 1 + mono.shape[0] // hop
    if mono.shape[0] < n_fft:  # librosa warns on signals shorter than n_fft; zero padding is equivalent
        mono = np.pad(mono, (0, n_fft - mono.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty mel filters at low sample rates
        power = librosa.feature.melspectrogram(
            y=mono, sr=sample_rate, n_fft=n_fft, win_length=window, hop_length=hop, n_mels=NUM_MELS,
            center=True, power=2.0,
        )
    return power[:, :num_frames], num_frames


def mfcc(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """MFCC with deltas and delta-deltas.

    Args:
        signal: ``(channels, time)`` or ``(time,)`` float samples; channels are averaged.
        sample_rate: samples per second of ``signal``.

    Returns:
        float32 ``(frames, 39)`` with ``frames = 1 + time // hop`` (hop = 10 ms); timing in
        :func:`spectral_timing`.
    """
    import librosa

    power, _ = _mel_power(signal, sample_rate)
    coefficients = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=NUM_MFCC)  # (13, T)
    delta = librosa.feature.delta(coefficients, order=1, mode="nearest")
    delta2 = librosa.feature.delta(coefficients, order=2, mode="nearest")
    return np.concatenate([coefficients, delta, delta2], axis=0).T.astype(np.float32)  # (T, 39)


def log_mel(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log mel-band energies.

    Args:
        signal: ``(channels, time)`` or ``(time,)`` float samples; channels are averaged.
        sample_rate: samples per second of ``signal``.

    Returns:
        float32 ``(frames, 40)`` natural-log energies, same frames as :func:`mfcc`.
    """
    power, _ = _mel_power(signal, sample_rate)
    return np.log(power + LOG_FLOOR).T.astype(np.float32)  # (T, 40)


def raw_values(signal: np.ndarray, sample_rate: int = 0) -> np.ndarray:
    """The signal itself as frames: float32 ``(time, channels)`` (``sample_rate`` is unused)."""
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim == 1:
        signal = signal[None, :]
    if signal.ndim != 2:
        raise ValueError(f"expected a signal of shape (channels, time) or (time,), got {signal.shape}")
    return np.ascontiguousarray(signal.T)


def random_model(config: CPCConfig, seed: int = 0) -> "torch.nn.Module":
    """The CPC architecture of ``config`` with random weights drawn from ``seed``, untrained, in eval mode.

    The global torch random state is left untouched.
    """
    import torch

    from cpcaudio.model import CPCModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CPCModel(config)
    return model.eval()
