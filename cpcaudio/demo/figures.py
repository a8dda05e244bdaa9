"""The demo report's figures, drawn on matplotlib's Agg canvas (PNG files, no display needed).

:func:`training_curves` (loss and per-step accuracy over training steps), :func:`accuracy_bars` (probe
accuracy of the model next to its baselines), :func:`abx_pnmi_bars` (ABX error and the PNMI of k-means
units, model and baselines) and :func:`utterance_map` (a PCA map of utterance embeddings coloured by
speaker).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.report.html import save_figure

PathLike = Union[str, Path]
FEATURE_COLORS = {"model": "tab:red", "random": "tab:gray", "mfcc": "tab:blue", "logmel": "tab:green"}


def training_curves(metrics: Sequence[dict[str, Any]], path: PathLike) -> Path:
    """Loss and per-step prediction accuracy over training steps, from a run's ``metrics.jsonl`` records.

    Args:
        metrics: records of :func:`cpcaudio.train.read_metrics` (``kind`` ``train`` or ``valid``, ``step``,
            ``loss``, ``accuracy`` per prediction step k = 1..K).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    train = [m for m in metrics if m.get("kind") == "train"]
    valid = [m for m in metrics if m.get("kind") == "valid"]
    figure = Figure(figsize=(10.0, 3.6))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    if train:
        loss_axes.plot([m["step"] for m in train], [m["loss"] for m in train], color="tab:blue", label="train")
    if valid:
        loss_axes.plot([m["step"] for m in valid], [m["loss"] for m in valid], "o", color="tab:orange",
                       label="validation")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("InfoNCE loss")
    loss_axes.set_title("loss", fontsize=10)
    loss_axes.legend(fontsize=8)
    records = train or valid
    num_steps = len(records[0]["accuracy"]) if records else 0
    shown = sorted({1, (num_steps + 1) // 2, num_steps} - {0})
    colors = ["tab:green", "tab:purple", "tab:red"]
    for color, k in zip(colors, shown):
        if train:
            accuracy_axes.plot([m["step"] for m in train], [100 * m["accuracy"][k - 1] for m in train], color=color,
                               label=f"k = {k} (train)")
        if valid:
            accuracy_axes.plot([m["step"] for m in valid], [100 * m["accuracy"][k - 1] for m in valid], "o",
                               color=color, markersize=4, label=f"k = {k} (validation)")
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("prediction accuracy (%)")
    accuracy_axes.set_title("accuracy of predicting z(t+k) among the negatives", fontsize=10)
    accuracy_axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return save_figure(figure, path)


def accuracy_bars(
    accuracy: dict[str, dict[str, float]], names: dict[str, str], chance: dict[str, float], path: PathLike,
    repeated: Collection[tuple[str, str]] = (),
) -> Path:
    """Grouped bars of probe test accuracy: one group per task/protocol, one bar per feature kind.

    Args:
        accuracy: ``{"phone/frame": {"model": 0.5, "mfcc": 0.6, ...}, ...}`` in [0, 1].
        names: display name per feature kind, in the order of the bars.
        chance: majority-class accuracy per task/protocol (a dashed line).
        path: the PNG to write.
        repeated: ``(task/protocol, feature kind)`` bars that repeat another protocol's fit on the same
            samples (``speaker/window-mean`` of MFCC and log-mel); drawn hatched.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    columns = list(accuracy)
    kinds = [kind for kind in names if any(kind in accuracy[c] for c in columns)]
    figure = Figure(figsize=(max(5.0, 2.2 * len(columns) + 2.0), 3.8))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(kinds))
    for index, kind in enumerate(kinds):
        values = [100 * accuracy[c].get(kind, math.nan) for c in columns]
        positions = [p + (index - (len(kinds) - 1) / 2) * width for p in range(len(columns))]
        bars = axes.bar(positions, values, width, label=names[kind], color=FEATURE_COLORS.get(kind))
        for bar, column in zip(bars, columns):
            if (column, kind) in repeated:
                bar.set_hatch("//")
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    for position, column in enumerate(columns):
        if column in chance:
            axes.hlines(100 * chance[column], position - 0.45, position + 0.45, colors="black",
                        linestyles="dashed", linewidth=1)
    axes.set_xticks(range(len(columns)), [c.replace("/", "\n") for c in columns])
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 108)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    hatched = "; hatched: the same fit as another column" if repeated else ""
    axes.set_title(f"linear probes: CPC vs baselines (dashed: majority class{hatched})", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def abx_pnmi_bars(
    abx: dict[str, dict[str, float]], pnmi: dict[str, float], names: dict[str, str], clusters: int, path: PathLike,
    items: str = "every utterance",
) -> Path:
    """ABX error per mode (left) and PNMI of the k-means units (right), one bar per feature kind.

    Args:
        abx: ``{"within spk / within ctx": {"model": 0.12, "mfcc": 0.15, ...}, ...}`` errors in [0, 1].
        pnmi: ``{"model": 0.3, ...}`` test-split PNMI in [0, 1].
        names: display name per feature kind, in the order of the bars.
        clusters: K of the k-means (for the title).
        path: the PNG to write.
        items: what the ABX items are (for the title).

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    columns = list(abx)
    kinds = [kind for kind in names if kind in pnmi or any(kind in abx[c] for c in columns)]
    figure = Figure(figsize=(max(8.0, 1.6 * len(columns) + 5.0), 3.8))
    error_axes, pnmi_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [max(2, len(columns)), 1.4]})
    width = 0.8 / max(1, len(kinds))
    highest = 50.0
    for index, kind in enumerate(kinds):
        values = [100 * abx[c].get(kind, math.nan) for c in columns]
        highest = max([highest, *[v for v in values if math.isfinite(v)]])
        positions = [p + (index - (len(kinds) - 1) / 2) * width for p in range(len(columns))]
        bars = error_axes.bar(positions, values, width, label=names[kind], color=FEATURE_COLORS.get(kind))
        error_axes.bar_label(bars, fmt="%.1f", fontsize=6)
    error_axes.axhline(50, color="black", linestyle="dashed", linewidth=1)
    error_axes.set_xticks(range(len(columns)), [c.replace(" / ", "\n") for c in columns], fontsize=8)
    error_axes.set_ylabel("ABX error (%, lower is better)")
    error_axes.set_ylim(0, highest + 14)  # room for the legend above the chance line
    error_axes.set_title(f"ABX on the phones of {items} (dashed: chance)", fontsize=10)
    error_axes.legend(fontsize=7, loc="upper center", ncol=len(kinds))
    values = [pnmi.get(kind, math.nan) for kind in kinds]
    bars = pnmi_axes.bar(range(len(kinds)), values, color=[FEATURE_COLORS.get(kind) for kind in kinds])
    pnmi_axes.bar_label(bars, fmt="%.2f", fontsize=7)
    pnmi_axes.set_xticks(range(len(kinds)), [names[kind] for kind in kinds], rotation=30, ha="right", fontsize=8)
    pnmi_axes.set_ylabel("PNMI (higher is better)")
    pnmi_axes.set_ylim(0, 1.2 * max([0.1, *[v for v in values if math.isfinite(v)]]))
    pnmi_axes.set_title(f"k-means units, K = {clusters}", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def utterance_map(
    store: Any, path: PathLike, max_utterances: int = 2000, seed: int = 0
) -> tuple[Path, Optional[float]]:
    """PCA map of utterance embeddings (features averaged over time), coloured by speaker.

    Args:
        store: a :class:`cpcaudio.extract.FeatureStore`.
        path: the PNG to write.
        max_utterances: at most this many utterances are drawn (a seeded subset).
        seed: seed of that subset.

    Returns:
        (``path``, silhouette score of the speakers on the standardised embeddings, or None when it is
        undefined: fewer than 2 speakers, or as many speakers as utterances).
    """
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    count = len(store)
    chosen = np.arange(count)
    if count > max_utterances:
        chosen = np.sort(np.random.default_rng(seed).choice(count, size=max_utterances, replace=False))
    keep = [int(i) for i in chosen if store.frame_lengths[int(i)] > 0]
    embeddings = np.stack([np.asarray(store.features(i), dtype=np.float64).mean(axis=0) for i in keep])
    embeddings = StandardScaler().fit_transform(embeddings)
    speakers = [store.speakers[i] for i in keep]
    names = sorted(set(speakers))
    labels = np.array([names.index(s) for s in speakers])
    silhouette = None
    if 2 <= len(names) < len(keep):
        silhouette = float(silhouette_score(embeddings, labels))
    points = PCA(n_components=2, random_state=seed).fit_transform(embeddings) if embeddings.shape[1] >= 2 else \
        np.pad(embeddings, ((0, 0), (0, 2 - embeddings.shape[1])))
    figure = Figure(figsize=(7.5, 5.5))
    axes = figure.add_subplot(1, 1, 1)
    colormap = _speaker_colors(len(names))
    test = np.array([store.splits[i] == "test" for i in keep])
    for index, name in enumerate(names):
        mine = labels == index
        axes.scatter(points[mine & ~test, 0], points[mine & ~test, 1], s=14, color=colormap[index], label=name)
        axes.scatter(points[mine & test, 0], points[mine & test, 1], s=22, color=colormap[index], marker="x")
    axes.set_xlabel("principal component 1")
    axes.set_ylabel("principal component 2")
    title = "utterance embeddings (mean CPC context), coloured by speaker"
    axes.set_title(title if silhouette is None else f"{title}\nsilhouette {silhouette:.2f}", fontsize=10)
    if len(names) <= 30:
        axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), ncol=1 if len(names) <= 16 else 2)
    figure.tight_layout()
    return save_figure(figure, path), silhouette


def _speaker_colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= 10:
        palette = colormaps["tab10"]
        return [palette(i) for i in range(count)]
    if count <= 20:
        palette = colormaps["tab20"]
        return [palette(i) for i in range(count)]
    palette = colormaps["hsv"]
    return [palette(i / count) for i in range(count)]
