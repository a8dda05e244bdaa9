"""Reading audio files into checked, resampled, stored-format arrays (soundfile + soxr).

soundfile (libsndfile) reads WAV (also NIST SPHERE, i.e. TIMIT's original files), FLAC, OGG and MP3.
Resampling uses soxr; nothing here is a hand-written resampler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import soundfile

from cpcaudio.errors import DataError

INT16_SCALE = 32768.0
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")


def audio_info(path: Path) -> tuple[int, int, int]:
    """``(sample_rate, num_channels, num_samples)`` of an audio file, from its header only."""
    _check_not_empty(path)
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # libsndfile errors come in several types
        raise DataError(f"{path}: cannot read audio ({_describe(error)})") from None
    return int(info.samplerate), int(info.channels), int(info.frames)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32 in [-1, 1], checking it is usable.

    Returns:
        ``(samples, sample_rate)`` with samples float32 ``(time, channels)``.

    Raises:
        DataError: unreadable or corrupt file, no samples, NaN or infinite samples.
    """
    _check_not_empty(path)
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise DataError(f"{path}: cannot read audio ({_describe(error)})") from None
    if samples.shape[0] == 0:
        raise DataError(f"{path}: audio file has no samples")
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: audio contains NaN or infinite samples")
    return samples, int(sample_rate)


def convert_signal(
    samples: np.ndarray,
    source_rate: int,
    target_rate: Optional[int],
    mono: bool,
    path: Path,
) -> np.ndarray:
    """Mix down and resample a float signal.

    Args:
        samples: float32 ``(time, channels)``.
        source_rate: rate of ``samples``.
        target_rate: rate to resample to with soxr (``None``: keep ``source_rate``).
        mono: average the channels into one.
        path: the file the samples came from (for error messages).

    Returns:
        float32 ``(time', channels')``.
    """
    if mono and samples.shape[1] > 1:
        samples = samples.mean(axis=1, keepdims=True, dtype=np.float32)
    if target_rate is not None and target_rate != source_rate:
        import soxr

        samples = soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32)
        samples = samples.reshape(samples.shape[0], -1)
        if samples.shape[0] == 0:
            raise DataError(f"{path}: too short to resample from {source_rate} Hz to {target_rate} Hz")
    return samples


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float ``[-1, 1]`` -> int16 (x32768, rounded, clipped). Exact inverse of reading PCM_16 as float."""
    return np.clip(np.rint(samples * INT16_SCALE), -32768, 32767).astype(np.int16)


def _check_not_empty(path: Path) -> None:
    try:
        size = Path(path).stat().st_size
    except OSError as error:
        raise DataError(f"{path}: cannot read audio ({error.strerror or error})") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
