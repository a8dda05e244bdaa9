"""What ABX and k-means units run on: the corpus (items and signals) and the feature sets.

The corpus is one of

* a prepared dataset (``cpcaudio prepare``): items from its phone alignments, or from an ``.item`` file
  whose file ids are its utterance ids;
* a folder of audio files with an ``.item`` file (file id = file name without extension, searched
  recursively), e.g. libri-light's ``dev-clean`` with ``dev-clean.item``;
* a folder of ``.npy`` feature files ``(frames, dim)`` with an ``.item`` file; frame ``i`` is taken to
  be centred at ``(i + 1/2) * frame_hop`` seconds, libri-light's convention.

Feature sets are the model (a checkpoint, a model in memory, a feature store; one per layer), and the
baselines of ``cpcaudio probe`` (MFCC, log-mel, the same architecture with random weights), computed from
the same signals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.abx.items import ItemList, items_from_dataset, read_item_file
from cpcaudio.evaluate.feature_sets import FeatureSetOptions
from cpcaudio.geometry import FrameGeometry, ceil_div
from cpcaudio.progress import Progress, ProgressCallback, report

PathLike = Union[str, Path]
LAYER_CHOICES = ("context", "encoder", "all")
DEFAULT_FRAME_HOP = 0.01  # seconds between frames of .npy feature files (libri-light's --feature_size)


class AudioFolder:
    """A folder of audio files opened like a dataset: ``utterance_ids``, ``signal(i)``, ``sample_rate``."""

    def __init__(self, path: Path, ids: Optional[set[str]] = None) -> None:
        from cpcaudio.data.audio import AUDIO_EXTENSIONS, audio_info

        self.path = Path(path)
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if ids is not None:
            files = [p for p in files if p.stem in ids]
        if not files:
            raise DataError(f"{self.path}: no audio files{' named in the item file' if ids else ''}")
        self.files = files
        self.utterance_ids = [p.stem for p in files]
        rates = {audio_info(p)[0] for p in files}
        if len(rates) > 1:
            raise DataError(f"{self.path}: audio files at several sample rates ({sorted(rates)}); resample them first")
        self.sample_rate = rates.pop()
        self.num_channels = 1
        self.meta = {"signal_kind": "audio"}

    def signal(self, index: int) -> np.ndarray:
        """Whole file ``index`` as float32 ``(channels, time)``."""
        from cpcaudio.data.audio import read_audio

        samples, _ = read_audio(self.files[int(index)])
        return np.ascontiguousarray(samples.T)


@dataclass
class FeatureSet:
    """Frames of every file for one row group of the report.

    Attributes:
        name: the report's ``features`` column (``model``, ``mfcc``, ``random-encoder``, ...).
        description: one line saying what it is.
        frames: ``(file indices) -> [(frames, dim) float32]``.
        timing: where the frames sit (a :class:`cpcaudio.evaluate.timing.FrameTiming`: ``centers(n)``,
            ``hop`` in seconds, and the geometry that frame labels are aligned with).
        layer: the model layer (``context``, ``encoder``) of model and random-weight sets; None otherwise.
    """

    name: str
    description: str
    frames: Callable[[Sequence[int]], list[np.ndarray]]
    timing: Any
    layer: Optional[str] = None

    def centers(self, num_frames: int) -> np.ndarray:
        """Centres of frames ``0 .. num_frames - 1`` in seconds: float64 ``(num_frames,)``."""
        return self.timing.centers(num_frames)

    @property
    def hop_seconds(self) -> float:
        """Seconds between frames."""
        return float(self.timing.hop)


@dataclass
class Corpus:
    """Items and where their frames come from.

    Attributes:
        kind: ``dataset``, ``audio`` or ``features``.
        source: the prepared dataset or :class:`AudioFolder` (None for a feature folder).
        items: the items (only those of files the corpus has).
        file_ids: the corpus's file ids (index = file index used by :class:`FeatureSet`).
        feature_files: for ``features``: the ``.npy`` path of each file.
    """

    kind: str
    path: Path
    source: Any
    items: ItemList
    file_ids: list[str]
    feature_files: Optional[list[Path]] = None


def open_corpus(
    path: PathLike,
    items_file: Optional[PathLike] = None,
    split: Optional[str] = None,
    utterances: Optional[Sequence[int]] = None,
) -> Corpus:
    """Open ``path`` (a prepared dataset, a folder of audio or of ``.npy`` features) with its items.

    Args:
        path: the corpus.
        items_file: a libri-light ``.item`` file (required for folders; for a dataset it replaces the
            items made from its alignments).
        split: a dataset's split to take items from (``train``, ``test``, ...; default: every utterance).
        utterances: a dataset's utterance indices to take items from (with ``split``: those of the split).

    Raises:
        DataError: unreadable corpus or item file, or no item whose file the corpus has.
        UsageError: ``utterances`` for a folder, or an index out of range.
    """
    path = Path(path)
    given = read_item_file(items_file) if items_file is not None else None
    if (path / "meta.json").is_file():
        from cpcaudio.data import PreparedDataset

        dataset = PreparedDataset.open(path)
        chosen = _chosen_utterances(dataset, path, split, utterances)
        if given is None:
            items = items_from_dataset(dataset, chosen)
        else:
            keep = set(dataset.utterance_ids if chosen is None else [dataset.utterance_ids[i] for i in chosen])
            items = given.select(np.asarray([f in keep for f in given.files], dtype=bool))
        return _checked(Corpus("dataset", path, dataset, items, list(dataset.utterance_ids)), items_file)
    if utterances is not None:
        raise UsageError(f"{path} is a folder, not a prepared dataset: utterance indices need a dataset")
    if not path.is_dir():
        raise DataError(f"{path}: neither a prepared dataset nor a folder")
    if given is None:
        raise UsageError(f"{path} is a folder, not a prepared dataset: give its .item file (--items)")
    wanted = set(given.files)
    npy = sorted(p for p in path.rglob("*.npy") if p.stem in wanted)
    if npy:
        ids = [p.stem for p in npy]
        items = given.select(np.asarray([f in set(ids) for f in given.files], dtype=bool))
        return _checked(Corpus("features", path, None, items, ids, npy), items_file)
    folder = AudioFolder(path, wanted)
    keep = set(folder.utterance_ids)
    items = given.select(np.asarray([f in keep for f in given.files], dtype=bool))
    return _checked(Corpus("audio", path, folder, items, folder.utterance_ids), items_file)


def _chosen_utterances(
    dataset: Any, path: Path, split: Optional[str], utterances: Optional[Sequence[int]]
) -> Optional[np.ndarray]:
    """The sorted utterance indices of ``split`` and ``utterances`` (None: every utterance)."""
    chosen = None
    if split is not None:
        chosen = np.asarray(dataset.indices(split), dtype=np.int64)
        if chosen.size == 0:
            raise DataError(f"dataset {path} has no utterance in split {split!r}")
    if utterances is not None:
        subset = np.unique(np.asarray(list(utterances), dtype=np.int64))
        if subset.size and (subset[0] < 0 or subset[-1] >= len(dataset)):
            raise UsageError(f"utterance indices must lie in [0, {len(dataset)}) for dataset {path}")
        chosen = subset if chosen is None else np.intersect1d(chosen, subset)
    return chosen


def _checked(corpus: Corpus, items_file: Optional[PathLike]) -> Corpus:
    if len(corpus.items) == 0:
        where = f"the item file {items_file}" if items_file is not None else "its alignments"
        raise DataError(f"{corpus.path}: no ABX item from {where} matches a file of the corpus")
    return corpus


def folder_feature_set(corpus: Corpus, frame_hop: float) -> FeatureSet:
    """The feature set of a folder of ``.npy`` files: frame ``i`` centred at ``(i + 1/2) * frame_hop``."""
    from cpcaudio.evaluate.timing import FrameTiming

    rate = Fraction(1) / Fraction(frame_hop).limit_denominator(1_000_000)
    if rate.denominator != 1:
        raise UsageError(f"frame hop {frame_hop} s must be 1 / an integer number of frames per second")
    timing = FrameTiming(FrameGeometry(hop=1, receptive_field=1, offset=0), int(rate))
    files = corpus.feature_files or []

    def frames(indices: Sequence[int]) -> list[np.ndarray]:
        out = []
        for i in indices:
            array = np.load(files[int(i)], allow_pickle=False)
            if array.ndim != 2:
                raise DataError(f"{files[int(i)]}: expected (frames, dim) features, got shape {array.shape}")
            out.append(array.astype(np.float32, copy=False))
        return out

    return FeatureSet("features", f".npy features of {corpus.path}, {frame_hop:g} s hop", frames, timing)


def _from_source(source: Any, dataset: Any, name: str, layer: Optional[str] = None) -> FeatureSet:
    frames = lambda indices: source.utterance_frames(dataset, indices)  # noqa: E731
    return FeatureSet(name, source.description, frames, source.timing, layer)


def build_feature_sets(
    corpus: Corpus, options: Optional[FeatureSetOptions] = None, frame_hop: float = DEFAULT_FRAME_HOP
) -> tuple[list[FeatureSet], dict[str, Any]]:
    """The model's feature sets (one per layer) and the baselines', for ``corpus``.

    A folder of ``.npy`` features is its own single feature set (``frame_hop`` seconds per frame). With
    none of ``options.checkpoint``, ``.features`` and ``.model``, the model has random weights
    (``options.seed``) and is the ``random`` row.

    Returns:
        ``(feature sets, model record)``.
    """
    from cpcaudio.devices import resolve_device
    from cpcaudio.evaluate.runner import parse_baselines
    from cpcaudio.evaluate.sources import baseline_sources, is_audio, resolve_model_source

    options = options or FeatureSetOptions()
    checkpoint, features, model, layer, seed = (options.checkpoint, options.features, options.model, options.layer,
                                                options.seed)
    if layer not in LAYER_CHOICES:
        raise UsageError(f"unknown layer {layer!r}; choose one of {', '.join(LAYER_CHOICES)}")
    if corpus.kind == "features":
        if checkpoint is not None or features is not None or model is not None:
            raise UsageError("a folder of .npy features is scored as it is: drop --checkpoint / --features")
        return [folder_feature_set(corpus, frame_hop)], {"features": str(corpus.path), "layer": None}
    if features is not None and corpus.kind != "dataset":
        raise UsageError("a feature store belongs to a prepared dataset; give the dataset, not a folder")
    device = resolve_device(options.device)
    dataset = corpus.source
    layers = ["context", "encoder"] if layer == "all" and features is None else [layer]
    names = parse_baselines(options.baselines, is_audio(dataset), "phone")
    sets: list[FeatureSet] = []
    record: dict[str, Any] = {}
    baseline_rows: list[FeatureSet] = []
    for chosen in layers:
        source, config, record = resolve_model_source(dataset, checkpoint, features, model, chosen, seed, device)
        suffix = f"-{record['layer']}" if len(layers) > 1 else ""
        base = "random" if record["random_init"] else "model"
        sets.append(_from_source(source, dataset, base + suffix, record["layer"]))
        for baseline in baseline_sources(names, dataset.sample_rate, config, record, seed, device):
            if baseline.name == "random":
                sets.append(_from_source(baseline, dataset, "random" + suffix, record["layer"]))
            elif chosen == layers[0]:
                baseline_rows.append(_from_source(baseline, dataset, baseline.name))
    record["layers"] = [record["layer"]] if features is not None else layers
    return sets + baseline_rows, record


def compute_frames(
    feature_set: FeatureSet, indices: Sequence[int], progress: Optional[ProgressCallback] = None, stage: str = ""
) -> list[np.ndarray]:
    """``feature_set.frames`` over ``indices`` in about 20 steps, reporting progress after each."""
    out: list[np.ndarray] = []
    step = max(1, ceil_div(len(indices), 20))
    stage = stage or f"features: {feature_set.name}"
    for start in range(0, len(indices), step):
        out.extend(feature_set.frames(indices[start : start + step]))
        report(progress, Progress(stage, min(start + step, len(indices)), len(indices), unit="utt"))
    return out
