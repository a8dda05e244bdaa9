"""Discrete units: k-means on frame features, the unit sequences, and how well units match phones.

* :func:`fit_kmeans`: scikit-learn's ``MiniBatchKMeans`` (k-means++ init, seeded) with GSLM's settings
  (fairseq ``examples/textless_nlp/gslm/speech2unit/clustering/cluster_kmeans.py``: batch 10000, 150
  iterations, ``tol=0``, ``max_no_improvement=100``, 20 initialisations, reassignment ratio 0.5).
* :class:`KMeansUnits`: the fitted centres, saved without pickle (``kmeans.npz`` with the centres and
  ``kmeans.json`` with what made them); :meth:`KMeansUnits.predict` gives the nearest centre of each frame.
* :meth:`KMeansUnits.encode`: units of new audio through a model (:meth:`KMeansUnits.units_of`: units
  of :func:`cpcaudio.extract.extract`'s result); :func:`quantize`: the same as a function, or of frames
  already computed.
* :func:`unit_quality`: PNMI, phone purity, cluster purity and mean segment lengths, as fairseq's HuBERT
  ``examples/hubert/measure_teacher_quality.py`` defines them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cpcaudio.errors import DataError, UsageError

KMEANS_FORMAT = "cpcaudio-kmeans"
KMEANS_FORMAT_VERSION = 1
CENTERS_FILE = "kmeans.npz"
META_FILE = "kmeans.json"
GSLM_SETTINGS: dict[str, Any] = {  # fairseq GSLM's cluster_kmeans.py defaults (its seed aside)
    "init": "k-means++",
    "max_iter": 150,
    "batch_size": 10000,
    "tol": 0.0,
    "max_no_improvement": 100,
    "n_init": 20,
    "reassignment_ratio": 0.5,
}
PathLike = Union[str, Path]


@dataclass
class KMeansUnits:
    """A fitted k-means codebook.

    Attributes:
        centers: float32 ``(num_units, dim)`` cluster centres.
        meta: what made it: ``features``, ``layer``, ``seed``, ``settings``, ``fit_frames``, ``inertia``...
    """

    centers: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    def predict(self, frames: Union[np.ndarray, torch.Tensor], batch_frames: int = 65536) -> np.ndarray:
        """The nearest centre (squared Euclidean distance, as scikit-learn's ``predict``) of each frame.

        Args:
            frames: ``(frames, dim)`` or ``(batch, frames, dim)`` array or tensor.

        Returns:
            int64 units of shape ``frames.shape[:-1]``.

        Raises:
            UsageError: frames of another width than the centres.
        """
        values = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if values.ndim not in (2, 3) or values.shape[-1] != self.dim:
            raise UsageError(f"expected frames (..., {self.dim}) for this k-means, got shape {values.shape}")
        flat = values.reshape(-1, self.dim).astype(np.float32, copy=False)
        centers = torch.from_numpy(np.ascontiguousarray(self.centers, dtype=np.float32))
        squared = (centers * centers).sum(dim=1)  # (K,)
        out = np.empty(flat.shape[0], dtype=np.int64)
        for start in range(0, flat.shape[0], batch_frames):
            part = torch.from_numpy(np.require(flat[start : start + batch_frames], requirements="CW"))  # (n, D)
            distances = squared[None, :] - 2.0 * part @ centers.T  # (n, K), ||x||^2 left out
            out[start : start + part.shape[0]] = distances.argmin(dim=1).numpy()
        return out.reshape(values.shape[:-1])

    def check_layer(self, layer: str) -> None:
        """Raise a :class:`~cpcaudio.errors.UsageError` unless the codebook was fitted on ``layer`` (or on an
        unrecorded layer)."""
        fitted = self.meta.get("layer")
        if fitted is not None and layer != fitted:
            raise UsageError(f"this k-means was fitted on {fitted} features, not {layer}: ask for layer={fitted!r}")

    def units_of(self, features: Any) -> torch.Tensor:
        """The units of what :func:`cpcaudio.extract.extract` returned (a :class:`~cpcaudio.extract.Features`).

        Returns:
            int64 tensor ``(frames,)`` for one signal, ``(batch, frames)`` for a padded batch, with -1 past
            each sequence's ``frame_lengths``.

        Raises:
            UsageError: features of another layer or width than the codebook's.
        """
        self.check_layer(features.layer)
        units = torch.from_numpy(self.predict(features.frames))
        if units.dim() == 2:  # a padded batch: no unit for the padding
            lengths = features.frame_lengths.to(units.device)
            units[torch.arange(units.shape[1])[None, :] >= lengths[:, None]] = -1
        return units

    def encode(
        self, model: torch.nn.Module, signal: Union[np.ndarray, torch.Tensor], sample_rate: int,
        layer: Optional[str] = None, **extract_options: Any,
    ) -> np.ndarray:
        """Units of new audio: the model's frozen features (:func:`cpcaudio.extract.extract`), quantised.

        Args:
            model: a :class:`~cpcaudio.CPCModel` (the one the codebook's features came from).
            signal: ``(time,)``, ``(channels, time)`` or a padded batch ``(batch, channels, time)`` (then
                give ``lengths=`` among ``extract_options``).
            sample_rate: samples per second of ``signal`` (resampled to the model's rate if it differs).
            layer: the model layer (default: the codebook's, ``meta["layer"]``, else ``context``).
            extract_options: more keyword arguments of :func:`~cpcaudio.extract.extract` (``lengths``,
                ``chunk_seconds``).

        Returns:
            int64 units ``(frames,)``, or ``(batch, frames)`` with -1 past each sequence's length.
        """
        from cpcaudio.extract.features import extract

        layer = layer or self.meta.get("layer") or "context"
        self.check_layer(layer)
        return self.units_of(extract(model, signal, sample_rate, layer=layer, **extract_options)).numpy()

    def save(self, directory: PathLike) -> list[Path]:
        """Write ``kmeans.npz`` (the centres, no pickle) and ``kmeans.json`` into ``directory``."""
        from cpcaudio.files import atomic_write_bytes

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        centers = self.centers.astype(np.float32)
        atomic_write_bytes(directory / CENTERS_FILE, lambda file: np.savez(file, centers=centers))
        meta = {"format": KMEANS_FORMAT, "format_version": KMEANS_FORMAT_VERSION, "num_units": self.num_units,
                "dim": self.dim, **self.meta}
        text = json.dumps(meta, indent=1) + "\n"
        atomic_write_bytes(directory / META_FILE, lambda file: file.write(text.encode("utf-8")))
        return [directory / CENTERS_FILE, directory / META_FILE]

    @classmethod
    def load(cls, path: PathLike) -> "KMeansUnits":
        """Load from a directory holding ``kmeans.npz`` and ``kmeans.json`` (or the path of either).

        Raises:
            DataError: missing or unreadable files, or another format.
        """
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            with np.load(directory / CENTERS_FILE, allow_pickle=False) as archive:
                centers = np.asarray(archive["centers"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"{directory}: not a k-means model ({CENTERS_FILE} + {META_FILE}): {error}") from None
        if meta.get("format") != KMEANS_FORMAT or meta.get("format_version") != KMEANS_FORMAT_VERSION:
            raise DataError(f"{directory / META_FILE}: not a {KMEANS_FORMAT} v{KMEANS_FORMAT_VERSION} k-means model")
        if centers.ndim != 2 or centers.shape[0] != meta.get("num_units"):
            raise DataError(f"{directory / CENTERS_FILE}: centres of shape {centers.shape} disagree with {META_FILE}")
        drop = {"format", "format_version", "num_units", "dim"}
        return cls(centers, {key: value for key, value in meta.items() if key not in drop})


def fit_kmeans(
    frames: Union[np.ndarray, Sequence[np.ndarray]],
    num_units: int,
    seed: int = 0,
    max_frames: Optional[int] = None,
    settings: Optional[dict[str, Any]] = None,
    meta: Optional[dict[str, Any]] = None,
    threads: Optional[int] = 1,
) -> KMeansUnits:
    """Fit k-means on frames.

    Args:
        frames: ``(frames, dim)`` array, or a list of them (one per utterance).
        num_units: clusters ``K``.
        seed: seeds the frame subsample, the k-means++ initialisation and the mini-batches.
        max_frames: fit on at most this many frames, drawn uniformly with ``seed`` (None: all).
        settings: overrides of :data:`GSLM_SETTINGS` (``MiniBatchKMeans`` keyword arguments).
        meta: extra entries for :attr:`KMeansUnits.meta`.
        threads: BLAS / OpenMP threads while fitting (None: the libraries' default). One by default: the
            mini-batches gain little from more, and lose several times over on a busy machine.

    Raises:
        UsageError: ``num_units`` < 2 or more units than frames.
    """
    from sklearn.cluster import MiniBatchKMeans

    data = np.concatenate(list(frames), axis=0) if not isinstance(frames, np.ndarray) else frames
    data = np.ascontiguousarray(data, dtype=np.float32)
    if num_units < 2 or num_units > data.shape[0]:
        raise UsageError(f"k-means needs 2 <= clusters <= frames; got {num_units} clusters for {data.shape[0]} frames")
    if max_frames is not None and data.shape[0] > max_frames:
        data = data[np.sort(np.random.default_rng(seed).choice(data.shape[0], size=max_frames, replace=False))]
    options = {**GSLM_SETTINGS, **(settings or {})}
    from threadpoolctl import threadpool_limits

    kmeans = MiniBatchKMeans(n_clusters=num_units, random_state=seed, compute_labels=False, **options)
    with threadpool_limits(limits=threads):
        kmeans.fit(data)
        inertia = float(-kmeans.score(data) / data.shape[0])
    record = {"seed": seed, "settings": options, "fit_frames": int(data.shape[0]), "inertia_per_frame": inertia,
              **(meta or {})}
    return KMeansUnits(kmeans.cluster_centers_.astype(np.float32), record)


def deduplicate(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal units: ``(units, durations)``, both int64 ``(runs,)`` (durations in frames)."""
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    if units.size == 0:
        return units, units.copy()
    starts = np.concatenate([[0], np.flatnonzero(units[1:] != units[:-1]) + 1])
    durations = np.diff(np.concatenate([starts, [units.size]]))
    return units[starts], durations.astype(np.int64)


def one_hot(units: np.ndarray, num_units: int) -> np.ndarray:
    """float32 ``(frames, num_units)`` one-hot rows of int ``(frames,)`` units (ABX on units)."""
    out = np.zeros((np.asarray(units).shape[0], num_units), dtype=np.float32)
    out[np.arange(out.shape[0]), np.asarray(units, dtype=np.int64)] = 1.0
    return out


def quantize(
    source: Union[torch.nn.Module, np.ndarray, torch.Tensor],
    kmeans: KMeansUnits,
    signal: Optional[Union[np.ndarray, torch.Tensor]] = None,
    sample_rate: Optional[int] = None,
    layer: Optional[str] = None,
) -> np.ndarray:
    """Units of new audio (through a model) or of frames already computed.

    Args:
        source: a :class:`~cpcaudio.CPCModel` (then give ``signal`` and ``sample_rate``), or frames
            ``(frames, dim)`` / ``(batch, frames, dim)``.
        kmeans: the codebook (:meth:`KMeansUnits.load`).
        signal: ``(time,)``, ``(channels, time)`` or a padded batch ``(batch, channels, time)``.
        sample_rate: samples per second of ``signal``.
        layer: the model layer (default: the one the codebook was fitted on, ``kmeans.meta["layer"]``).

    Returns:
        int64 units ``(frames,)`` (or ``(batch, frames)``; through a model, -1 past each sequence's
        length in a padded batch).

    Raises:
        UsageError: a model without a signal, a layer other than the codebook's, frames of another width.
    """
    if isinstance(source, torch.nn.Module):
        if signal is None or sample_rate is None:
            raise UsageError("quantize(model, kmeans, ...) needs the signal and its sample_rate")
        return kmeans.encode(source, signal, sample_rate, layer)
    return kmeans.predict(source)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mean_segment_length(sequences: Sequence[np.ndarray]) -> float:
    lengths = [np.asarray(s).size for s in sequences if np.asarray(s).size]
    runs = sum(deduplicate(np.asarray(s))[0].size for s in sequences if np.asarray(s).size)
    return float(sum(lengths) / runs) if runs else float("nan")


def unit_quality(
    units: Sequence[np.ndarray], phones: Sequence[np.ndarray], num_units: Optional[int] = None
) -> dict[str, Any]:
    """How well units match phone labels, frame by frame (fairseq HuBERT's measures).

    With ``p(x, y)`` the joint frequency of phone ``x`` and unit ``y`` over the frames that have a phone:

    * ``pnmi`` = I(x; y) / H(x), the phone-normalised mutual information;
    * ``phone_purity`` = sum over units of max over phones of p(x, y) (fairseq's ``ref pur``);
    * ``cluster_purity`` = sum over phones of max over units of p(x, y) (fairseq's ``hyp pur``);
    * ``unit_segment_length`` / ``phone_segment_length``: frames per run of equal units over whole
      utterances (``hyp segL``), and per run of equal phones over the labelled frames (``ref segL``).

    Entropies use the natural log, without fairseq's 1e-8 inside the logarithms.

    Args:
        units: int ``(frames,)`` per utterance.
        phones: int ``(frames,)`` per utterance, aligned with ``units``, -1 = no label.
        num_units: size of the codebook (default: the largest unit + 1).

    Returns:
        The measures above plus ``mutual_information``, ``phone_entropy``, ``unit_entropy``,
        ``frames`` and ``units_used``.
    """
    all_units = np.concatenate([np.asarray(u, dtype=np.int64) for u in units]) if units else np.zeros(0, np.int64)
    all_phones = np.concatenate([np.asarray(p, dtype=np.int64) for p in phones]) if phones else np.zeros(0, np.int64)
    if all_units.shape != all_phones.shape:
        raise ValueError(f"units {all_units.shape} and phones {all_phones.shape} must align frame by frame")
    labelled = all_phones >= 0
    x, y = all_phones[labelled], all_units[labelled]
    if x.size == 0:
        raise DataError("no frame has a phone label: unit quality needs phone labels")
    num_units = int(num_units if num_units is not None else y.max() + 1)
    joint = np.zeros((int(x.max()) + 1, num_units), dtype=np.float64)
    np.add.at(joint, (x, y), 1.0)
    joint /= joint.sum()
    p_x, p_y = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    outer = p_x[:, None] * p_y[None, :]
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())
    phone_entropy = _entropy(p_x)
    return {
        "pnmi": mutual / phone_entropy if phone_entropy > 0 else float("nan"),
        "phone_purity": float(joint.max(axis=0).sum()),
        "cluster_purity": float(joint.max(axis=1).sum()),
        "mutual_information": mutual,
        "phone_entropy": phone_entropy,
        "unit_entropy": _entropy(p_y),
        "unit_segment_length": _mean_segment_length(units),
        "phone_segment_length": _mean_segment_length([np.asarray(p)[np.asarray(p) >= 0] for p in phones]),
        "frames": int(x.size),
        "units_used": int((p_y > 0).sum()),
    }
