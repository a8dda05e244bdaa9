"""Where additive noise comes from: a folder of audio files, or generated coloured noise.

:class:`NoiseFolder` indexes the files' headers once (in the main process, so a bad file is refused
before training starts) and reads one random segment per noisy window: the whole folder never sits in
memory, and worker processes each open the files they need. :class:`ColouredNoise` generates noise with
a ``1/f^exponent`` power spectrum (0 white, 1 pink, 2 brown). Both draw every choice from the generator
they are given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from cpcaudio.errors import DataError


class NoiseSource(Protocol):
    """Gives noise for one window."""

    def segment(self, num_channels: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """float32 ``(num_channels, length)`` noise, drawn with ``rng``."""
        ...


def coloured_noise(num_channels: int, length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as ``1/f^exponent``, standardised per channel.

    Args:
        num_channels, length: the shape wanted.
        exponent: 0 white, 1 pink, 2 brown (red).
        rng: draws the white noise that is shaped.

    Returns:
        float32 ``(num_channels, length)`` with zero mean and unit variance per channel.
    """
    white = rng.standard_normal((num_channels, length))
    if exponent == 0.0 or length < 2:
        shaped = white
    else:
        bins = np.arange(length // 2 + 1, dtype=np.float64)
        bins[0] = np.inf  # no DC
        shaped = np.fft.irfft(np.fft.rfft(white, axis=-1) * bins ** (-exponent / 2.0), length, axis=-1)
    shaped -= shaped.mean(axis=-1, keepdims=True)
    deviation = shaped.std(axis=-1, keepdims=True)
    return (shaped / np.maximum(deviation, 1e-12)).astype(np.float32)


class ColouredNoise:
    """Generated noise, its spectral exponent drawn uniformly from ``exponents`` for each window."""

    def __init__(self, exponents: tuple[float, float]) -> None:
        self.exponents = (float(exponents[0]), float(exponents[1]))

    def segment(self, num_channels: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """float32 ``(num_channels, length)``, independent noise on every channel."""
        exponent = float(rng.uniform(*self.exponents))
        return coloured_noise(num_channels, length, exponent, rng)


class NoiseFolder:
    """Segments of the audio files under ``folder`` (any depth), mixed to mono and resampled with soxr.

    A file is picked with probability proportional to its duration (uniform over the folder's audio),
    then a uniform start; a file shorter than the window is repeated. Every channel of the window gets the
    same noise.

    Args:
        folder: the noise folder (``augment.noise_dir``).
        sample_rate: the training data's rate; files of another rate are resampled.

    Raises:
        DataError: the folder is missing, holds no audio files, or one of them is unreadable.
    """

    def __init__(self, folder: str | os.PathLike, sample_rate: int) -> None:
        from cpcaudio.data.audio import AUDIO_EXTENSIONS, audio_info

        self.folder = Path(folder)
        self.sample_rate = int(sample_rate)
        if not self.folder.is_dir():
            raise DataError(
                f"augment.noise_dir={str(folder)!r} is not a folder; give a folder of noise audio files, or "
                "set augment.noise_dir='' for generated noise"
            )
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        infos = [(path, *audio_info(path)) for path in files]
        self.files = [(path, rate, frames) for path, rate, _, frames in infos if frames > 0]
        if not self.files:
            raise DataError(
                f"augment.noise_dir={str(folder)!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}); "
                "add some, or set augment.noise_dir='' for generated noise"
            )
        seconds = np.asarray([frames / rate for _, rate, frames in self.files], dtype=np.float64)
        self._cumulative = np.cumsum(seconds)

    def segment(self, num_channels: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """float32 ``(num_channels, length)``: one random stretch of one file, the same on every channel."""
        pick = rng.random() * self._cumulative[-1]
        index = min(int(np.searchsorted(self._cumulative, pick, side="right")), len(self.files) - 1)
        path, rate, frames = self.files[index]
        wanted = int(np.ceil(length * rate / self.sample_rate)) + 1  # file samples that cover the window
        start = int(rng.integers(0, max(frames - wanted, 0) + 1))
        noise = self._read(path, start, min(wanted, frames))
        if rate != self.sample_rate:
            import soxr

            noise = soxr.resample(noise, rate, self.sample_rate).astype(np.float32)
        if noise.size < length:
            noise = np.tile(noise, -(-length // max(noise.size, 1)))
        return np.broadcast_to(noise[:length], (num_channels, length)).astype(np.float32)

    def _read(self, path: Path, start: int, frames: int) -> np.ndarray:
        import soundfile

        try:
            with soundfile.SoundFile(os.fsencode(path)) as file:
                file.seek(start)
                samples = file.read(frames, dtype="float32", always_2d=True)  # (time, channels)
        except Exception as error:  # libsndfile errors come in several types
            raise DataError(f"{path}: cannot read noise audio ({error}); replace or remove the file") from None
        mono = samples.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise DataError(f"{path}: noise audio contains NaN or infinite samples; repair or remove the file")
        return mono


def noise_source(noise_dir: str, exponents: tuple[float, float], sample_rate: int) -> NoiseSource:
    """:class:`NoiseFolder` over ``noise_dir``, or :class:`ColouredNoise` when ``noise_dir`` is empty."""
    return NoiseFolder(noise_dir, sample_rate) if noise_dir else ColouredNoise(exponents)
