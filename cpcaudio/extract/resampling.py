"""Resampling for extraction (soxr), with a length known before any audio is read."""

from __future__ import annotations

import numpy as np
import soxr


def resampled_length(num_samples: int, input_rate: int, output_rate: int) -> int:
    """Number of samples :func:`resample` returns (soxr's rule: ``round-half-up(n * out / in)``)."""
    if input_rate == output_rate:
        return int(num_samples)
    return (2 * int(num_samples) * int(output_rate) + int(input_rate)) // (2 * int(input_rate))


def resample(signal: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    """Resample with soxr (high quality).

    Args:
        signal: (channels, time) float array.
        input_rate, output_rate: samples per second.

    Returns:
        (channels, resampled_length(time, input_rate, output_rate)) float32; the length is guaranteed, so
        frame counts can be planned before any audio is read.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if input_rate == output_rate:
        return signal
    length = resampled_length(signal.shape[-1], input_rate, output_rate)
    if signal.shape[-1] == 0:
        return np.zeros((signal.shape[0], length), dtype=np.float32)
    try:
        out = soxr.resample(np.ascontiguousarray(signal.T), input_rate, output_rate).T  # (C, T')
    except ValueError:  # soxr refuses some tiny multichannel arrays (one sample); channels are independent
        out = np.stack([soxr.resample(np.ascontiguousarray(row), input_rate, output_rate) for row in signal])
    if out.shape[-1] != length:  # never seen; keep the promised length regardless
        out = np.pad(out[:, :length], ((0, 0), (0, max(0, length - out.shape[-1]))))
    return np.ascontiguousarray(out, dtype=np.float32)
