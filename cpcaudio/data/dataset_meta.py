"""What ``meta.json`` says about a new dataset: format, signal, vocabularies, splits, source, counts."""

from __future__ import annotations

import time
from typing import Any, Optional

from cpcaudio.data.decode import DecodeSettings
from cpcaudio.data.format import FORMAT_VERSION
from cpcaudio.data.sources.base import SourcePlan, UtteranceItem


def _natural_key(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def dataset_meta(
    plan: SourcePlan,
    kept: list[UtteranceItem],
    settings: DecodeSettings,
    total_samples: int,
    num_skipped: int,
    preparation: dict[str, Any],
    phone_symbols: Optional[list[str]],
    source_path: Optional[str],
    command: str,
) -> dict:
    """``meta.json`` of a new dataset (see :mod:`cpcaudio.data.format`).

    Args:
        plan: the reader's plan.
        kept: the utterances written, in order.
        settings: the dataset's decode settings (rate, channels, label hop).
        total_samples: samples written (per channel).
        num_skipped: files left out.
        preparation: the options of ``prepare`` to record (``resampled_to``, ``mono``, ...).
        phone_symbols: the frame label vocabulary (index = id), or None without frame labels.
        source_path: the source corpus as recorded (resolved path, set name, or None when generated).
        command: the command line (or call) that made the dataset.
    """
    from cpcaudio import __version__

    speakers = sorted({item.speaker for item in kept})
    vocabularies: dict[str, Any] = {"speaker": speakers}
    for name in plan.utterance_label_names:
        values = {item.utterance_labels.get(name, "") for item in kept} - {""}
        vocabularies[name] = sorted(values, key=_natural_key)
    if phone_symbols is not None:
        vocabularies["phone"] = list(phone_symbols)
    splits: dict[str, int] = {}
    for item in kept:
        splits[item.split] = splits.get(item.split, 0) + 1
    counts = {
        "utterances": len(kept),
        "speakers": len(speakers),
        "total_samples": total_samples,
        "hours": total_samples / settings.dataset_rate / 3600.0,
        "skipped": num_skipped,
        **{name: len(values) for name, values in plan.unmatched.items()},
    }
    return {
        "format_version": FORMAT_VERSION,
        "signal_kind": settings.signal_kind,
        "sample_rate": settings.dataset_rate,
        "num_channels": settings.num_channels,
        "label_hop": settings.label_hop,
        "frame_label_name": "phone" if plan.has_frame_labels else None,
        "vocabularies": vocabularies,
        "utterance_labels": list(plan.utterance_label_names),
        "splits": dict(sorted(splits.items())),
        "split_rule": plan.split_rule,
        "source": {"kind": plan.kind, "options": plan.source, "path": source_path},
        "preparation": preparation,
        "counts": counts,
        "cpcaudio_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }
