"""``uea``: UEA/UCR classification sets: multichannel, possibly variable-length time series.

``src`` is one of:

- the name of a set bundled with the PyPI package aeon (BasicMotions, JapaneseVowels, GunPoint,
  ArrowHead, OSULeaf, ACSF1, PickupGestureWiimoteZ, ItalyPowerDemand, ...), loaded offline with
  ``aeon.datasets.load_classification(name, split=...)``; names aeon would have to download are refused;
- a folder holding ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts``;
- a single ``.ts`` file (all series go to ``train``).

Series are stored as float32 ``(time, channels)``; the class is the utterance label ``class``; the
set's train/test split is kept. Trailing missing values (NaN padding of unequal-length series) are
trimmed; any other NaN is an error. UEA sets have no speakers: every series gets speaker ``none``. The
rate is unknown: ``sample_rate`` only declares it in ``meta.json`` (default 1); nothing is resampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cpcaudio.data.sources.base import SourcePlan, UtteranceItem
from cpcaudio.data.sources.spec import SourceKind
from cpcaudio.errors import DataError

NO_SPEAKER = "none"


def bundled_sets() -> list[str]:
    """Names of the classification sets that aeon ships (loadable without a download)."""
    root = _bundled_root()
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file()) if root else []

SUMMARY = "a UEA/UCR time-series set: a name bundled with aeon, a folder of .ts files or one .ts file"


def discover(src: str | Path, *, sample_rate: Optional[int] = None) -> SourcePlan:
    """Load a UEA/UCR set into memory and list its series.

    Args:
        src: bundled set name, folder with ``*_TRAIN.ts``/``*_TEST.ts``, or one ``.ts`` file.
        sample_rate: the series' rate to record (no resampling).

    Returns:
        The plan (time series, utterance label ``class``, no frame labels).
    """
    splits = _load(src)
    plan = SourcePlan(
        kind="uea",
        items=[],
        signal_kind="timeseries",
        utterance_label_names=("class",),
        sample_rate=sample_rate or 1,
        source={"set": str(src)},
        split_rule="the set's own train/test split",
    )
    for split, (series, classes) in splits.items():
        for number, (values, label) in enumerate(zip(series, classes)):
            array = np.asarray(values, dtype=np.float32)
            if array.ndim == 1:
                array = array[None, :]
            plan.items.append(
                UtteranceItem(
                    utterance_id=f"{split}-{number:05d}",
                    speaker=NO_SPEAKER,
                    split=split,
                    array=array,
                    utterance_labels={"class": str(label)},
                )
            )
    return plan


def _bundled_root() -> Optional[Path]:
    try:
        import aeon.datasets
    except ImportError:
        return None
    root = Path(aeon.datasets.__file__).parent / "data"
    return root if root.is_dir() else None


def _load(src: str | Path) -> dict[str, tuple[list, np.ndarray]]:
    try:
        from aeon.datasets import load_classification, load_from_ts_file
    except ImportError:
        raise DataError("the uea kind needs the package aeon: pip install 'cpcaudio[timeseries]'") from None
    path = Path(src)
    if path.is_file():
        return {"train": _read_ts(path, load_from_ts_file)}
    if path.is_dir():
        train = sorted(path.glob("*_TRAIN.ts"))
        test = sorted(path.glob("*_TEST.ts"))
        if len(train) != 1 or len(test) != 1:
            raise DataError(f"{path}: expected one <Name>_TRAIN.ts and one <Name>_TEST.ts file")
        return {"train": _read_ts(train[0], load_from_ts_file), "test": _read_ts(test[0], load_from_ts_file)}
    name = str(src)
    root = _bundled_root()
    if root is None or not (root / name / f"{name}_TRAIN.ts").is_file():
        available = ", ".join(bundled_sets()) or "none"
        raise DataError(
            f"{name!r} is neither a .ts file, a folder of .ts files, nor a set bundled with aeon "
            f"(bundled: {available}); download the set's .ts files and pass their folder"
        )
    out = {}
    for split in ("train", "test"):
        series, classes = load_classification(name, split=split)
        out[split] = (list(series), np.asarray(classes))
    return out


def _read_ts(path: Path, load_from_ts_file) -> tuple[list, np.ndarray]:
    try:
        series, classes = load_from_ts_file(str(path))
    except Exception as error:  # aeon raises IOError/ValueError/TypeError on malformed files
        raise DataError(f"{path}: cannot read .ts file ({error})") from None
    if len(series) == 0:
        raise DataError(f"{path}: no series found; is it a .ts file (a @data section with one series per line)?")
    return list(series), np.asarray(classes)


KIND = SourceKind("uea", discover, SUMMARY, source="path-or-name", receives=("sample_rate",))
