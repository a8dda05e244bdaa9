"""Reading audio files into checked, resampled, stored-format arrays (soundfile + soxr).

soundfile (libsndfile) reads WAV (also NIST SPHERE, i.e. TIMIT's original files), FLAC, OGG and MP3.
Resampling uses soxr; nothing here is a hand-written resampler.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile

from cpcaudio.errors import DataError

INT16_SCALE = 32768.0
# The one list of audio file extensions (folders of audio for prepare and extract): what libsndfile reads,
# WAV, FLAC, Ogg (Vorbis, Opus), MP3, AIFF, AU, CAF, Wave64 and NIST SPHERE.
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".sph"
)
_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMED_SIZES = (0, 0xFFFFFFFF)


def audio_info(path: Path) -> tuple[int, int, int]:
    """``(sample_rate, num_channels, num_samples)`` of an audio file, from its header only."""
    check_not_empty(path)
    try:
        info = soundfile.info(os.fsencode(path))
    except Exception as error:  # libsndfile errors come in several types
        raise DataError(
            f"{display_path(path)}: cannot read audio ({describe_error(error)}); replace or remove the file"
        ) from None
    check_not_truncated(path, info.extra_info)
    return int(info.samplerate), int(info.channels), int(info.frames)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32 in [-1, 1], checking it is usable.

    Returns:
        ``(samples, sample_rate)`` with samples float32 ``(time, channels)``.

    Raises:
        DataError: unreadable or corrupt file, no samples, NaN or infinite samples.
    """
    check_not_empty(path)
    try:
        with soundfile.SoundFile(os.fsencode(path)) as file:
            check_not_truncated(path, file.extra_info)
            samples = file.read(dtype="float32", always_2d=True)
            sample_rate = file.samplerate
    except DataError:
        raise
    except Exception as error:
        raise DataError(
            f"{display_path(path)}: cannot read audio ({describe_error(error)}); replace or remove the file"
        ) from None
    if samples.shape[0] == 0:
        raise DataError(f"{display_path(path)}: audio file has no samples; remove it")
    if not np.isfinite(samples).all():
        raise DataError(f"{display_path(path)}: audio contains NaN or infinite samples; repair or remove the file")
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


def check_not_truncated(path: Path, extra_info: str) -> None:
    """Refuse a WAV file whose data chunk is shorter than its header says (a cut-off copy or download).

    libsndfile reads such a file up to where it ends and notes the mismatch in its log
    (``data : 16000 (should be 7978)``); a declared size of 0 or 0xFFFFFFFF (streamed output whose
    length was never filled in) is not a truncation.
    """
    match = _DATA_CHUNK.search(extra_info or "")
    if match is None:
        return
    declared, present = int(match.group(1)), int(match.group(2))
    if present < declared and declared not in _STREAMED_SIZES:
        raise DataError(
            f"{display_path(path)}: truncated audio file (the header announces {declared} bytes of samples, "
            f"the file holds {present}); replace it with a complete copy or remove it"
        )


def display_path(path: Union[Path, str]) -> str:
    """``path`` as printable text: bytes of a non-UTF-8 file name appear as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def is_utf8_name(path: Union[Path, str]) -> bool:
    """Whether ``path`` is valid UTF-8 (file names that are not decode to lone surrogates in Python)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_not_empty(path: Path) -> None:
    try:
        size = Path(path).stat().st_size
    except OSError as error:
        raise DataError(f"{display_path(path)}: cannot read audio ({error.strerror or error})") from None
    if size == 0:
        raise DataError(f"{display_path(path)}: empty file (0 bytes); replace it with a complete copy or remove it")


def describe_error(error: Exception) -> str:
    libsndfile_message = getattr(error, "error_string", None)  # soundfile.LibsndfileError: without the file name
    if isinstance(libsndfile_message, str) and libsndfile_message.strip():
        return libsndfile_message.strip()
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
