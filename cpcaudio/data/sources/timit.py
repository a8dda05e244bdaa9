"""``timit``: the TIMIT corpus, full or NLTK sample, with its hand-labelled phones.

Layouts recognised (names case-insensitive, any folders above them):

- full corpus: ``TRAIN/DR1/FVMH0/SA1.WAV`` + ``SA1.PHN`` (NIST SPHERE or RIFF WAV, both read by
  libsndfile; converted copies named ``SA1.WAV.wav`` are accepted, one file per sentence is used);
- NLTK sample: ``dr1-fvmh0/sa1.wav`` + ``sa1.phn``.

``.phn`` files give ``start_sample end_sample phone`` at 16 kHz with the 61 TIMIT symbols; any other
symbol is an error naming the file. ``fold_39`` stores Lee & Hon's 39 classes instead (see
:mod:`cpcaudio.data.phones`; ``q`` frames get no label).

Utterance ids are ``<speaker>_<sentence>`` (``fvmh0_sa1``); utterance labels ``dialect`` (``dr1``) and
``gender`` (``f``/``m``, the first letter of the speaker id) are stored.

Splits (``split``):

- ``official`` (default for the full corpus): ``TRAIN`` -> train, ``TEST`` -> test (disjoint speakers);
- ``within-speaker`` (default for the NLTK sample, which has no official split): the hold-out rule of
  :mod:`cpcaudio.data.splits`, i.e. at the default ``test_fraction=0.2`` two of each speaker's ten
  sentences are test, chosen by a hash of the utterance id. Speaker probes need this split.

Or split lists (``split_lists``, ``--split-list NAME=FILE``, repeatable, instead of ``split``): files of
utterance ids (``fvmh0_sa1``), one per line; a listed utterance takes the list's split, unlisted ones go
to ``train`` and are counted as ``not_in_split_lists`` (e.g. a speaker-disjoint split of the NLTK sample:
``test=`` the dr4 utterances).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from cpcaudio.data.labels import read_id_list
from cpcaudio.data.phones import timit_vocabulary
from cpcaudio.data.sources.base import LabelSource, SourcePlan, UtteranceItem, assign_missing_splits, find_audio_files
from cpcaudio.data.sources.librispeech import parse_split_lists
from cpcaudio.data.sources.spec import TEST_FRACTION, SourceKind, SourceOption
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION, SPLIT_NAMES
from cpcaudio.errors import DataError, UsageError

_NLTK_FOLDER = re.compile(r"^(?P<dialect>dr\d)-(?P<speaker>[a-z]{4}\d)$", re.IGNORECASE)
_DIALECT = re.compile(r"^dr\d$", re.IGNORECASE)
SPLIT_RULES = ("official", "within-speaker")

SUMMARY = "TIMIT, full corpus or NLTK sample, with its hand-labelled phones"
OPTIONS: tuple[SourceOption, ...] = (
    SourceOption("fold_39", bool, False, "Fold the 61 phones into Lee & Hon's 39 classes."),
    SourceOption(
        "split", str, None,
        "official or within-speaker (default: official when the corpus has TRAIN/TEST folders).",
    ),
    SourceOption(
        "split_lists", str, None,
        "NAME=FILE, one utterance id (fvmh0_sa1) per line; repeatable; unlisted utterances go to train "
        "(instead of --split).",
        flag="--split-list", multiple=True, parse=parse_split_lists,
    ),
    TEST_FRACTION,
)
"""The options of :func:`discover` that users set (``cpcaudio prepare --help``)."""


def discover(
    src: Path,
    *,
    fold_39: bool = False,
    split: Optional[str] = None,
    split_lists: Optional[dict[str, Path]] = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SourcePlan:
    """List TIMIT utterances with their ``.phn`` labels.

    Args:
        src: the corpus root (holding ``TRAIN``/``TEST``, or the NLTK ``drN-speaker`` folders).
        fold_39: store the 39 folded classes instead of the 61 symbols.
        split: ``official`` or ``within-speaker`` (default: official when the layout has TRAIN/TEST).
        split_lists: instead of ``split``: split name (``train``/``valid``/``test``) -> file of utterance
            ids; unlisted utterances go to train.
        test_fraction: for ``within-speaker``: share of each speaker's sentences held out.

    Returns:
        The plan with frame labels (``phone`` vocabulary of 61 or 39 symbols).
    """
    if split is not None and split not in SPLIT_RULES:
        raise UsageError(f"TIMIT split {split!r} is not one of {', '.join(SPLIT_RULES)}")
    if split is not None and split_lists:
        raise UsageError("give either a TIMIT split rule (--split) or split lists (--split-list), not both")
    listed = _read_split_lists(split_lists or {})
    src = Path(src)
    vocabulary, symbol_map = timit_vocabulary(fold_39)
    plan = SourcePlan(
        kind="timit",
        items=[],
        has_frame_labels=True,
        phone_vocabulary=vocabulary,
        symbol_map=symbol_map,
        utterance_label_names=("dialect", "gender"),
        source={"fold_39": fold_39},
    )
    seen: set[str] = set()
    has_official = False
    without_labels = []
    for audio in find_audio_files(src, (".wav",), plan):
        parsed = _parse(audio)
        if parsed is None:
            plan.rejected.append((str(audio), "not in a TIMIT layout (TRAIN/DR1/FVMH0/SA1.WAV or dr1-fvmh0/sa1.wav)"))
            continue
        corpus_split, dialect, speaker, sentence = parsed
        utterance_id = f"{speaker}_{sentence}"
        if utterance_id in seen:  # SA1.WAV and a converted SA1.WAV.wav: same sentence
            continue
        seen.add(utterance_id)
        has_official |= corpus_split is not None
        phn = _label_file(audio.parent, sentence)
        if phn is None:
            without_labels.append(utterance_id)
        plan.items.append(
            UtteranceItem(
                utterance_id=utterance_id,
                speaker=speaker,
                split=corpus_split or "",
                audio_path=audio,
                labels=LabelSource(path=phn, units="samples") if phn else None,
                utterance_labels={"dialect": dialect, "gender": speaker[0]},
            )
        )
    plan.unmatched["audio_without_labels"] = without_labels
    if split_lists:
        _apply_split_lists(plan, listed, split_lists, src)
        return plan
    rule = split or ("official" if has_official else "within-speaker")
    if rule == "official" and not has_official:
        raise UsageError(f"{src}: no TRAIN/TEST folders, so no official split; use split 'within-speaker'")
    if rule == "within-speaker":
        for item in plan.items:
            item.split = ""
    else:
        plan.split_rule = "official TIMIT split: TRAIN -> train, TEST -> test (disjoint speakers)"
    assign_missing_splits(plan, test_fraction)
    plan.source["split"] = rule
    return plan


def _read_split_lists(split_lists: dict[str, Path]) -> dict[str, str]:
    """``{utterance id: split}`` from split lists; refuses unknown split names and an id in two lists."""
    split_of: dict[str, str] = {}
    for name, path in split_lists.items():
        if name not in SPLIT_NAMES:
            raise UsageError(f"split list name {name!r} is not one of {', '.join(SPLIT_NAMES)}")
        for utterance_id in read_id_list(Path(path)):
            other = split_of.setdefault(utterance_id.lower(), name)
            if other != name:
                raise DataError(
                    f"{path}: utterance {utterance_id!r} is also in the {other} split list; an utterance may be "
                    "in one split only, remove it from one list"
                )
    return split_of


def _apply_split_lists(plan: SourcePlan, split_of: dict[str, str], split_lists: dict[str, Path], src: Path) -> None:
    """Give every item its listed split (unlisted: train, counted) and record the rule."""
    found = {item.utterance_id for item in plan.items}
    if found and not set(split_of) & found:
        raise DataError(
            f"the split lists ({', '.join(str(p) for p in split_lists.values())}) name none of the {len(found)} "
            f"utterances found in {src}; list TIMIT utterance ids such as fvmh0_sa1"
        )
    unlisted = []
    for item in plan.items:
        item.split = split_of.get(item.utterance_id, "")
        if not item.split:
            unlisted.append(item.utterance_id)
            item.split = "train"
    plan.unmatched["not_in_split_lists"] = unlisted
    plan.unmatched["listed_without_audio"] = sorted(set(split_of) - found)
    plan.split_rule = (
        "split lists " + ", ".join(f"{k}={Path(v).name}" for k, v in split_lists.items())
        + "; unlisted utterances -> train"
    )
    plan.source.update(split="lists", split_lists={k: str(v) for k, v in split_lists.items()})


def _parse(audio: Path) -> Optional[tuple[Optional[str], str, str, str]]:
    """``(official split or None, dialect, speaker, sentence)`` of a TIMIT audio file, lower case."""
    sentence = audio.name.split(".")[0].lower()
    folder = audio.parent
    nltk = _NLTK_FOLDER.match(folder.name)
    if nltk:
        return None, nltk["dialect"].lower(), nltk["speaker"].lower(), sentence
    if _DIALECT.match(folder.parent.name):
        corpus = folder.parent.parent.name.lower()
        official = {"train": "train", "test": "test"}.get(corpus)
        return official, folder.parent.name.lower(), folder.name.lower(), sentence
    return None


def _label_file(folder: Path, sentence: str) -> Optional[Path]:
    for name in (f"{sentence}.phn", f"{sentence.upper()}.PHN", f"{sentence}.PHN", f"{sentence.upper()}.phn"):
        if (folder / name).is_file():
            return folder / name
    return None


KIND = SourceKind("timit", discover, SUMMARY, OPTIONS)
