"""Checks of :func:`cpcaudio.data.prepare` made on the listing, before any audio is decoded: names that
are not UTF-8, utterance ids that occur twice, and whether the dataset fits on the output disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpcaudio.data.audio import audio_info, display_path, is_utf8_name
from cpcaudio.data.decode import DecodeSettings
from cpcaudio.data.sources import SourcePlan, UtteranceItem
from cpcaudio.errors import DataError
from cpcaudio.geometry import ceil_div
from cpcaudio.resources import check_disk_space, checks_skipped


def handle_failure(on_error: str, skipped: list[dict[str, str]], origin: str, problem: str) -> None:
    if on_error == "fail":
        raise DataError(f"{problem} (use --on-error skip to leave such files out)")
    skipped.append({"file": display_path(origin), "problem": problem})


def check_names(items: list[UtteranceItem], on_error: str, skipped: list[dict[str, str]]) -> list[UtteranceItem]:
    """Leave out (or refuse) files whose name is not UTF-8 and utterance ids that occur twice."""
    kept: list[UtteranceItem] = []
    first_origin: dict[str, str] = {}
    for item in items:
        origin = display_path(item.origin)
        if not all(is_utf8_name(text) for text in (item.utterance_id, item.speaker)):  # both are stored as text
            handle_failure(
                on_error, skipped, item.origin,
                f"{origin}: the file name is not valid UTF-8; rename it (e.g. with convmv -f latin1 -t utf8)",
            )
            continue
        if item.utterance_id in first_origin:
            handle_failure(
                on_error, skipped, item.origin,
                f"{origin}: utterance id {item.utterance_id!r} is also the id of {first_origin[item.utterance_id]}; "
                "ids must be unique, rename or remove one of the two",
            )
            continue
        first_origin[item.utterance_id] = origin
        kept.append(item)
    return kept


def check_disk(out: Path, items: list[UtteranceItem], settings: DecodeSettings, plan: SourcePlan) -> None:
    """Refuse to start when the dataset's arrays cannot fit on the output disk (sizes from file headers)."""
    if checks_skipped():
        return
    itemsize = 2 if settings.signal_kind == "audio" else 4
    needed = 0
    for item in items:
        if item.array is not None:
            samples = int(np.asarray(item.array).shape[-1])
        else:
            try:
                rate, _, frames = audio_info(item.audio_path)
            except DataError:
                continue  # reported when the file is read
            target = settings.target_rate or rate
            samples = ceil_div(frames * target, rate)
        needed += samples * settings.num_channels * itemsize + 128  # + one index row
        if plan.has_frame_labels:
            needed += 2 * ceil_div(samples, settings.label_hop)
    check_disk_space(out, needed, "the prepared dataset", "free some space or choose another output directory")
