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
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.abx.inputs import Corpus, FeatureSet, compute_frames, feature_sets
from cpcaudio.evaluate.abx.items import ItemList, items_from_dataset
from cpcaudio.evaluate.abx.report import error_text, save_figure, write_json, write_text
from cpcaudio.evaluate.abx.runner import item_summary, parse_modes, score_item_frames, slice_items
from cpcaudio.evaluate.abx.scoring import CONTEXT_MODES, SPEAKER_MODES
from cpcaudio.evaluate.units import KMeansUnits, deduplicate, fit_kmeans, one_hot, unit_quality
from cpcaudio.progress import Progress, ProgressCallback, report

REPORT_FORMAT = "cpcaudio-units"
REPORT_FORMAT_VERSION = 1
PathLike = Union[str, Path]


def _dataset_corpus(path: PathLike) -> Corpus:
    from cpcaudio.data import PreparedDataset

    path = Path(path)
    if not (path / "meta.json").is_file():
        raise DataError(f"{path}: not a prepared dataset; 'cpcaudio units' fits on a dataset's train split")
    dataset = PreparedDataset.open(path)
    if dataset.has_frame_labels and dataset.phone_vocabulary is not None:
        items = items_from_dataset(dataset)
    else:
        items = ItemList([], np.zeros(0), np.zeros(0), [], [], [], [])
    return Corpus("dataset", path, dataset, items, list(dataset.utterance_ids))


def run_units(
    dataset: PathLike,
    *,
    clusters: int = 50,
    checkpoint: Optional[PathLike] = None,
    features: Optional[PathLike] = None,
    model: Optional[torch.nn.Module] = None,
    layer: str = "context",
    baselines_requested: Optional[Union[str, Sequence[str]]] = None,
    max_fit_frames: Optional[int] = None,
    abx: bool = True,
    speaker_modes: Optional[Union[str, Sequence[str]]] = None,
    context_modes: Optional[Union[str, Sequence[str]]] = None,
    slicing: str = "center",
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    out: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """k-means units (``clusters`` of them) of each feature set, fitted on the train split.

    Args:
        dataset: a prepared dataset with a ``train`` split (phone labels optional).
        clusters: k-means clusters ``K``.
        checkpoint, features, model, layer, baselines_requested: the feature sets, as for
            :func:`cpcaudio.evaluate.abx.run_abx`.
        max_fit_frames: fit on at most this many train frames (seeded draw; None: all).
        abx: also score the one-hot units with ABX (needs phone labels).
        speaker_modes, context_modes, slicing: the ABX modes and item slicing.
        seed: seeds the random weights, the k-means and the ABX subsampling.
        device: where the models and the ABX DTW run.
        out: write the report and the codebooks there.
        progress: receives :class:`cpcaudio.progress.Progress` events.
        overwrite: replace a report already in ``out``.

    Returns:
        The report: per feature set its k-means record, ``quality`` per split (where there are phone
        labels) and ABX rows of the units.
    """
    from cpcaudio.devices import resolve_device

    if out is not None:
        from cpcaudio.resources import check_output_dir

        check_output_dir(Path(out), "report directory")
        if (Path(out) / "results.json").exists() and not overwrite:
            raise UsageError(f"{out} already holds a units report (results.json); pass --overwrite to replace it")
    if clusters < 2:
        raise UsageError(f"--clusters must be at least 2, got {clusters}")
    speakers = parse_modes(speaker_modes, SPEAKER_MODES, "speaker")
    contexts = parse_modes(context_modes, CONTEXT_MODES, "context")
    torch_device = resolve_device(device)
    corpus = _dataset_corpus(dataset)
    source = corpus.source
    train = [int(i) for i in source.indices("train")]
    if not train:
        raise DataError(f"dataset {corpus.path} has no 'train' utterances to fit k-means on")
    sets, record = feature_sets(
        corpus, checkpoint=checkpoint, features=features, model=model, layer=layer,
        baselines_requested=baselines_requested, seed=seed, device=torch_device,
    )
    rows = []
    for feature_set in sets:
        rows.append(
            _units_of(corpus, feature_set, train, clusters, seed, max_fit_frames, abx and len(corpus.items) > 0,
                      speakers, contexts, slicing, torch_device, out, progress)
        )
    result = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "dataset": {"path": str(corpus.path), "utterances": len(source), "train": len(train)},
        "items": item_summary(corpus.items),
        "clusters": clusters,
        "seed": seed,
        "model": {key: value for key, value in record.items() if key != "config"},
        "features": {s.name: s.description for s in sets},
        "results": rows,
    }
    if out is not None:
        write_units_report(result, Path(out))
    return result


def _units_of(
    corpus: Corpus, feature_set: FeatureSet, train: list[int], clusters: int, seed: int,
    max_fit_frames: Optional[int], abx: bool, speakers: Sequence[str], contexts: Sequence[str], slicing: str,
    device: torch.device, out: Optional[PathLike], progress: Optional[ProgressCallback],
) -> dict[str, Any]:
    """Fit, apply and measure the units of one feature set."""
    from cpcaudio.evaluate.timing import align_frame_labels

    dataset = corpus.source
    started = time.perf_counter()
    frames = compute_frames(feature_set, list(range(len(dataset))), progress)
    report(progress, Progress(f"k-means: {feature_set.name}", 0, 1, unit="fit"))
    kmeans = fit_kmeans(
        [frames[i] for i in train], clusters, seed, max_fit_frames,
        meta={"features": feature_set.name, "description": feature_set.description,
              "layer": feature_set.layer, "dataset": str(corpus.path)},
    )
    report(progress, Progress(f"k-means: {feature_set.name}", 1, 1, unit="fit"))
    units = [kmeans.predict(f) for f in frames]
    row: dict[str, Any] = {"features": feature_set.name, "kmeans": kmeans.meta, "quality": {}, "abx": []}
    if dataset.has_frame_labels:
        rate, hop, timing = dataset.sample_rate, dataset.label_hop, feature_set.timing
        labels = [align_frame_labels(dataset.frame_labels(i), hop, rate, timing, len(u)) for i, u in enumerate(units)]
        for split in ("train", "test"):
            chosen = [int(i) for i in dataset.indices(split)]
            if chosen:
                row["quality"][split] = unit_quality([units[i] for i in chosen], [labels[i] for i in chosen], clusters)
    if abx:
        arrays, kept = slice_items(
            [one_hot(u, clusters) for u in units], corpus.file_ids, corpus.items, feature_set.centers,
            feature_set.hop_seconds, slicing,
        )
        row["abx"] = score_item_frames(
            arrays, corpus.items.select(kept), speakers, contexts, seed=seed, device=device, progress=progress,
            stage=f"abx: {feature_set.name} units",
        )
    row["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        write_units(Path(out) / feature_set.name, kmeans, corpus.file_ids, units)
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
