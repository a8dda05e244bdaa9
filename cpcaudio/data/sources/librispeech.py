"""``librispeech``: the LibriSpeech layout ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``.

Frame labels come from the CPC paper's label file (``converted_aligned_phones.txt``: a line
``<utterance-id> <label> <label> ...`` per utterance, one integer per 10 ms, 41 classes, 0 = silence),
given as ``labels`` or found in ``src`` under that name or ``phone_labels.txt``. Those labels were made
by a Kaldi aligner with 25 ms frames every 10 ms, so an utterance has 1 or 2 labels fewer than 10 ms
frames; like CPC_audio we give label ``j`` to the 10 ms frame ``j`` and leave the missing end frames
unlabelled (-1).

Splits come from split lists (one utterance id per line): ``split_lists`` maps a split name to its
file; by default ``train_split.txt`` and ``test_split.txt`` in ``src`` are used when present.
Utterances listed nowhere go to ``train`` and are counted as ``not_in_split_lists``. Without any list
the within-speaker hold-out rule applies.

Utterances with labels but no audio are counted as ``labels_without_audio``, audio without labels as
``audio_without_labels`` (kept, unlabelled); both are listed in the dataset's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from cpcaudio.data.labels import read_frame_label_file, read_id_list
from cpcaudio.data.sources.base import LabelSource, SourcePlan, UtteranceItem, assign_missing_splits, find_audio_files
from cpcaudio.data.sources.spec import TEST_FRACTION, SourceKind, SourceOption
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION, SPLIT_NAMES
from cpcaudio.errors import DataError, UsageError

LABEL_FILE_NAMES = ("converted_aligned_phones.txt", "phone_labels.txt")
SPLIT_FILE_NAMES = {"train": "train_split.txt", "test": "test_split.txt"}
NUM_CLASSES = 41


def parse_split_lists(values: list[str]) -> dict[str, Path]:
    """``["train=train_split.txt", ...]`` (the repeated ``--split-list``) as ``{"train": Path(...)}``.

    Raises:
        UsageError: for a value that is not ``NAME=FILE``.
    """
    lists = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--split-list expects NAME=FILE (e.g. train=train_split.txt), got {value!r}")
        lists[name] = Path(path)
    return lists


SUMMARY = "LibriSpeech folders, with the CPC paper's frame labels and split lists"
OPTIONS: tuple[SourceOption, ...] = (
    SourceOption(
        "labels", Path, None,
        "The CPC frame label file (default: converted_aligned_phones.txt or phone_labels.txt in SRC).",
    ),
    SourceOption(
        "split_lists", str, None,
        "NAME=FILE, one utterance id per line; repeatable (default: train_split.txt, test_split.txt in SRC).",
        flag="--split-list", multiple=True, parse=parse_split_lists,
    ),
    SourceOption("num_classes", int, NUM_CLASSES, "Frame label classes (ids 0 .. N-1)."),
    TEST_FRACTION,
)
"""The options of :func:`discover` that users set (``cpcaudio prepare --help``)."""


def discover(
    src: Path,
    *,
    labels: Optional[Path] = None,
    split_lists: Optional[dict[str, Path]] = None,
    num_classes: int = NUM_CLASSES,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SourcePlan:
    """List LibriSpeech utterances, their CPC frame labels and splits.

    Args:
        src: folder holding the speaker folders (or any folder above them).
        labels: the CPC frame label file (default: looked up in ``src``).
        split_lists: split name (``train``/``valid``/``test``) -> id list file (default: looked up).
        num_classes: number of label classes (ids ``0 .. num_classes - 1``).
        test_fraction: within-speaker hold-out share when there are no split lists.

    Returns:
        The plan; ``phone`` vocabulary ``"0" .. str(num_classes - 1)`` when labels are used.
    """
    src = Path(src)
    if labels is None:
        labels = next((src / n for n in LABEL_FILE_NAMES if (src / n).is_file()), None)
    if split_lists is None:
        split_lists = {s: src / n for s, n in SPLIT_FILE_NAMES.items() if (src / n).is_file()}
    for name in split_lists:
        if name not in SPLIT_NAMES:
            raise UsageError(f"split list name {name!r} is not one of {', '.join(SPLIT_NAMES)}")
    frame_labels = read_frame_label_file(Path(labels)) if labels is not None else {}
    split_of: dict[str, str] = {}
    for name, path in split_lists.items():
        for utterance_id in read_id_list(Path(path)):
            other = split_of.setdefault(utterance_id, name)
            if other != name:
                raise DataError(
                    f"{path}: utterance {utterance_id!r} is also in the {other} split list "
                    f"({split_lists[other]}); an utterance may be in one split only, remove it from one list"
                )
    plan = SourcePlan(
        kind="librispeech",
        items=[],
        has_frame_labels=labels is not None,
        phone_vocabulary=[str(i) for i in range(num_classes)] if labels is not None else None,
        source={
            "labels": str(labels) if labels else None,
            "split_lists": {k: str(v) for k, v in split_lists.items()},
            "num_classes": num_classes,
        },
    )
    audio_ids: dict[str, Path] = {}
    without_labels, unlisted = [], []
    for audio in find_audio_files(src, (".flac", ".wav"), plan):
        utterance_id = audio.name.split(".")[0]
        if utterance_id in audio_ids and audio_ids[utterance_id].parent == audio.parent:
            continue  # the same utterance in another format beside it (x.flac and x.wav): keep the first
        audio_ids.setdefault(utterance_id, audio)  # one in another folder: prepare refuses the duplicate id
        label_source = None
        if utterance_id in frame_labels:
            label_source = LabelSource(frames=frame_labels[utterance_id])
        elif labels is not None:
            without_labels.append(utterance_id)
        split = split_of.get(utterance_id, "")
        if split_lists and not split:
            unlisted.append(utterance_id)
            split = "train"
        plan.items.append(
            UtteranceItem(
                utterance_id=utterance_id,
                speaker=utterance_id.split("-")[0],
                split=split,
                audio_path=audio,
                labels=label_source,
            )
        )
    if labels is not None:
        plan.unmatched["labels_without_audio"] = sorted(set(frame_labels) - set(audio_ids))
        plan.unmatched["audio_without_labels"] = without_labels
    if split_lists and audio_ids and not set(split_of) & set(audio_ids):
        raise DataError(
            f"the split lists ({', '.join(str(p) for p in split_lists.values())}) name none of the "
            f"{len(audio_ids)} utterances found in {src}; give the lists that belong to this corpus"
        )
    if split_lists:
        plan.unmatched["not_in_split_lists"] = unlisted
        plan.unmatched["listed_without_audio"] = sorted(set(split_of) - set(audio_ids))
        plan.split_rule = (
            "split lists " + ", ".join(f"{k}={Path(v).name}" for k, v in split_lists.items())
            + "; unlisted utterances -> train"
        )
    assign_missing_splits(plan, test_fraction)
    return plan


KIND = SourceKind("librispeech", discover, SUMMARY, OPTIONS)
