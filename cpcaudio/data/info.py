"""A summary of a prepared dataset: duration, utterances, speakers, splits, label sets with counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from cpcaudio.data.dataset import PreparedDataset


def dataset_summary(dataset: PreparedDataset) -> dict[str, Any]:
    """Describe a prepared dataset as a JSON-ready dict.

    Returns:
        ``path``, ``source``, ``signal_kind``, ``sample_rate``, ``num_channels``, ``label_hop``, ``hours``,
        ``utterances``, ``speakers``, ``splits`` (per split: utterances, speakers, hours),
        ``frame_labels`` (symbol -> frame count, plus ``unlabelled``; ``None`` without frame labels),
        ``utterance_labels`` (name -> value -> utterances) and the preparation ``counts``.
    """
    rate = dataset.sample_rate
    splits: dict[str, dict[str, Any]] = {}
    for split in sorted(set(dataset.splits)):
        members = dataset.indices(split)
        splits[split] = {
            "utterances": int(members.size),
            "speakers": int(np.unique(dataset.speaker_indices[members]).size),
            "hours": float(dataset.lengths[members].sum() / rate / 3600.0),
        }
    frame_labels = None
    stored = dataset.all_frame_labels()
    if stored is not None:
        vocabulary = dataset.phone_vocabulary or []
        counts = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        chunk = 1 << 22
        for start in range(0, stored.shape[0], chunk):
            counts += np.bincount(np.asarray(stored[start : start + chunk], dtype=np.int64) + 1, minlength=counts.size)
        frame_labels = {
            "name": dataset.meta.get("frame_label_name") or "phone",
            "symbols": len(vocabulary),
            "counts": {symbol: int(counts[i + 1]) for i, symbol in enumerate(vocabulary)},
            "unlabelled": int(counts[0]),
        }
    utterance_labels = {}
    for name in dataset.utterance_label_names:
        vocabulary = dataset.vocabularies.get(name, [])
        ids = dataset.utterance_labels(name)
        counts = np.bincount(ids[ids >= 0], minlength=len(vocabulary))
        utterance_labels[name] = {value: int(counts[i]) for i, value in enumerate(vocabulary)}
    return {
        "path": str(dataset.path),
        "source": dataset.meta.get("source", {}).get("kind"),
        "signal_kind": dataset.meta.get("signal_kind", "audio"),
        "sample_rate": rate,
        "num_channels": dataset.num_channels,
        "label_hop": dataset.label_hop,
        "hours": dataset.hours,
        "total_samples": dataset.total_samples,
        "utterances": len(dataset),
        "speakers": len(dataset.speaker_vocabulary),
        "splits": splits,
        "split_rule": dataset.meta.get("split_rule", ""),
        "frame_labels": frame_labels,
        "utterance_labels": utterance_labels,
        "counts": dataset.meta.get("counts", {}),
        "command": dataset.meta.get("command"),
    }


def format_summary(summary: dict[str, Any], max_symbols: int = 80) -> str:
    """Human-readable lines for :func:`dataset_summary`'s result."""
    audio = summary["signal_kind"] == "audio"
    if audio:
        size = f"{summary['hours']:.3f} h ({summary['hours'] * 60:.1f} min)"
        rate = f"{summary['sample_rate']} Hz"
    else:
        size = f"{summary['total_samples']} time steps"
        rate = f"{summary['sample_rate']} steps/s (declared)"
    lines = [
        f"dataset      {summary['path']}",
        f"source       {summary['source']}",
        f"signal       {summary['signal_kind']}, {rate}, {summary['num_channels']} channel(s)",
        f"size         {size}, {summary['utterances']} utterances, {summary['speakers']} speakers",
    ]
    for split, values in summary["splits"].items():
        amount = f"{values['hours'] * 60:.1f} min" if audio else f"{values['utterances']} series"
        lines.append(
            f"split {split:<6} {values['utterances']} utterances, {values['speakers']} speakers, {amount}"
        )
    if summary.get("split_rule"):
        lines.append(f"split rule   {summary['split_rule']}")
    frame = summary.get("frame_labels")
    if frame:
        lines.append(
            f"frame labels {frame['name']}: {frame['symbols']} symbols, one per {summary['label_hop']} samples, "
            f"{frame['unlabelled']} unlabelled frames"
        )
        ranked = sorted(frame["counts"].items(), key=lambda kv: (-kv[1], kv[0]))[:max_symbols]
        lines.append("             " + " ".join(f"{symbol}:{count}" for symbol, count in ranked))
    for name, counts in summary["utterance_labels"].items():
        lines.append(f"label {name:<6} {len(counts)} values: " + " ".join(f"{k}:{v}" for k, v in counts.items()))
    shown_above = ("utterances", "speakers", "total_samples", "hours")
    counts = {k: v for k, v in summary.get("counts", {}).items() if k not in shown_above}
    if counts:
        lines.append("preparation  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)
