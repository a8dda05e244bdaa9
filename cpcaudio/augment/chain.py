"""The augmentation chain: which effects a window gets, with which parameters, and applying them.

For each window the effects are considered in a fixed order (:data:`EFFECTS`: pitch, reverberation,
additive noise, band-reject, time dropout). Each applies with its probability
(``augment.<effect>_probability``), its parameters drawn uniformly from its ranges. Unlike CPC_audio,
which picks one effect per window at random, the chain composes them independently, as in the paper's
combined "pitch + additive + reverb" setting.

Determinism: every draw for effect ``e`` of window ``position`` of batch ``step`` comes from
``numpy.random.default_rng([AUGMENT_STREAM, seed, rank, step, position, e])``, never from a global RNG.
``step`` is the batch's number in the sampler's stream (:attr:`cpcaudio.data.WindowBatch.step`), so a
batch is augmented the same way whichever process makes it and however the run was resumed, and turning
one effect on or off does not change the draws of the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from cpcaudio.augment import effects
from cpcaudio.augment.noise import NoiseSource, noise_source
from cpcaudio.config import AugmentConfig
from cpcaudio.data.sampler import WindowBatch

AUGMENT_STREAM = 0xA06  # first entry of every augmentation seed sequence (distinct from cpcaudio.train.seeding)
EFFECTS: tuple[str, ...] = ("pitch", "reverb", "noise", "bandreject", "dropout")  # the order they apply in


def effect_generator(seed: int, rank: int, step: int, position: int, effect: int) -> np.random.Generator:
    """The generator of effect number ``effect`` (index into :data:`EFFECTS`) for one window."""
    return np.random.default_rng([AUGMENT_STREAM, int(seed), int(rank), int(step), int(position), int(effect)])


@dataclass(frozen=True)
class Settings:
    """What the effects need besides the config: the data's rate and the noise source."""

    config: AugmentConfig
    sample_rate: int
    noise: NoiseSource


def _pitch(signal: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    return effects.pitch_shift(signal, settings.sample_rate, float(rng.uniform(*settings.config.pitch_cents)))


def _reverb(signal: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    config = settings.config
    decay, wet = float(rng.uniform(*config.reverb_decay_seconds)), float(rng.uniform(*config.reverb_wet))
    return effects.reverberate(signal, effects.room_impulse_response(settings.sample_rate, decay, wet, rng))


def _noise(signal: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    snr_db = float(rng.uniform(*settings.config.noise_snr_db))
    return effects.add_noise(signal, settings.noise.segment(signal.shape[0], signal.shape[-1], rng), snr_db)


def _bandreject(signal: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    band = reject_band(settings.config, settings.sample_rate, rng)
    return signal.copy() if band is None else effects.band_reject(signal, settings.sample_rate, *band)


def _dropout(signal: np.ndarray, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    return effects.time_dropout(signal, dropout_segments(settings.config, settings.sample_rate, signal.shape[-1], rng))


_APPLY: dict[str, Callable[[np.ndarray, Settings, np.random.Generator], np.ndarray]] = {
    "pitch": _pitch,
    "reverb": _reverb,
    "noise": _noise,
    "bandreject": _bandreject,
    "dropout": _dropout,
}


def hz_to_mel(hz: float) -> float:
    """O'Shaughnessy's mel scale, as CPC_audio's band-reject draw."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: float) -> float:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def reject_band(config: AugmentConfig, sample_rate: int, rng: np.random.Generator) -> Optional[tuple[float, float]]:
    """``(low_hz, high_hz)``: centre uniform on the mel scale, width uniform in octaves; the band is cut at
    95% of the Nyquist frequency. None when the centre lies above that (nothing to remove)."""
    nyquist = 0.95 * sample_rate / 2.0
    low_mel, high_mel = (hz_to_mel(min(hz, nyquist)) for hz in config.bandreject_centre_hz)
    centre = mel_to_hz(float(rng.uniform(low_mel, high_mel)))
    half_width = 2.0 ** (float(rng.uniform(*config.bandreject_width_octaves)) / 2.0)
    low, high = centre / half_width, min(centre * half_width, nyquist)
    return (low, high) if low < high else None


def dropout_segments(
    config: AugmentConfig, sample_rate: int, length: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, length)`` segments inside ``[0, length)`` that together cover exactly
    ``round(fraction * length)`` samples, ``fraction`` uniform in ``augment.dropout_fraction``; each
    segment's length is uniform in ``augment.dropout_segment_ms`` (the last one cut to fit)."""
    zeroed = int(round(float(rng.uniform(*config.dropout_fraction)) * length))
    low, high = (max(1, int(round(ms * sample_rate / 1000.0))) for ms in config.dropout_segment_ms)
    lengths: list[int] = []
    while sum(lengths) < zeroed:
        lengths.append(min(int(rng.integers(low, high + 1)), zeroed - sum(lengths)))
    cuts = np.sort(rng.integers(0, length - zeroed + 1, size=len(lengths)))  # the gaps before each segment
    starts = cuts + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if lengths else cuts
    return [(int(start), int(size)) for start, size in zip(starts, lengths)]


class AugmentationChain:
    """The effects of an :class:`~cpcaudio.config.AugmentConfig` for data of ``sample_rate`` Hz.

    Picklable (DataLoader workers get a copy). Example::

        chain = AugmentationChain(config.augment, 16000)
        augmented = chain.augment(batch, seed=0, rank=0)   # (batch, channels, window), zero after lengths

    Raises:
        DataError: ``augment.noise_dir`` is set but is not a folder of readable audio files.
    """

    def __init__(self, config: AugmentConfig, sample_rate: int, noise: Optional[NoiseSource] = None) -> None:
        config.validate()
        if noise is None:
            noise = noise_source(config.noise_dir, config.noise_exponent, sample_rate)
        self.settings = Settings(config, int(sample_rate), noise)
        self.probabilities = {name: float(getattr(config, f"{name}_probability")) for name in EFFECTS}

    @property
    def active(self) -> bool:
        """Whether any window can be changed (``enabled`` and some probability above 0)."""
        return self.settings.config.enabled and any(p > 0 for p in self.probabilities.values())

    def applied(self, seed: int, rank: int, step: int, position: int) -> list[str]:
        """The effects window ``position`` of batch ``step`` gets, in order (the draws :meth:`window` makes)."""
        return [name for name, _ in self._plan(seed, rank, step, position)]

    def _plan(self, seed: int, rank: int, step: int, position: int) -> list[tuple[str, np.random.Generator]]:
        plan = []
        for number, name in enumerate(EFFECTS):
            probability = self.probabilities[name]
            if probability <= 0.0:
                continue
            rng = effect_generator(seed, rank, step, position, number)
            if rng.random() < probability:
                plan.append((name, rng))
        return plan

    def window(self, signal: np.ndarray, seed: int, rank: int, step: int, position: int) -> np.ndarray:
        """One window augmented.

        Args:
            signal: float32 ``(channels, time)``, the valid samples of the window only.
            seed, rank, step, position: identify the window (see the module docstring).

        Returns:
            float32 ``(channels, time)``; a copy of ``signal`` when no effect applies.
        """
        out = np.array(signal, dtype=np.float32, copy=True)
        if out.shape[-1] == 0:
            return out
        for name, rng in self._plan(seed, rank, step, position):
            out = _APPLY[name](out, self.settings, rng)
        return out

    def augment(self, batch: WindowBatch, seed: int, rank: int) -> torch.Tensor:
        """The batch's windows augmented, each over its valid samples only.

        Args:
            batch: from :class:`cpcaudio.data.WindowSampler` (its ``step`` identifies the draws).
            seed, rank: the sampler's seed and rank.

        Returns:
            float32 ``(batch, channels, window)``, zero after ``batch.lengths`` like ``batch.signal``.
        """
        signal = batch.signal.numpy()
        out = np.zeros_like(signal)
        for position, length in enumerate(batch.lengths.tolist()):
            out[position, :, :length] = self.window(signal[position, :, :length], seed, rank, batch.step, position)
        return torch.from_numpy(out)
