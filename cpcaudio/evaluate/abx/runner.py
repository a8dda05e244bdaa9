"""``run_abx``: ABX error rates of a model's features next to MFCC, log-mel and random-weight baselines.

Every feature set is computed once for the files that have items, each item keeps the frames of its
segment (:func:`~cpcaudio.evaluate.abx.items.frame_spans`), and the errors of every speaker mode x
context mode are computed from those frames (:mod:`.scoring`). The report has one row per features x
speaker mode x context mode, and is written as ``results.json``, ``results.md`` and ``abx.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from cpcaudio.errors import UsageError
from cpcaudio.evaluate.abx.dtw import ItemFeatures
from cpcaudio.evaluate.abx.inputs import (
    DEFAULT_FRAME_HOP,
    Corpus,
    FeatureSet,
    build_feature_sets,
    compute_frames,
    open_corpus,
)
from cpcaudio.evaluate.abx.items import SLICINGS, ItemList, frame_spans, item_codes
from cpcaudio.evaluate.abx.scoring import CONTEXT_MODES, MAX_SIZE_GROUP, MAX_X_ACROSS, SPEAKER_MODES, abx_errors
from cpcaudio.evaluate.feature_sets import FeatureSetOptions
from cpcaudio.progress import ProgressCallback

REPORT_FORMAT = "cpcaudio-abx"
REPORT_FORMAT_VERSION = 1
PathLike = Union[str, Path]


def parse_modes(requested: Optional[Union[str, Sequence[str]]], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Modes from a comma-separated string or a list (None: all of ``allowed``), in ``allowed`` order."""
    if requested is None:
        return allowed
    names = [n.strip() for n in (requested.split(",") if isinstance(requested, str) else requested) if n.strip()]
    for name in names:
        if name not in allowed:
            raise UsageError(f"unknown {what} mode {name!r}; choose from {', '.join(allowed)}")
    if not names:
        raise UsageError(f"give at least one {what} mode ({', '.join(allowed)})")
    return tuple(mode for mode in allowed if mode in names)


@dataclass(frozen=True)
class AbxSettings:
    """How ABX is scored; checked when made (a bad mode or slicing is a :class:`~cpcaudio.errors.UsageError`).

    Attributes:
        speaker_modes: ``within``, ``across`` (comma-separated or a list; None: both). Stored as a tuple.
        context_modes: ``within`` (triphone, libri-light / ZeroSpeech 2021), ``any`` (phoneme, ZeroSpeech
            2024); None: both. Stored as a tuple.
        max_size_group: items kept per (context, speaker, phone) cell (libri-light: 10).
        max_x_across: X speakers drawn per A cell, across speakers (libri-light: 5).
        slicing: ``center`` (frames whose centre lies in the segment) or ``librilight`` (its formula, one
            frame fewer; :func:`~cpcaudio.evaluate.abx.items.frame_spans`).
    """

    speaker_modes: Optional[Union[str, Sequence[str]]] = None
    context_modes: Optional[Union[str, Sequence[str]]] = None
    max_size_group: int = MAX_SIZE_GROUP
    max_x_across: int = MAX_X_ACROSS
    slicing: str = "center"

    def __post_init__(self) -> None:
        object.__setattr__(self, "speaker_modes", parse_modes(self.speaker_modes, SPEAKER_MODES, "speaker"))
        object.__setattr__(self, "context_modes", parse_modes(self.context_modes, CONTEXT_MODES, "context"))
        if self.slicing not in SLICINGS:
            raise UsageError(f"unknown slicing {self.slicing!r}; choose one of {', '.join(SLICINGS)}")
        for name in ("max_size_group", "max_x_across"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")

    def record(self) -> dict[str, Any]:
        """The settings for a report."""
        return {"speaker_modes": list(self.speaker_modes), "context_modes": list(self.context_modes),
                "slicing": self.slicing, "max_size_group": self.max_size_group, "max_x_across": self.max_x_across}


def slice_items(
    frames: Sequence[np.ndarray],
    file_ids: Sequence[str],
    items: ItemList,
    centers: Callable[[int], np.ndarray],
    hop_seconds: float,
    slicing: str = "center",
) -> tuple[list[np.ndarray], np.ndarray]:
    """The frames of each item.

    Args:
        frames: one ``(frames, dim)`` array per file of ``file_ids``.
        file_ids: the files' ids, as the items name them.
        items: the items (every file among ``file_ids``).
        centers: ``num_frames -> (num_frames,)`` frame centres in seconds.
        hop_seconds: seconds between frames.
        slicing: ``center`` or ``librilight`` (:func:`~cpcaudio.evaluate.abx.items.frame_spans`).

    Returns:
        ``(arrays, kept)``: the ``(frames, dim)`` array of every item with at least one frame, and the bool
        ``(items,)`` mask of those items.
    """
    position = {file_id: k for k, file_id in enumerate(file_ids)}
    files = np.asarray([position[f] for f in items.files], dtype=np.int64)
    starts = np.zeros(len(items), dtype=np.int64)
    stops = np.zeros(len(items), dtype=np.int64)
    for k in np.unique(files):
        mine = files == k
        starts[mine], stops[mine] = frame_spans(
            items.onsets[mine], items.offsets[mine], centers(frames[k].shape[0]), hop_seconds, slicing
        )
    kept = stops > starts
    arrays = [frames[files[i]][starts[i] : stops[i]] for i in np.flatnonzero(kept)]
    return arrays, kept


def score_item_frames(
    arrays: list[np.ndarray],
    items: ItemList,
    settings: AbxSettings = AbxSettings(),
    seed: int = 0,
    device: Optional[torch.device] = None,
    progress: Optional[ProgressCallback] = None,
    stage: str = "abx",
) -> list[dict[str, Any]]:
    """ABX rows (``speaker_mode``, ``context_mode``, ``error`` and counts) of items given their frames.

    Args:
        arrays: ``(frames, dim)`` float array of every item of ``items`` (each at least one frame).
        items: the items.
        settings: the modes and the subsampling (its ``slicing`` was used to make ``arrays``).
        seed: seeds the cell subsampling and the X-speaker draws.
        device: where the DTW runs (default CPU).
    """
    features = ItemFeatures.from_arrays(arrays, device)
    rows = []
    for context_mode in settings.context_modes:
        started = time.perf_counter()
        errors = abx_errors(
            features, item_codes(items, context_mode), tuple(settings.speaker_modes), settings.max_size_group,
            settings.max_x_across, seed, progress, f"{stage} ({context_mode} context)",
        )
        seconds = time.perf_counter() - started
        for speaker_mode in settings.speaker_modes:
            rows.append({"speaker_mode": speaker_mode, "context_mode": context_mode, **errors[speaker_mode],
                         "seconds": round(seconds, 3)})
    return rows


def run_abx(
    dataset: PathLike,
    feature_sets: Optional[FeatureSetOptions] = None,
    settings: Optional[AbxSettings] = None,
    *,
    items_file: Optional[PathLike] = None,
    split: Optional[str] = None,
    utterances: Optional[Sequence[int]] = None,
    frame_hop: float = DEFAULT_FRAME_HOP,
    out: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """ABX discriminability of a model's frozen features and of its baselines, on the same items.

    Args:
        dataset: a prepared dataset with phone alignments, or (with ``items_file``) a folder of audio
            or of ``.npy`` features (see :mod:`.inputs`).
        feature_sets: the model (checkpoint, feature store of ``dataset`` or model in memory; none: the
            default architecture with random weights), its layer (``context``, ``encoder`` or ``all``),
            the baselines (None: MFCC, log-mel and random weights), the seed (it also seeds the cell
            subsampling and the X-speaker draws) and the device (the DTW runs there too).
        settings: the modes, subsampling and slicing (None: :class:`AbxSettings`' defaults, every mode).
        items_file: a libri-light / ZeroSpeech ``.item`` file (instead of the dataset's alignments).
        split: take a dataset's items from this split only (default: all utterances).
        utterances: take a dataset's items from these utterance indices only (a quick subset).
        frame_hop: seconds per frame of ``.npy`` feature files.
        out: write ``results.json``, ``results.md`` and ``abx.png`` there.
        progress: receives :class:`cpcaudio.progress.Progress` events.
        overwrite: replace a report already in ``out``.

    Returns:
        The report: dataset, items, settings, model, features (name -> description) and ``results``, one
        row per features x speaker mode x context mode with ``error`` (a fraction) and counts.
    """
    from cpcaudio.devices import resolve_device
    from cpcaudio.evaluate.abx.report import check_report_dir

    options = feature_sets or FeatureSetOptions()
    settings = settings or AbxSettings()
    check_report_dir(out, overwrite, "an ABX report")
    device = resolve_device(options.device)
    corpus = open_corpus(dataset, items_file, split, utterances)
    sets, record = build_feature_sets(corpus, options, frame_hop)
    results = []
    for feature_set in sets:
        results.extend(score_feature_set(corpus, feature_set, settings, options.seed, device, progress))
    report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "dataset": {
            "path": str(corpus.path), "kind": corpus.kind, "split": split,
            "utterances": None if utterances is None else len(set(map(int, utterances))),
            "items_file": None if items_file is None else str(items_file),
        },
        "items": item_summary(corpus.items),
        "settings": dict(
            distance="angular (acos of the dot product of L2-normalised frames, / pi)",
            dtw="normalised by the path length (libri-light)", **settings.record(), seed=options.seed,
            device=str(device),
        ),
        "model": {key: value for key, value in record.items() if key != "config"},
        "features": {s.name: s.description for s in sets},
        "results": results,
    }
    if out is not None:
        from cpcaudio.evaluate.abx.report import write_report

        write_report(report, out)
    return report


def item_summary(items: ItemList) -> dict[str, Any]:
    """Counts of an item list for the report."""
    return {"count": len(items), "files": len(items.file_ids()), "phones": len(set(items.phones)),
            "speakers": len(set(items.speakers))}


def score_feature_set(
    corpus: Corpus,
    feature_set: FeatureSet,
    settings: AbxSettings,
    seed: int,
    device: torch.device,
    progress: Optional[ProgressCallback] = None,
) -> list[dict[str, Any]]:
    """The ABX rows of one feature set on ``corpus``'s items (features computed for the files with items)."""
    started = time.perf_counter()
    wanted = set(corpus.items.files)
    indices = [k for k, file_id in enumerate(corpus.file_ids) if file_id in wanted]
    frames = compute_frames(feature_set, indices, progress)
    feature_seconds = time.perf_counter() - started
    arrays, kept = slice_items(
        frames, [corpus.file_ids[k] for k in indices], corpus.items, feature_set.centers, feature_set.hop_seconds,
        settings.slicing,
    )
    del frames
    rows = score_item_frames(arrays, corpus.items.select(kept), settings, seed, device, progress,
                             f"abx: {feature_set.name}")
    for row in rows:
        row.update(features=feature_set.name, items_without_frames=int((~kept).sum()),
                   feature_seconds=round(feature_seconds, 3))
    return [{"features": row.pop("features"), **row} for row in rows]
