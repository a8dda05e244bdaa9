"""``run_units``: k-means units of a model's features and of the baselines, and how phone-like they are.

For every feature set (the model's layer(s), MFCC, log-mel, random weights; :mod:`cpcaudio.evaluate.abx.inputs`)
k-means is fitted on the frames of the dataset's ``train`` split and applied to every utterance. Where the
dataset has phone labels, the report gives PNMI, phone and cluster purity and segment lengths per split
(:func:`cpcaudio.evaluate.units.unit_quality`) and the ABX error of the one-hot units.

Written into ``out``: ``results.json``, ``results.md``, ``pnmi.png`` and, per feature set, a folder with
``kmeans.npz`` + ``kmeans.json`` (the codebook), ``units.txt`` and ``units_dedup.txt`` (one line per
utterance: its id, then its units; de-duplicated: runs of equal units merged).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.abx.inputs import Corpus, FeatureSet, build_feature_sets, compute_frames
from cpcaudio.evaluate.abx.items import ItemList, items_from_dataset
from cpcaudio.evaluate.abx.report import check_report_dir, error_text, save_figure, write_json, write_text
from cpcaudio.evaluate.abx.runner import AbxSettings, item_summary, score_item_frames, slice_items
from cpcaudio.evaluate.feature_sets import FeatureSetOptions
from cpcaudio.evaluate.units import KMeansUnits, deduplicate, fit_kmeans, one_hot, unit_quality
from cpcaudio.progress import Progress, ProgressCallback, report

REPORT_FORMAT = "cpcaudio-units"
REPORT_FORMAT_VERSION = 1
PathLike = Union[str, Path]


def _dataset_corpus(path: PathLike, utterances: Optional[Sequence[int]]) -> tuple[Corpus, list[int]]:
    """The dataset with its items (none without phone labels), and the utterances to take, sorted."""
    from cpcaudio.data import PreparedDataset

    path = Path(path)
    if not (path / "meta.json").is_file():
        raise DataError(f"{path}: not a prepared dataset; 'cpcaudio units' fits on a dataset's train split")
    dataset = PreparedDataset.open(path)
    chosen = sorted({int(i) for i in utterances}) if utterances is not None else list(range(len(dataset)))
    if chosen and (chosen[0] < 0 or chosen[-1] >= len(dataset)):
        raise UsageError(f"utterance indices must lie in [0, {len(dataset)}) for dataset {path}")
    if dataset.has_frame_labels and dataset.phone_vocabulary is not None:
        items = items_from_dataset(dataset, chosen)
    else:
        items = ItemList([], np.zeros(0), np.zeros(0), [], [], [], [])
    return Corpus("dataset", path, dataset, items, list(dataset.utterance_ids)), chosen


@dataclass(frozen=True)
class _Fit:
    """What :func:`run_units` does with each feature set: units of ``utterances`` (dataset indices), fitted
    on those of ``train``, with the units' ABX when ``abx`` is given."""

    utterances: list[int]
    train: list[int]
    clusters: int
    seed: int
    max_fit_frames: Optional[int]
    abx: Optional[AbxSettings]
    device: torch.device


def run_units(
    dataset: PathLike,
    feature_sets: Optional[FeatureSetOptions] = None,
    *,
    clusters: int = 50,
    utterances: Optional[Sequence[int]] = None,
    max_fit_frames: Optional[int] = None,
    abx: Optional[AbxSettings] = AbxSettings(),
    out: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """k-means units (``clusters`` of them) of each feature set, fitted on the train split.

    Args:
        dataset: a prepared dataset with a ``train`` split (phone labels optional).
        feature_sets: the model, layer(s), baselines, seed (it also seeds the k-means and the ABX
            subsampling) and device, as for :func:`cpcaudio.evaluate.abx.run_abx`.
        clusters: k-means clusters ``K``.
        utterances: only these utterance indices (a quick subset): fitted on its train utterances,
            measured and written for all of it (default: every utterance).
        max_fit_frames: fit on at most this many train frames (seeded draw; None: all).
        abx: how to score the one-hot units with ABX (needs phone labels); None: no ABX.
        out: write the report and the codebooks there.
        progress: receives :class:`cpcaudio.progress.Progress` events.
        overwrite: replace a report already in ``out``.

    Returns:
        The report: per feature set its k-means record, ``quality`` per split (where there are phone
        labels) and ABX rows of the units.
    """
    from cpcaudio.devices import resolve_device

    options = feature_sets or FeatureSetOptions()
    check_report_dir(out, overwrite, "a units report")
    if clusters < 2:
        raise UsageError(f"--clusters must be at least 2, got {clusters}")
    device = resolve_device(options.device)
    corpus, chosen = _dataset_corpus(dataset, utterances)
    source = corpus.source
    train_split = {int(i) for i in source.indices("train")}
    train = [i for i in chosen if i in train_split]
    if not train:
        raise DataError(f"dataset {corpus.path} has no 'train' utterances to fit k-means on")
    sets, record = build_feature_sets(corpus, options)
    abx_settings = abx if len(corpus.items) > 0 else None
    fit = _Fit(chosen, train, clusters, options.seed, max_fit_frames, abx_settings, device)
    rows = [_units_of(corpus, feature_set, fit, out, progress) for feature_set in sets]
    result = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "dataset": {"path": str(corpus.path), "utterances": len(chosen), "of": len(source), "train": len(train)},
        "items": item_summary(corpus.items),
        "clusters": clusters,
        "seed": options.seed,
        "abx_settings": None if fit.abx is None else fit.abx.record(),
        "model": {key: value for key, value in record.items() if key != "config"},
        "features": {s.name: s.description for s in sets},
        "results": rows,
    }
    if out is not None:
        write_units_report(result, Path(out))
    return result


def _units_of(
    corpus: Corpus, feature_set: FeatureSet, fit: _Fit, out: Optional[PathLike], progress: Optional[ProgressCallback]
) -> dict[str, Any]:
    """Fit, apply and measure the units of one feature set."""
    from cpcaudio.evaluate.timing import align_frame_labels

    dataset, clusters, chosen = corpus.source, fit.clusters, fit.utterances
    started = time.perf_counter()
    frames = dict(zip(chosen, compute_frames(feature_set, chosen, progress)))
    report(progress, Progress(f"k-means: {feature_set.name}", 0, 1, unit="fit"))
    kmeans = fit_kmeans(
        [frames[i] for i in fit.train], clusters, fit.seed, fit.max_fit_frames,
        meta={"features": feature_set.name, "description": feature_set.description,
              "layer": feature_set.layer, "dataset": str(corpus.path)},
    )
    report(progress, Progress(f"k-means: {feature_set.name}", 1, 1, unit="fit"))
    units = {i: kmeans.predict(f) for i, f in frames.items()}
    del frames
    row: dict[str, Any] = {"features": feature_set.name, "kmeans": kmeans.meta, "quality": {}, "abx": []}
    if dataset.has_frame_labels:
        rate, hop, timing = dataset.sample_rate, dataset.label_hop, feature_set.timing
        labels = {i: align_frame_labels(dataset.frame_labels(i), hop, rate, timing, len(u)) for i, u in units.items()}
        for split in ("train", "test"):
            mine = [i for i in chosen if dataset.splits[i] == split]
            if mine:
                row["quality"][split] = unit_quality([units[i] for i in mine], [labels[i] for i in mine], clusters)
    ids = [corpus.file_ids[i] for i in chosen]
    if fit.abx is not None:
        arrays, kept = slice_items(
            [one_hot(units[i], clusters) for i in chosen], ids, corpus.items, feature_set.centers,
            feature_set.hop_seconds, fit.abx.slicing,
        )
        row["abx"] = score_item_frames(arrays, corpus.items.select(kept), fit.abx, fit.seed, fit.device, progress,
                                       f"abx: {feature_set.name} units")
    row["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        write_units(Path(out) / feature_set.name, kmeans, ids, [units[i] for i in chosen])
    return row


def write_units(directory: Path, kmeans: KMeansUnits, ids: Sequence[str], units: Sequence[np.ndarray]) -> None:
    """The codebook, ``units.txt`` and ``units_dedup.txt`` of one feature set into ``directory``."""
    kmeans.save(directory)
    raw = [f"{i} {' '.join(map(str, u.tolist()))}" for i, u in zip(ids, units)]
    dedup = [f"{i} {' '.join(map(str, deduplicate(u)[0].tolist()))}" for i, u in zip(ids, units)]
    write_text(directory / "units.txt", "\n".join(raw) + "\n")
    write_text(directory / "units_dedup.txt", "\n".join(dedup) + "\n")


def units_table(result: dict[str, Any]) -> str:
    """Markdown: per feature set, PNMI / purities / segment lengths on test and the units' ABX error (%)."""
    rows = result["results"]
    modes = list(dict.fromkeys((r["speaker_mode"], r["context_mode"]) for row in rows for r in row["abx"]))
    header = ["features", "PNMI", "phone purity", "cluster purity", "unit seg. (frames)", "phone seg. (frames)"]
    header += [f"ABX {s} spk / {c} ctx" for s, c in modes]
    lines = [
        f"k-means units (K = {result['clusters']}, fitted on train) of {result['dataset']['path']}: unit quality "
        "on the test split, ABX error (%) of the one-hot units on every utterance.",
        "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in rows:
        quality = row["quality"].get("test") or row["quality"].get("train") or {}
        number = lambda key, fmt: format(quality[key], fmt) if key in quality else "n/a"  # noqa: E731
        cells = [row["features"], number("pnmi", ".3f"), number("phone_purity", ".3f"), number("cluster_purity", ".3f"),
                 number("unit_segment_length", ".2f"), number("phone_segment_length", ".2f")]
        for mode in modes:
            match = [r for r in row["abx"] if (r["speaker_mode"], r["context_mode"]) == mode]
            cells.append(error_text(match[0]["error"]) if match else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pnmi_figure(result: dict[str, Any]) -> Any:
    """Bars of the test-split PNMI of every feature set."""
    from matplotlib.figure import Figure

    names = [row["features"] for row in result["results"]]
    values = [(row["quality"].get("test") or {}).get("pnmi", np.nan) for row in result["results"]]
    figure = Figure(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4))
    axes = figure.add_subplot(1, 1, 1)
    bars = axes.bar(np.arange(len(names)), values, color="tab:blue")
    axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(np.arange(len(names)), names)
    axes.set_ylabel("PNMI (test)")
    axes.set_title(f"k-means units, K = {result['clusters']}")
    figure.tight_layout()
    return figure


def write_units_report(result: dict[str, Any], out: Path) -> None:
    """``results.json``, ``results.md`` and ``pnmi.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_text(out / "results.md", units_table(result))
    save_figure(pnmi_figure(result), out / "pnmi.png")
